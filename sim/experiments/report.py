"""Tables and figures of a results folder, rebuilt from its files alone (`python -m sim report DIR`)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import yaml

from sim.errors import InputError
from sim.experiments import figures, tables
from sim.fileio import write_text_atomic


def report_run(folder: Path) -> None:
    summary = json.loads((folder / "summary.json").read_text())
    requests = pd.read_parquet(folder / "requests.parquet", columns=["arrival_s", "latency_s", "k_used"])
    write_text_atomic(folder / "summary.md", tables.run_markdown(summary))
    plots = folder / "plots"
    plots.mkdir(exist_ok=True)
    figures.latency_cdf(requests, plots / "latency_cdf.png")
    figures.k_histogram(summary, plots / "k_histogram.png")
    figures.hit_rate_over_time(requests, plots / "hit_rate_over_time.png")


def report_experiment(out: Path) -> None:
    """results.csv, results.md and compare.png across the runs that have finished."""
    spec_file = out / "experiment.yaml"
    if not spec_file.exists():
        raise InputError(f"{out}: not a results folder (no experiment.yaml)")
    spec = yaml.safe_load(spec_file.read_text())
    swept = list(spec.get("sweep") or {})
    runs = []
    for run_dir in sorted(p for p in out.iterdir() if p.is_dir() and (p / "summary.json").exists()):
        summary = json.loads((run_dir / "summary.json").read_text())
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        values = {}
        for key in swept:
            node = config
            for part in key.split("."):
                node = node[part]
            values[key] = node
        runs.append((run_dir.name, values, summary))
    if not runs:
        return
    order = {combo: i for i, combo in enumerate(_grid_order(spec))}  # the sweep's own order, not folder names
    runs.sort(key=lambda r: order.get(tuple(str(r[1][k]) for k in swept), len(order)))
    table = tables.experiment_markdown(spec["base"]["name"], [(v, s) for _, v, s in runs])
    write_text_atomic(out / "results.md", table)
    flat = pd.DataFrame([{"run": name, **values, **_flatten(summary)} for name, values, summary in runs])
    flat.to_csv(out / "results.csv", index=False)
    figures.compare_runs(flat, swept, out / "compare.png")
    for name, _, _ in runs:
        report_run(out / name)  # always redrawn: plots are a pure function of the run's files


def _grid_order(spec: dict) -> list[tuple[str, ...]]:
    sweep = spec.get("sweep") or {}
    return [tuple(str(v) for v in combo) for combo in itertools.product(*sweep.values())]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
