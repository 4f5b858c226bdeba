"""Run one configuration or a whole sweep: validate every input first, then publish each finished run's folder whole."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from sim.build import build_scenario, plan, retrieval_summary, run_cost, similarity_map
from sim.config import RunConfig
from sim.errors import ConfigError, InputError
from sim.experiments.rundir import InputHashes, RunResult, input_files, kept_run_state, publish_run
from sim.experiments.sweep import Experiment
from sim.fileio import check_output_dir, check_replaceable, write_text_atomic, writing
from sim.metrics import derive_quality, summarize
from sim.quality import QualityModel
from sim.scenario import Scenario, warmup_mask
from sim.scenario.records import Records
from sim.trace import Trace, load_trace

EXPERIMENT_FILE = "experiment.yaml"  # marks a folder as a results folder of this tool


def simulate(cfg: RunConfig, trace: Trace | None = None) -> tuple[Trace, Records, dict[str, Any]]:
    """Run one configuration in memory: (trace, per-request records, summary)."""
    if trace is None:
        trace = load_trace(cfg.trace.path, cfg.trace.limit)
    scenario, quality = build_scenario(cfg, trace)
    return (trace, *execute(cfg, trace, scenario, quality))


def execute(cfg: RunConfig, trace: Trace, scenario: Scenario, quality: QualityModel) -> tuple[Records, dict[str, Any]]:
    """Execute a built scenario once (it can be executed again: probes vary its arrivals or GPUs) and summarise
    it: (per-request records, summary). ``cfg`` is the run config the scenario stands for."""
    how = plan(cfg, scenario)
    executor = how.executor
    records = executor.run(scenario, how.implementation)
    records["warmup"][:] = warmup_mask(records["arrival_s"], cfg.metrics.warmup_requests, cfg.metrics.warmup_s)
    derive_quality(records, quality)
    mode = scenario.mode
    summary = summarize(records, ks=cfg.cache.ks, gpu_kinds=scenario.gpu_kinds,
                        cost=run_cost(cfg, mode.capacity_bytes()), timed=executor.timed)
    scale = Path(scenario.similarity_map).name if scenario.similarity_map else "none (raw cosine)"
    header = {"name": cfg.name, "mode": mode.name, "executor": executor.name, "implementation": how.implementation,
              "admission": executor.admission,
              "eviction_unit": mode.cache_spec.unit if mode.cache_spec is not None else None,
              "retrieval": retrieval_summary(scenario),
              "embedder": trace.embedder, "similarity_map": scale, "quality_profile": quality.source}
    return records, {**header, **summary, **executor.stats}


def run_point(cfg: RunConfig, trace: Trace | None = None) -> RunResult:
    """Simulate one run and return everything its folder holds (a worker's job; it writes nothing)."""
    t0 = time.perf_counter()
    trace, records, summary = simulate(cfg, trace if trace is not None else _trace(cfg))
    return RunResult(summary, records, trace.request_id, trace.user.tolist(), time.perf_counter() - t0)


#: the trace this process loaded last, by (path, limit): the driver validates with it, and each pool
#: worker keeps its own across the sweep points it runs (one load per worker, not per point)
_TRACES: dict[tuple[str, int | None], Trace] = {}


def _trace(cfg: RunConfig) -> Trace:
    key = (cfg.trace.path, cfg.trace.limit)
    if key not in _TRACES:
        _TRACES.clear()  # keep one trace in memory at a time
        _TRACES[key] = load_trace(*key)
    return _TRACES[key]


def write_run(cfg: RunConfig, folder: Path, trace: Trace | None = None) -> dict[str, Any]:
    """Simulate one run and publish its folder (validated inputs assumed); returns its summary."""
    result = run_point(cfg, trace)
    publish_run(folder, cfg, result, InputHashes().of(input_files(cfg, _map_file(cfg, trace or _trace(cfg)))))
    return result.summary


def _map_file(cfg: RunConfig, trace: Trace) -> str | None:
    smap = similarity_map(cfg, trace.embedder)
    return smap.source if smap is not None else None


def validate_runs(runs: list[tuple[str, RunConfig]]) -> dict[str, dict[str, str]]:
    """Load and check every input of every run (trace, embeddings, profiles, similarity maps) before anything
    is written; returns each run's input hashes. Raises the first problem, naming its file or key."""
    hashes = InputHashes()
    out = {}
    notices: set[str] = set()
    for name, cfg in runs:
        trace = _trace(cfg)
        try:
            scenario, _ = build_scenario(cfg, trace)
            for notice in plan(cfg, scenario).notices:
                if notice not in notices:
                    notices.add(notice)
                    print(f"notice: {notice}", file=sys.stderr)
            run_cost(cfg, None)
            m = cfg.metrics
            if warmup_mask(scenario.requests.arrival_s, m.warmup_requests, m.warmup_s).all():
                raise ConfigError(f"metrics.warmup_requests / warmup_s: the warm-up ({m.warmup_requests} requests, "
                                  f"{m.warmup_s:g} s) covers all {len(trace):,} requests; nothing would be summarised")
        except ConfigError as exc:
            raise ConfigError(f"run {name}: {exc}") from None
        out[name] = hashes.of(input_files(cfg, _map_file(cfg, trace)))
    return out


def _spec(experiment: Experiment) -> str:
    return yaml.safe_dump(experiment.spec(), sort_keys=False)


def check_output(out: Path, experiment: Experiment, *, overwrite: bool, resume: bool) -> None:
    """Refuse an output folder we may not use, before anything is simulated or written."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite: choose one (resume keeps finished runs, overwrite discards them)")
    check_output_dir(out)
    if out.exists() and any(out.iterdir()):
        ours = (out / EXPERIMENT_FILE).exists()
        if resume and ours:
            if (out / EXPERIMENT_FILE).read_text() != _spec(experiment):
                raise ConfigError(f"{out}: --resume needs the same experiment; it holds a different one")
            return
        if not overwrite:
            raise ConfigError(f"{out}: output folder exists; pass --overwrite to replace it or --resume to finish it")
        if not ours:
            raise ConfigError(f"{out}: refusing to overwrite a folder that is not a nirvana-sim results folder")


def _not_results(folder: Path) -> str | None:
    return None if (folder / EXPERIMENT_FILE).is_file() else f"no {EXPERIMENT_FILE}"


def prepare_output(out: Path, experiment: Experiment, *, overwrite: bool, resume: bool) -> None:
    """Create (or clear, with --overwrite) the results folder; call only once every input is validated."""
    check_output(out, experiment, overwrite=overwrite, resume=resume)
    if resume and (out / EXPERIMENT_FILE).exists():
        return
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / EXPERIMENT_FILE, _spec(experiment))


def run_experiment(
    experiment: Experiment, out: Path, *, overwrite: bool = False, resume: bool = False, jobs: int = 1,
    progress: bool = True, recompute_changed: bool = False, executor: str | None = None, cluster: str | None = None,
    sources: tuple[Path, ...] = (),
) -> list[tuple[str, dict[str, Any]]]:
    """Validate every input, then run every grid point (on resume, only those not finished) on a sweep
    executor (serial, a local pool, or a Dask cluster), publishing each run's complete folder as soon as it
    is done; then write the experiment's tables, figures and page. ``sources``: files the experiment was read
    from (its YAML), which --overwrite must not delete either."""
    from tqdm import tqdm

    from sim.experiments.report import report_experiment
    from sim.experiments.sweepexec import make_executor

    check_output(out, experiment, overwrite=overwrite, resume=resume)
    runs = experiment.runs()
    inputs = validate_runs(runs)
    if overwrite:  # --overwrite deletes the folder: never one holding this sweep's trace, a profile or the YAML
        used = {Path(file) for hashes in inputs.values() for file in hashes} | set(sources)
        check_replaceable(out, sorted(used), _not_results, "nirvana-sim results")
    todo = []
    for name, cfg in runs:
        state = kept_run_state(out / name, cfg, inputs[name]) if resume else "missing"
        if state.startswith("inputs changed") and not recompute_changed:
            raise InputError(f"{out / name}: kept run's {state.removeprefix('inputs changed: ')} changed since it "
                             "ran; pass --recompute-changed to recompute such runs")
        if state != "ok":
            todo.append((name, cfg))
    configs = dict(todo)
    with make_executor(executor, jobs=jobs if len(todo) > 1 else 1, cluster=cluster) as pool:
        prepare_output(out, experiment, overwrite=overwrite, resume=resume)
        bar = tqdm(total=len(todo), desc=experiment.base.name, unit="run", disable=not progress or len(todo) < 2)
        for name, result in pool.execute(todo, run_point):
            publish_run(out / name, configs[name], result, inputs[name])
            bar.update()
        bar.close()
    report_experiment(out)
    return [(name, json.loads((out / name / "summary.json").read_text())) for name, _ in runs]
