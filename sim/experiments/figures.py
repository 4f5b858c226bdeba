"""Plots built from a results folder only: per run (latency CDF, K histogram, hit rate over time)
and per experiment (compute saved and hit rate across the sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def latency_cdf(requests: pd.DataFrame, path: Path) -> None:
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def k_histogram(summary: dict[str, Any], path: Path) -> None:
    hist = summary["k_histogram"]
    labels = ["miss" if k == "0" else f"K={k}" for k in hist]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(labels, [hist[k] / summary["requests"] for k in hist])
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"compute saved {summary['compute_saved']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def hit_rate_over_time(requests: pd.DataFrame, path: Path, bins: int = 40) -> None:
    t = requests["arrival_s"].to_numpy()
    hit = (requests["k_used"].to_numpy() > 0).astype(float)
    edges = np.linspace(t.min(), t.max() + 1e-9, bins + 1)
    which = np.clip(np.digitize(t, edges) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    rate = np.divide(np.bincount(which, hit, minlength=bins), count, out=np.full(bins, np.nan), where=count > 0)
    centers = (edges[:-1] + edges[1:]) / 2 / 3600
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(centers, rate, marker=".")
    ax.set_xlabel("arrival time (h)")
    ax.set_ylabel("hit rate")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare_runs(table: pd.DataFrame, swept: list[str], path: Path) -> None:
    """Compute saved and hit rate per run; with a numeric swept key, lines over it per other value."""
    numeric = [k for k in swept if pd.api.types.is_numeric_dtype(table[k])]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("compute_saved", "hit_rate"), strict=True):
        if numeric:
            x = numeric[-1]
            others = [k for k in swept if k != x]
            groups = table.groupby(others, sort=False) if others else [((), table)]
            for key, group in groups:
                values = key if isinstance(key, tuple) else (key,)
                label = ", ".join(f"{k}={v}" for k, v in zip(others, values, strict=True))
                g = group.sort_values(x)
                ax.plot(g[x], g[metric], marker="o", label=label or None)
            ax.set_xlabel(x)
            if (table[x] > 0).all() and table[x].max() / max(table[x].min(), 1e-12) >= 10:
                ax.set_xscale("log")
                ax.minorticks_off()
            ticks = sorted(table[x].unique())
            ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
            if others:
                ax.legend(fontsize=7)
        else:
            labels = table["run"].tolist()
            ax.bar(range(len(labels)), table[metric])
            ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
