"""Tables, figures and index.html of a results folder, rebuilt from its files alone (`python -m sim report DIR`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from sim.experiments import figures, page, tables
from sim.experiments.rundir import run_plots
from sim.fileio import atomic_path, write_text_atomic
from sim.results import finished_runs, read_spec, summaries_table, swept_keys, write_summaries

#: requests read per series for the pooled figures (latency CDF, hit rate over time): a stride sample beyond
MAX_POOLED_REQUESTS = 500_000


def report_run(folder: Path) -> None:
    """summary.md and plots/ of one run, always redrawn: exactly the plots ``run_plots`` names for its summary."""
    summary = json.loads((folder / "summary.json").read_text())
    present = set(pq.read_schema(folder / "requests.parquet").names)
    requests = pd.read_parquet(folder / "requests.parquet",
                               columns=[c for c in ("arrival_s", "latency_s", "k_used") if c in present])
    write_text_atomic(folder / "summary.md", tables.run_markdown(summary))
    plots = folder / "plots"
    plots.mkdir(exist_ok=True)
    draw: dict[str, Callable[[Path], object]] = {
        "latency_cdf.png": lambda out: figures.latency_cdf(requests, out),
        "k_histogram.png": lambda out: figures.k_histogram(summary, out),
        "hit_rate_over_time.png": lambda out: figures.hit_rate_over_time(requests, out),
    }
    drawn = {_replace_plot(plots, name, draw[name]) for name in run_plots(summary)}
    for old in plots.glob("*.png"):
        if old.name not in drawn:
            old.unlink()  # a plot this run cannot support must not survive from an earlier report


def _replace_plot(plots: Path, name: str, draw: Callable[[Path], object]) -> str | None:
    """Draw ``name`` (returned; None when the figure drew nothing); every figure is saved atomically (sim.figsave),
    so a published run's plots are redrawn without a moment in which one is missing: a sweep killed during its
    closing report leaves every run whole."""
    return None if draw(plots / name) is False else name


def _get(row: pd.Series, *keys: str) -> Any:
    for key in keys:
        if key in row.index and not _missing(row[key]):
            return row[key]
    return None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def mode_of(summary: dict[str, Any], config: dict[str, Any]) -> str:
    """The serving mode: the summary's, else the config's serving.mode, else vanilla when the cache is off."""
    mode = summary.get("mode") or config.get("serving.mode")
    if mode:
        return str(mode)
    return "nirvana" if config.get("cache.enabled", True) else "vanilla"


def _variant(config: dict[str, Any], swept: list[str], axis: set[str]) -> str:
    """The swept values other than a figure's own axis and series (seeds are averaged, never split)."""
    return ", ".join(f"{k.rsplit('.', 1)[-1].replace('_', ' ')} {config.get(k)}" for k in swept
                     if k not in axis | SERIES_KEYS)


SERIES_KEYS = {"cache.policy", "cache.enabled", "serving.mode", "seed"}
CAPACITY_KEYS = {"cache.capacity_noises", "cache.capacity_bytes"}
LOAD_KEYS = {"trace.time_scale", "hardware.max_batch", "hardware.pools"}


def facts_table(table: pd.DataFrame, runs: list[tuple[Path, dict[str, Any]]], swept: list[str]) -> pd.DataFrame:
    """The figures' view of each run: policy, mode, capacity, load and the headline metrics, plus its series."""
    rows = []
    for (run, config), (_, row) in zip(runs, table.iterrows(), strict=True):
        summary = json.loads((run / "summary.json").read_text())
        mode = mode_of(summary, config)
        capacity, unit = config.get("cache.capacity_noises"), "noises"
        if _missing(capacity) or table.get("cache.capacity_bytes", pd.Series(dtype=float)).nunique() > 1:
            capacity, unit = config.get("cache.capacity_bytes"), "bytes"
        rows.append({
            "run": run.name, "policy": str(config.get("cache.policy")), "mode": mode,
            "capacity": None if capacity is None or _missing(capacity) else float(capacity), "capacity_unit": unit,
            "offered_load": _get(row, "offered_load"), "p99_s": _get(row, "latency_s.p99"),
            "saturated": _get(row, "saturated"), "hit_rate": _get(row, "hit_rate"),
            "compute_saved": _get(row, "compute_saved"), "quality": _get(row, "quality_mean"),
            "k_histogram": summary.get("k_histogram"),
            "capacity_variant": _variant(config, swept, CAPACITY_KEYS),
            "load_variant": _variant(config, swept, LOAD_KEYS),
            "load_swept": bool(LOAD_KEYS & set(swept)),
        })
    facts = pd.DataFrame(rows)
    if facts.empty:
        return facts
    cached_modes = facts.loc[facts["mode"] != "vanilla", "mode"].unique()
    cached_policies = facts.loc[facts["mode"] != "vanilla", "policy"].unique()
    by_mode = len(cached_modes) > 1 and len(cached_policies) == 1  # modes differ, policy does not: colour by mode
    facts["series"] = [f"mode:{m}" if m == "vanilla" or by_mode else f"policy:{p}"
                       for m, p in zip(facts["mode"], facts["policy"], strict=True)]
    return facts


