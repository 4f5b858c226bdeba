"""Run one configuration or a whole sweep; each finished run lands in its own folder, atomically."""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sim.cache.kselect import KTable
from sim.cache.policies import POLICIES
from sim.cache.store import CacheStore
from sim.engine import RECORD_COLUMNS, Engine, Gpu, Requests
from sim.errors import ConfigError, InputError
from sim.experiments.config import Experiment, RunConfig, dump_run_config
from sim.hardware.profiles import (
    load_cost,
    load_frontend,
    load_latency_table,
    load_storage_tier,
)
from sim.hardware.routing import ROUTERS
from sim.metrics import RunCost, summarize
from sim.quality import load_quality
from sim.retrieval import RETRIEVERS
from sim.rng import rng_stream
from sim.schema import to_data
from sim.workload.simmap import SimilarityMap, find_map, load_map
from sim.workload.trace import Trace, load_trace

EXPERIMENT_FILE = "experiment.yaml"  # marks a folder as a results folder of this tool


def build_requests(cfg: RunConfig, trace: Trace) -> tuple[Requests, list[tuple[int, int]]]:
    """Per-request engine inputs, and the (width, height) of each latency class."""
    m = cfg.model
    width = np.where(trace.width > 0, trace.width, m.width)
    height = np.where(trace.height > 0, trace.height, m.height)
    steps = np.where(trace.steps > 0, trace.steps, m.num_steps)
    sampler = np.array([s if s is not None else m.sampler for s in trace.sampler], dtype=object)
    # A latent is reusable only for the same model, shape, sampler and N (DESIGN.md §4).
    compat = list(zip(width.tolist(), height.tolist(), steps.tolist(), sampler.tolist(), strict=True))
    if cfg.cache.scope == "user":
        # Unknown users (null) share nothing: each such request is its own tenant.
        keys: list[Any] = [
            (c, u if u is not None else f"\0unknown-{i}")
            for i, (c, u) in enumerate(zip(compat, trace.user, strict=True))
        ]
    else:
        keys = compat
    codes: dict[Any, int] = {}
    partition = np.array([codes.setdefault(k, len(codes)) for k in keys], dtype=np.int64)

    f = m.vae_scale_factor
    noise_bytes = m.latent_channels * -(-height // f) * -(-width // f) * m.latent_dtype_bytes

    classes: dict[tuple[int, int], int] = {}
    latency_class = np.array(
        [classes.setdefault(wh, len(classes)) for wh in zip(width.tolist(), height.tolist(), strict=True)],
        dtype=np.int64,
    )

    cv = cfg.hardware.step_jitter_cv
    if cv > 0:
        sigma2 = np.log1p(cv * cv)
        step_factor = rng_stream(cfg.seed, "step_jitter").lognormal(-sigma2 / 2, np.sqrt(sigma2), len(trace))
    else:
        step_factor = np.ones(len(trace))
    requests = Requests(
        arrival_s=trace.arrival_s * cfg.trace.time_scale,
        vectors=trace.vectors,
        prompt_index=trace.prompt_index,
        partition=partition,
        noise_bytes=noise_bytes.astype(np.int64),
        num_steps=steps.astype(np.int64),
        latency_class=latency_class,
        step_factor=step_factor,
    )
    return requests, list(classes)


def build_gpus(cfg: RunConfig, shapes: list[tuple[int, int]]) -> list[Gpu]:
    """Every GPU of every pool with its latency table per request shape; checks the batch range now,
    so a sweep fails before it starts, not halfway through."""
    hw = cfg.hardware
    gpus = []
    for pool in hw.pools:
        limit = pool.max_batch or hw.max_batch
        tables = tuple(load_latency_table(pool.latency_profile, cfg.model.name, pool.gpu, w, h) for w, h in shapes)
        for table in tables:
            table.at(limit)
            table.at(1)
        gpus += [Gpu(pool.gpu, tables, limit)] * pool.count
    return gpus


def run_cost(cfg: RunConfig, capacity_bytes: int | None) -> RunCost | None:
    """Hourly price of the GPU fleet and monthly price of the cache's storage, from the cost profile."""
    if cfg.hardware.cost_profile is None:
        return None
    cost = load_cost(cfg.hardware.cost_profile)
    gpu_usd_per_h = sum(p.count * cost.gpu(p.gpu) for p in cfg.hardware.pools)
    tier_price = cost.storage_gb_month_usd.get(cfg.storage.latent_tier)
    storage = None if tier_price is None or capacity_bytes is None else tier_price * capacity_bytes / 1e9
    return RunCost(Path(cost.source).name, gpu_usd_per_h, storage)


def usable_ks(cfg: RunConfig) -> tuple[int, ...]:
    """The K a hit can use: cached K up to the largest K the threshold table selects (holes round down)."""
    top = max(t.k for t in cfg.cache.thresholds)
    return tuple(k for k in cfg.cache.ks if k <= top)


def similarity_map(cfg: RunConfig, embedder: str) -> SimilarityMap | None:
    """The map the run applies: by the trace's embedder tag (auto), none, or a file that must match it."""
    choice = cfg.cache.similarity_map
    if choice == "none":
        return None
    if choice == "auto":
        return find_map(embedder)
    smap = load_map(choice)
    if smap.embedder != embedder:
        raise InputError(f"{smap.source}: fitted for embedder {smap.embedder!r}, but the trace was embedded "
                         f"with {embedder!r} (cache.similarity_map)")
    return smap


def make_store(cfg: RunConfig, dim: int, smap: SimilarityMap | None = None) -> CacheStore | None:
    c = cfg.cache
    if not c.enabled:
        return None
    retriever = RETRIEVERS.get(c.retrieval)
    return CacheStore(
        ks=c.ks,
        table=KTable(tuple((t.above, t.k) for t in c.thresholds)),
        policy=POLICIES.get(c.policy)(c.eviction_unit),
        make_retriever=lambda: retriever(dim),
        capacity_noises=c.capacity_noises,
        capacity_bytes=c.capacity_bytes,
        similarity_scale=smap.apply if smap is not None else None,
    )


def simulate(cfg: RunConfig, trace: Trace | None = None) -> tuple[Trace, dict[str, np.ndarray], dict[str, Any]]:
    """Run one configuration in memory: (trace, per-request records, summary)."""
    if trace is None:
        trace = load_trace(cfg.trace.path, cfg.trace.limit)
    requests, shapes = build_requests(cfg, trace)
    smap = similarity_map(cfg, trace.embedder) if cfg.cache.enabled else None
    hw = cfg.hardware
    gpus = build_gpus(cfg, shapes)
    store = make_store(cfg, trace.vectors.shape[1], smap)
    engine = Engine(
        requests,
        store=store,
        gpus=gpus,
        router=ROUTERS.get(hw.routing)(),
        frontend=load_frontend(cfg.frontend.profile),
        tier=load_storage_tier(cfg.storage.profile, cfg.storage.latent_tier),
        quality=load_quality(cfg.quality.profile, usable_ks(cfg)),
        write_delay=cfg.cache.write_delay,
        batch_window_s=hw.batch_window_s,
        step_events=hw.step_events,
    )
    records = engine.run()
    capacity_bytes = None
    if store is not None:  # the binding limit, for the storage bill
        limits = [cfg.cache.capacity_bytes, None if cfg.cache.capacity_noises is None
                  else cfg.cache.capacity_noises * int(requests.noise_bytes.max())]
        capacity_bytes = min(v for v in limits if v is not None)
    summary = summarize(records, ks=cfg.cache.ks, gpu_kinds=[g.kind for g in gpus],
                        cost=run_cost(cfg, capacity_bytes))
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
