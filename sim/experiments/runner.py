"""Run one configuration or a whole sweep; each finished run lands in its own folder, atomically."""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sim.errors import ConfigError
from sim.executors import EXECUTORS
from sim.experiments.build import build_scenario, run_cost, similarity_map
from sim.experiments.config import Experiment, RunConfig, dump_run_config
from sim.metrics import derive_quality, summarize
from sim.scenario.records import RECORD_COLUMNS, Records
from sim.schema import to_data
from sim.workload.trace import Trace, load_trace

EXPERIMENT_FILE = "experiment.yaml"  # marks a folder as a results folder of this tool


def simulate(cfg: RunConfig, trace: Trace | None = None) -> tuple[Trace, Records, dict[str, Any]]:
    """Run one configuration in memory: (trace, per-request records, summary)."""
    if trace is None:
        trace = load_trace(cfg.trace.path, cfg.trace.limit)
    scenario, quality = build_scenario(cfg, trace)
    records = EXECUTORS.get(cfg.run.executor)().run(scenario)
    derive_quality(records, quality)
    mode = scenario.mode
    capacity_bytes = None
    store = getattr(mode, "store", None)
    if store is not None:  # the binding limit, for the storage bill
        limits = [cfg.cache.capacity_bytes, None if cfg.cache.capacity_noises is None
                  else cfg.cache.capacity_noises * int(scenario.requests.noise_bytes.max())]
        capacity_bytes = min(v for v in limits if v is not None)
    summary = summarize(records, ks=cfg.cache.ks, gpu_kinds=scenario.gpu_kinds,
                        cost=run_cost(cfg, capacity_bytes))
    smap = similarity_map(cfg, trace.embedder) if mode.searches else None
    scale = Path(smap.source).name if smap is not None else "none (raw cosine)"
    summary = {"name": cfg.name, "embedder": trace.embedder, "similarity_map": scale, **summary}
    return trace, records, summary


def write_run(cfg: RunConfig, folder: Path, trace: Trace | None = None) -> dict[str, Any]:
    """Simulate and write requests.parquet, summary.json, config.yaml, timings.json, then report."""
    from sim.experiments.report import report_run

    t0 = time.perf_counter()
    trace, records, summary = simulate(cfg, trace)
    wall_s = time.perf_counter() - t0
    tmp = folder.with_name(f".{folder.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    cols = {"request_id": pa.array(trace.request_id.tolist(), pa.string()),
            "user": pa.array(trace.user.tolist(), pa.string())}
    cols.update({name: pa.array(records[name]) for name in RECORD_COLUMNS})
    pq.write_table(pa.table(cols), tmp / "requests.parquet")
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    (tmp / "config.yaml").write_text(dump_run_config(cfg))
    timings = {"wall_s": round(wall_s, 3), "requests": len(trace),
               "simulated_requests_per_s": round(len(trace) / wall_s, 1) if wall_s > 0 else None}
    (tmp / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)  # an unfinished run left by an interrupted sweep (we are resuming it)
    os.replace(tmp, folder)  # a run folder appears whole or not at all
    report_run(folder)
    return summary


def _finished(folder: Path, cfg: RunConfig) -> bool:
    return (folder / "summary.json").exists() and (folder / "config.yaml").exists() and (
        folder / "config.yaml"
    ).read_text() == dump_run_config(cfg)


def prepare_output(out: Path, experiment: Experiment, *, overwrite: bool, resume: bool) -> None:
    spec = yaml.safe_dump(
        {"base": to_data(experiment.base), "sweep": {k: list(v) for k, v in experiment.sweep}}, sort_keys=False
    )
    if out.exists() and any(out.iterdir()):
        ours = (out / EXPERIMENT_FILE).exists()
        if resume and ours:
            if (out / EXPERIMENT_FILE).read_text() != spec:
                raise ConfigError(f"{out}: --resume needs the same experiment; it holds a different one")
            return
        if not overwrite:
            raise ConfigError(f"{out}: output folder exists; pass --overwrite to replace it or --resume to finish it")
        if not ours:
            raise ConfigError(f"{out}: refusing to overwrite a folder that is not a nirvana-sim results folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / EXPERIMENT_FILE).write_text(spec)


def run_experiment(
    experiment: Experiment, out: Path, *, overwrite: bool = False, resume: bool = False, jobs: int = 1,
    progress: bool = True,
) -> list[tuple[str, dict[str, Any]]]:
    """Run every grid point (skipping finished ones on resume), then write the experiment report."""
    from tqdm import tqdm

    from sim.experiments.report import report_experiment

    prepare_output(out, experiment, overwrite=overwrite, resume=resume)
    runs = experiment.runs()
    todo = [(name, cfg) for name, cfg in runs if not (resume and _finished(out / name, cfg))]
    bar = tqdm(total=len(todo), desc=experiment.base.name, unit="run", disable=not progress or len(todo) < 2)
    if jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(write_run, cfg, out / name) for name, cfg in todo]
            for fut in futures:
                fut.result()
                bar.update()
    else:
        loaded: dict[tuple[str, int | None], Trace] = {}  # a sweep reads each trace once
        for name, cfg in todo:
            key = (cfg.trace.path, cfg.trace.limit)
            if key not in loaded:
                loaded = {key: load_trace(*key)}
            write_run(cfg, out / name, loaded[key])
            bar.update()
    bar.close()
    report_experiment(out)
    return [(name, json.loads((out / name / "summary.json").read_text())) for name, _ in runs]