def _pooled(runs: list[Path], column: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(arrival_s, column) of all the runs' requests, concatenated; None when no run has the column."""
    arrivals, values = [], []
    for run in runs:
        try:
            frame = pd.read_parquet(run / "requests.parquet", columns=["arrival_s", column])
        except (OSError, KeyError, ValueError):
            continue
        arrivals.append(frame["arrival_s"].to_numpy(dtype=float))
        values.append(frame[column].to_numpy(dtype=float))
    if not values:
        return None
    step = -(-sum(len(v) for v in values) // MAX_POOLED_REQUESTS)
    return np.concatenate(arrivals)[::step], np.concatenate(values)[::step]


def experiment_figures(out: Path, facts: pd.DataFrame) -> list[tuple[str, str, str | None]]:
    """(file stem, caption, why skipped or None) per sweep figure, drawn into out/figures/."""
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    for old in fig_dir.glob("*"):
        old.unlink()  # a figure this folder can no longer support must not survive from an earlier report
    by_series = {key: [out / r for r in rows["run"]] for key, rows in facts.groupby("series", sort=False)}
    by_mode = {mode: [out / r for r in rows["run"]] for mode, rows in facts.groupby("mode", sort=False)}
    latencies = {}
    for mode, run_dirs in by_mode.items():
        pooled = _pooled(run_dirs, "latency_s")
        if pooled is not None:
            latencies[str(mode)] = pooled[1]
    hits = {}
    for key, run_dirs in by_series.items():
        pooled = _pooled(run_dirs, "k_used")
        if pooled is not None:
            hits[str(key)] = (pooled[0], (pooled[1] > 0).astype(float))
    specs: list[tuple[str, str, Any]] = [
        ("capacity", "Compute saved and hit rate vs cache capacity, per policy (mean over runs at each capacity).",
         lambda s: figures.capacity_curves(facts, s)),
        ("miss_ratio_curve", "Miss-ratio curve: misses / requests vs cache capacity, per policy.",
         lambda s: figures.miss_ratio_curve(facts, s)),
        ("latency_cdf", "End-to-end latency CDF per serving mode (all requests of the mode's runs pooled).",
         lambda s: figures.latency_cdf_by_mode(facts, latencies, s)),
        ("p99_vs_load", "p99 end-to-end latency vs offered load; hollow markers are saturated runs.",
         lambda s: figures.p99_vs_load(facts, s)),
        ("k_histogram", "Which K the requests were served at (miss = full generation), runs pooled per series.",
         lambda s: figures.k_histograms(facts, s)),
        ("quality_vs_saved", "Mean relative quality vs compute saved, one point per run.",
         lambda s: figures.quality_vs_saved(facts, s)),
        ("hit_rate_over_time", "Hit rate over the trace's time, runs pooled per series.",
         lambda s: figures.hit_rate_over_trace(facts, hits, s)),
    ]
    return [(stem, caption, draw(fig_dir / stem)) for stem, caption, draw in specs]


def report_experiment(out: Path) -> None:
    """summaries.parquet/csv, results.md/csv, tables/ (Markdown, LaTeX, CSV), figures/ (PNG, PDF), compare.png,
    per-run plots and index.html, across the runs that have finished; figures a folder cannot support are
    listed on the page with the reason."""
    out = Path(out)
    spec = read_spec(out)
    runs = finished_runs(out)
    if not runs:
        return
    table = summaries_table(out)
    write_summaries(out, table)
    with atomic_path(out / "results.csv") as tmp:
        table.to_csv(tmp, index=False)
    swept = swept_keys(spec, [c for _, c in runs])
    name = str((spec.get("base") or {}).get("name", out.name))
    summaries = [json.loads((run / "summary.json").read_text()) for run, _ in runs]
    per_run = [({k: config.get(k) for k in swept}, s) for (_, config), s in zip(runs, summaries, strict=True)]
    write_text_atomic(out / "results.md", tables.experiment_markdown(name, per_run))
    table_dir = out / "tables"
    table_dir.mkdir(exist_ok=True)
    write_text_atomic(table_dir / "summary.md", tables.experiment_markdown(name, per_run))
    write_text_atomic(table_dir / "summary.tex", tables.experiment_latex(name, per_run))
    write_text_atomic(table_dir / "summary.csv", tables.experiment_csv(per_run))
    figures.compare_runs(table, swept, out / "compare.png")
    for run, _ in runs:
        report_run(run)
    facts = facts_table(table, runs, swept)
    drawn = experiment_figures(out, facts)
    page.write_index(out, name, spec, swept, tables.experiment_rows(per_run), drawn, [r.name for r, _ in runs])
