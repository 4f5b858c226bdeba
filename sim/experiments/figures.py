"""Plots built from a results folder's files only: per run, and across a sweep (one colour per policy and mode)."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from sim.figsave import save_figure

# One colour per eviction policy and per serving mode, in every figure (the two sets never share a colour).
POLICY_COLOURS = {"fifo": "#1f77b4", "lru": "#ff7f0e", "lfu": "#2ca02c", "lcbfu": "#d62728",
                  "belady": "#8c564b", "lcbfu_prompt": "#e377c2"}
MODE_COLOURS = {"vanilla": "#4d4d4d", "nirvana": "#9467bd", "final_image": "#17becf", "small_model": "#bcbd22"}
_SPARE = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
POLICY_NAMES = {"fifo": "FIFO", "lru": "LRU", "lfu": "LFU", "lcbfu": "LCBFU"}
MODE_NAMES = {"vanilla": "vanilla (no cache)", "nirvana": "NIRVANA", "final_image": "final-image cache",
              "small_model": "small model"}
MODE_STYLES = ("-", "--", ":", "-.")


def colour(kind: str, name: str) -> str:
    """The fixed colour of a policy or mode; an unlisted name gets a stable spare colour (crc32 of its name)."""
    table = POLICY_COLOURS if kind == "policy" else MODE_COLOURS
    return table.get(name) or _SPARE[zlib.crc32(f"{kind}:{name}".encode()) % len(_SPARE)]


def series_label(kind: str, name: str) -> str:
    return (POLICY_NAMES if kind == "policy" else MODE_NAMES).get(name, name)


def save(fig: Figure, stem: Path, formats: tuple[str, ...] = ("png",)) -> None:
    save_figure(fig, stem, formats)


# ---- one run


def latency_cdf(requests: pd.DataFrame, path: Path) -> bool:
    lat = np.sort(requests["latency_s"].dropna().to_numpy()) if "latency_s" in requests else np.array([])
    if not len(lat):
        return False  # no clock (sequential executor): nothing to draw
    fig, ax = plt.subplots(figsize=(5, 3.5))
    lat = np.sort(requests["latency_s"].to_numpy())
    lat = lat[np.isfinite(lat)]
    if len(lat):
        ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat))
    else:
        ax.text(0.5, 0.5, "no latencies: untimed run (sequential executor)", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("end-to-end latency (s)")
    ax.set_ylabel("fraction of requests")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save(fig, path.with_suffix(""))
    return True


def k_histogram(summary: dict[str, Any], path: Path) -> None:
    hist = summary["k_histogram"]
    labels = ["miss" if k == "0" else f"K={k}" for k in hist]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(labels, [hist[k] / max(summary["requests"], 1) for k in hist])
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"compute saved {summary['compute_saved']:.3f}")
    fig.tight_layout()
    save(fig, path.with_suffix(""))


def _binned_hit_rate(t: np.ndarray, hit: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    edges = np.linspace(t.min(), t.max() + 1e-9, bins + 1)
    which = np.clip(np.digitize(t, edges) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    rate = np.divide(np.bincount(which, hit, minlength=bins), count, out=np.full(bins, np.nan), where=count > 0)
    return (edges[:-1] + edges[1:]) / 2 / 3600, rate


def hit_rate_over_time(requests: pd.DataFrame, path: Path, bins: int = 40) -> None:
    centers, rate = _binned_hit_rate(requests["arrival_s"].to_numpy(),
                                     (requests["k_used"].to_numpy() > 0).astype(float), bins)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(centers, rate, marker=".")
    ax.set_xlabel("arrival time (h)")
    ax.set_ylabel("hit rate (fraction of requests)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save(fig, path.with_suffix(""))


def compare_runs(table: pd.DataFrame, swept: list[str], path: Path) -> None:
    """Compute saved and hit rate per run; with a numeric swept key, lines over it per other value."""
    numeric = [k for k in swept if pd.api.types.is_numeric_dtype(table[k]) and table[k].notna().all()]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("compute_saved", "hit_rate"), strict=True):
        if numeric:
            x = numeric[-1]
            others = [k for k in swept if k != x]
            groups = table.groupby(others, sort=False, dropna=False) if others else [((), table)]
            for key, group in groups:
                values = key if isinstance(key, tuple) else (key,)
                label = ", ".join(f"{k}={v}" for k, v in zip(others, values, strict=True))
                g = group.sort_values(x)
                ax.plot(g[x], g[metric], marker="o", label=label or None)
            ax.set_xlabel(x)
            _log_if_wide(ax, table[x])
            if others:
                ax.legend(fontsize=7)
        else:
            labels = table["run"].tolist()
            ax.bar(range(len(labels)), table[metric])
            ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save(fig, path.with_suffix(""))


def _log_axis(ax: Any, x: pd.Series) -> None:
    """Log x axis labelled at the swept values themselves (150, 1500, ...), not at powers of ten."""
    ticks = sorted(x.dropna().unique())
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks])


def _log_if_wide(ax: Any, x: pd.Series) -> None:
    ticks = sorted(x.unique())
    if (x > 0).all() and x.max() / max(x.min(), 1e-12) >= 10:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks])


# ---- across a sweep. Each takes the report's facts table (one row per run: run, policy, mode, capacity,
# capacity_unit, offered_load, p99_s, hit_rate, compute_saved, quality, k_histogram, a `series` kind:name and
# the other swept values as text, `capacity_variant` and `load_variant`), draws into the stem's PNG and PDF,
# and returns None, or why it cannot be drawn from this folder.
FORMATS = ("png", "pdf")


def _series(facts: pd.DataFrame) -> list[tuple[str, str, str, str, pd.DataFrame]]:
    """(label, colour, line style, kind:name, rows) per series, in first-seen order."""
    out = []
    modes = [m for m in facts["mode"].unique() if m != "vanilla"]
    for key, rows in facts.groupby("series", sort=False):
        kind, name = str(key).split(":", 1)
        label = series_label(kind, name)
        style = "-"
        if kind == "policy" and len(modes) > 1:
            mode = str(rows["mode"].iloc[0])
            label += f" ({series_label('mode', mode)})"
            style = MODE_STYLES[modes.index(mode) % len(MODE_STYLES)] if mode in modes else "-"
        out.append((label, colour(kind, name), style, str(key), rows))
    return out


def _lines(facts: pd.DataFrame, variant: str) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(label, colour, style, rows) per series, split further by the other swept values in column ``variant``
    (each such split gets its own line style; the series keeps its colour)."""
    out = []
    for label, col, style, _, rows in _series(facts):
        variants = list(dict.fromkeys(rows[variant]))
        if len(variants) == 1:
            out.append((label, col, style, rows))
            continue
        for i, v in enumerate(variants):
            out.append((f"{label}, {v}", col, MODE_STYLES[i % len(MODE_STYLES)], rows[rows[variant] == v]))
    return out


def _capacity_rows(facts: pd.DataFrame) -> tuple[pd.DataFrame, str] | str:
    cached = facts[(facts["mode"] != "vanilla") & facts["capacity"].notna()]
    if cached.empty or cached["capacity"].nunique() < 2:
        return "no capacity axis: the sweep does not vary cache.capacity_noises (or capacity_bytes)"
    return cached, str(cached["capacity_unit"].iloc[0])


def _mean_by_capacity(rows: pd.DataFrame, metric: str) -> pd.Series:
    return rows.groupby("capacity")[metric].mean().sort_index()


def capacity_curves(facts: pd.DataFrame, stem: Path) -> str | None:
    """Compute saved and hit rate vs capacity, one line per policy and other swept values (mean over seeds)."""
    found = _capacity_rows(facts)
    if isinstance(found, str):
        return found
    cached, unit = found
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric, ylabel in ((axes[0], "compute_saved", "compute saved (fraction of denoising steps)"),
                               (axes[1], "hit_rate", "hit rate (fraction of requests)")):
        for label, col, style, rows in _lines(cached, "capacity_variant"):
            m = _mean_by_capacity(rows, metric)
            ax.plot(m.index, m.to_numpy(), marker="o", color=col, linestyle=style, label=label)
        ax.set_xlabel(f"cache capacity ({unit}, log scale)")
        ax.set_ylabel(ylabel)
        _log_axis(ax, cached["capacity"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="policy")
    fig.tight_layout()
    save(fig, stem, FORMATS)
    return None


def miss_ratio_curve(facts: pd.DataFrame, stem: Path) -> str | None:
    """Miss ratio (misses / requests) vs capacity per policy: the cache's miss-ratio curve."""
    found = _capacity_rows(facts)
    if isinstance(found, str):
        return found
    cached, unit = found
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, col, style, rows in _lines(cached, "capacity_variant"):
        m = 1.0 - _mean_by_capacity(rows, "hit_rate")
        ax.plot(m.index, m.to_numpy(), marker="o", color=col, linestyle=style, label=label)
    ax.set_xlabel(f"cache capacity ({unit}, log scale)")
    ax.set_ylabel("miss ratio (fraction of requests)")
    _log_axis(ax, cached["capacity"])
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="policy")
    fig.tight_layout()
    save(fig, stem, FORMATS)
    return None


def latency_cdf_by_mode(facts: pd.DataFrame, latencies: dict[str, np.ndarray], stem: Path) -> str | None:
    """Latency CDF per serving mode, all requests of all runs of that mode pooled."""
    lats = {m: v[~np.isnan(v)] for m, v in latencies.items()}
    lats = {m: np.sort(v) for m, v in lats.items() if len(v)}
    if not lats:
        return "no latencies: every run's latency_s is null (runs without a clock, e.g. the sequential executor)"
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for mode, lat in lats.items():
        runs = int((facts["mode"] == mode).sum())
        ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), color=colour("mode", mode),
                label=f"{series_label('mode', mode)} ({runs} run{'s' * (runs != 1)})")
    ax.set_xlabel("end-to-end latency (s)")
    ax.set_ylabel("fraction of requests")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="serving mode")
    fig.tight_layout()
    save(fig, stem, FORMATS)
    return None


def p99_vs_load(facts: pd.DataFrame, stem: Path) -> str | None:
    """p99 end-to-end latency vs offered load, one line per series; saturated runs drawn hollow."""
    ok = facts[facts["p99_s"].notna() & facts["offered_load"].notna()]
    if ok.empty:
        return "no p99 latency or offered load in the summaries (runs without a clock)"
    if not ok["load_swept"].any() or ok["offered_load"].nunique() < 2:
        return ("no load axis: sweep trace.time_scale (or hardware.pools, hardware.max_batch) "
                "to draw latency against load")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, col, style, rows in _lines(ok, "load_variant"):
        r = rows.sort_values("offered_load")
        ax.plot(r["offered_load"], r["p99_s"], color=col, linestyle=style, label=label)
        sat = r["saturated"].fillna(False).astype(bool).to_numpy()
        ax.scatter(r["offered_load"][~sat], r["p99_s"][~sat], color=col, zorder=3)
        ax.scatter(r["offered_load"][sat], r["p99_s"][sat], facecolors="none", edgecolors=col, zorder=3)
    ax.set_xlabel("offered load (GPU-seconds of work per GPU-second)")
    ax.set_ylabel("p99 end-to-end latency (s)")
    if ok["p99_s"].max() / max(ok["p99_s"].min(), 1e-12) >= 10:  # a saturating sweep spans decades
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="hollow = saturated")
    fig.tight_layout()
    save(fig, stem, FORMATS)
    return None


def k_histograms(facts: pd.DataFrame, stem: Path) -> str | None:
    """Fraction of requests served at each K (0 = miss), per series, its runs' counts pooled."""
    series = [s for s in _series(facts) if s[4]["k_histogram"].notna().any()]
    if not series:
        return "no k_histogram in the summaries"
    ks = sorted({int(k) for h in facts["k_histogram"].dropna() for k in h})
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, (label, col, _, _, rows) in enumerate(series):
        total = np.zeros(len(ks))
        for h in rows["k_histogram"].dropna():
            total += np.array([h.get(str(k), 0) for k in ks], dtype=float)
        ax.bar(np.arange(len(ks)) + (i - (len(series) - 1) / 2) * width, total / max(total.sum(), 1), width,
               color=col, label=label)
    ax.set_xticks(range(len(ks)), ["miss" if k == 0 else str(k) for k in ks])
    ax.set_xlabel("K used (denoising steps skipped)")
    ax.set_ylabel("fraction of requests")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, stem, FORMATS)
    return None


def quality_vs_saved(facts: pd.DataFrame, stem: Path) -> str | None:
    """Mean relative image quality against compute saved, one point per run."""
    ok = facts[facts["quality"].notna() & facts["compute_saved"].notna()]
    if ok.empty:
        return "no quality_mean in the summaries"
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, col, _, _, rows in _series(ok):
        ax.scatter(rows["compute_saved"], rows["quality"], color=col, label=label)
    ax.set_xlabel("compute saved (fraction of denoising steps)")
    ax.set_ylabel("mean relative quality (1 = full generation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, stem, FORMATS)
    return None


def hit_rate_over_trace(facts: pd.DataFrame, hits: dict[str, tuple[np.ndarray, np.ndarray]], stem: Path,
                        bins: int = 40) -> str | None:
    """Hit rate in time bins of the trace, per series, all runs of the series pooled."""
    drawn = [(s, hits[s[3]]) for s in _series(facts) if s[3] in hits and len(hits[s[3]][0])]
    if not drawn:
        return "no arrival_s / k_used columns in the runs' requests.parquet"
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for (label, col, style, _, _), (t, hit) in drawn:
        centers, rate = _binned_hit_rate(t, hit, bins)
        ax.plot(centers, rate, color=col, linestyle=style, label=label)
    ax.set_xlabel("arrival time in the trace (h)")
    ax.set_ylabel("hit rate (fraction of requests)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, stem, FORMATS)
    return None
