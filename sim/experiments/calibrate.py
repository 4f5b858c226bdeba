"""Fit the synthetic generator's reuse knobs to NIRVANA's LCBFU capacity row: `python -m sim trace calibrate`.

The published row (profiles/published/nirvana-paper-results.yaml, experiment (a)): LCBFU saves
0.12 / 0.15 / 0.18 / 0.23 of the denoising compute at 1,500 / 15,000 / 150,000 / 1,500,000 noises
on a 2M-request DiffusionDB-scale trace. Only that row is fitted; the other policies' cells are for
reporting. One evaluation generates a vectors-mode trace (``vectors.model: tree``) in memory and
replays it with the sequential executor on the compiled cache core under the paper experiment's run config
(experiments/paper/capacity.yaml), LCBFU at each capacity.

Candidate lists for the fitting loop are exact *within topics*: in a tree trace every prompt is a
chain of rotations from its topic's random root, so two prompts of different topics have the cosine
of two random unit vectors, N(0, 1/dim) — at dim 128 the chance that one pair reaches the 0.65 floor
is about 1e-13 per pair — and the complete list of a request is its topic's earlier prompts above
the floor. That makes an evaluation seconds instead of the quarter hour an index over 1.5M prompts
takes here. The fitted trace is then built and run through the ordinary pipeline (`trace synth`,
`python -m sim paper capacity`), whose figures are the ones reported.

The search is Gauss-Newton on the fitted knobs over the row's four cells, with a forward-difference
Jacobian, each step clipped to the knobs' bounds; every evaluation is logged (knobs, compute saved per capacity) to
``OUT/calibration.json`` as it finishes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import ConfigError
from sim.fileio import write_text_atomic
from sim.paths import resolve
from sim.retrieval import cosine
from sim.retrieval.precompute import Candidates, _partition_lists, _screen_exact
from sim.schema import set_dotted
from sim.synth.config import SynthConfig, config_data, load_synth_config, synth_config_from_data

#: the paper's LCBFU row (NIRVANA, NSDI 2024, experiment (a); DESIGN.md §1)
TARGET_ROW = {1_500: 0.12, 15_000: 0.15, 150_000: 0.18, 1_500_000: 0.23}
#: knob -> (lower, upper) bound of the search
KNOBS: dict[str, tuple[float, float]] = {
    "reuse.head_share": (0.0, 1.0),
    "reuse.head_start_share": (0.0, 1.0),
    "reuse.new_topic": (0.02, 0.95),
    "reuse.gap_alpha": (0.05, 3.0),
    "reuse.head_topics": (10.0, 100_000.0),
}
#: the fitting loop's lists: longer than the run default (64), and exact for topics up to this many prompts,
#: so that few lookups fall back to the (Python-level) exact search
EVAL_LIST_CAP = 256
EVAL_MAX_GROUP = 20_000
DEFAULT_KNOBS = ("reuse.head_share", "reuse.head_topics", "reuse.gap_alpha", "reuse.new_topic")


def topic_groups(prompts: Iterable[str]) -> np.ndarray:
    """Topic of each distinct prompt of a vectors-mode trace, from its id ``v:<topic>:<n>``."""
    try:
        return np.array([int(p.split(":", 2)[1]) for p in prompts], dtype=np.int64)
    except (IndexError, ValueError):
        raise ConfigError("calibrate: the trace's prompts are not vectors-mode ids 'v:<topic>:<n>'") from None


def grouped_candidates(vectors: np.ndarray, prompt_index: np.ndarray, group_of_prompt: np.ndarray, floor: float,
                       cap: int, max_group: int = 2_000) -> Candidates:
    """Candidate lists (sim/retrieval/precompute.py's semantics: earlier distinct prompts with canonical
    cosine >= floor, cosine descending, ties to the earlier first appearance, capped) computed within
    each group of prompts only — complete when no pair across groups reaches the floor. A group of more
    than ``max_group`` distinct prompts gets empty lists marked truncated: with the group as the retrieval
    partition, the replay then searches that group's cached prompts exactly (slow in the largest topics at
    large capacities, where most of an evaluation's time goes)."""
    n = len(prompt_index)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    group = group_of_prompt[prompt_index]
    order = np.lexsort((np.arange(n), group))
    cut = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1], True])
    truncated = np.zeros(n, dtype=bool)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    single: list[np.ndarray] = []  # requests of groups with one distinct prompt: only their own repeats
    for g0, g1 in zip(cut[:-1].tolist(), cut[1:].tolist(), strict=True):
        if g1 - g0 < 2:
            continue
        reqs = order[g0:g1]
        prompts = prompt_index[reqs]
        if np.all(prompts == prompts[0]):
            single.append(reqs[1:])
            continue
        if len(np.unique(prompts)) > max_group:
            truncated[reqs[1:]] = True
            continue
        local = np.zeros(len(reqs), dtype=bool)
        for row, pid, sim in _partition_lists(vectors, prompts, floor, cap, local, np.arange(len(reqs)),
                                              _screen_exact, 512, 32_768):
            parts.append((reqs[row], pid, sim))
        truncated[reqs] = local
    if single:
        reqs = np.concatenate(single)
        pid = prompt_index[reqs]
        sim = cosine.pair_cosines(vectors[pid], vectors[pid])
        keep = sim.astype(np.float64) >= floor
        parts.append((reqs[keep], pid[keep].astype(np.int32), sim[keep]))
    req = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    pid = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int32)
    sim = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.float32)
    by_req = np.argsort(req, kind="stable")  # each request's list stays in its order
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(req, minlength=n), out=offsets[1:])
    return Candidates(offsets, pid[by_req].astype(np.int32), sim[by_req].astype(np.float32), truncated, float(floor),
                      cap, "grouped", "")


def _with(cfg: SynthConfig, knobs: dict[str, float]) -> SynthConfig:
    """``cfg`` with the knobs set, validated by the generator config's own loader."""
    data = config_data(cfg)
    for key, value in knobs.items():
        set_dotted(data, key, round(value) if key.endswith(".head_topics") else float(value))
    return synth_config_from_data(data, "calibrate")


def evaluate(cfg: SynthConfig, requests: int, seed: int, capacities: list[int], policies: tuple[str, ...] = ("lcbfu",),
             work: Path | None = None) -> dict[tuple[str, int], dict[str, float]]:
    """Compute saved and hit rate per (policy, capacity) for one generator config: generate, write, load,
    one set of lists, then a compiled sequential replay per point."""
    from sim.build import build_scenario, with_requests
    from sim.cache.core.cache import CompiledCache
    from sim.executors.sequential import Sequential
    from sim.experiments.sweep import load_experiment
    from sim.metrics import summarize
    from sim.synth.generator import write_synth_trace
    from sim.trace import load_trace

    with tempfile.TemporaryDirectory(dir=work) as tmp:
        path = Path(tmp) / "cal.parquet"
        write_synth_trace(cfg, requests, seed, path, "vectors", None, None)
        trace = load_trace(path)
        groups = topic_groups(trace.prompts)
        # retrieval scoped to the topic: the same answers (no cross-topic pair reaches the floor), and the
        # exact search a big topic's truncated lists fall back to reads only that topic's prompts
        topic = groups[trace.prompt_index]
        out: dict[tuple[str, int], dict[str, float]] = {}
        cands: Candidates | None = None
        for policy in policies:
            for cap in capacities:
                exp = load_experiment(resolve("experiments/paper/capacity.yaml"), [
                    ("trace.path", str(path)), ("cache.policy", policy), ("cache.capacity_noises", cap),
                    ("cache.retrieval", "exact_cosine"), ("run.executor", "sequential"),
                    ("sweep.cache.policy", [policy]), ("sweep.cache.capacity_noises", [cap])])
                ((_, run),) = exp.runs()
                scenario = with_requests(build_scenario(run, trace)[0], partition=topic)
                if cands is None:  # one set of lists: every point has the same trace and K table
                    floor = min(t.above for t in run.cache.thresholds)  # vectors: raw scale, no map
                    cands = grouped_candidates(trace.vectors, trace.prompt_index, groups, floor,
                                               EVAL_LIST_CAP, max_group=EVAL_MAX_GROUP)
                assert scenario.mode.cache_spec is not None
                spec = dataclasses.replace(scenario.mode.cache_spec, retrieval="candidates", candidates=cands)
                rec = Sequential().run(scenario, cache=CompiledCache(spec, scenario.requests))
                summary = summarize(rec, ks=run.cache.ks, gpu_kinds=scenario.gpu_kinds, cost=None, timed=False)
                out[(policy, cap)] = {"compute_saved": float(summary["compute_saved"]),
                                      "hit_rate": float(summary["hit_rate"])}
        return out


def fit(base: SynthConfig, *, requests: int, seed: int, knobs: tuple[str, ...], max_evals: int, out: Path,
        tolerance: float = 0.005, report: tuple[str, ...] = ()) -> dict[str, Any]:
    """Gauss-Newton on ``knobs`` over the four cells of the row, with forward differences; returns the
    evaluated point with the smallest largest error."""
    caps = list(TARGET_ROW)
    target = np.array([TARGET_ROW[c] for c in caps])
    lo = np.array([KNOBS[k][0] for k in knobs])
    hi = np.array([KNOBS[k][1] for k in knobs])
    x = np.array([float(_get(base, k)) for k in knobs])
    log: list[dict[str, Any]] = []

    def run(xv: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        got = evaluate(_with(base, dict(zip(knobs, xv.tolist(), strict=True))), requests, seed, list(TARGET_ROW))
        saved = {c: got[("lcbfu", c)]["compute_saved"] for c in TARGET_ROW}
        log.append({"knobs": dict(zip(knobs, [round(v, 6) for v in xv.tolist()], strict=True)),
                    "compute_saved": {str(c): round(v, 5) for c, v in saved.items()},
                    "seconds": round(time.perf_counter() - t0, 1)})
        _write(out, base, requests, seed, knobs, log)
        print(f"eval {len(log)}: {log[-1]['knobs']} -> {log[-1]['compute_saved']}", flush=True)
        return np.array([saved[c] for c in caps])

    y = run(x)
    best = (float(np.abs(y - target).max()), x.copy())
    while len(log) < max_evals and best[0] > tolerance:
        jac = np.zeros((len(caps), len(knobs)))
        for j in range(len(knobs)):
            if len(log) >= max_evals:
                break
            step = 0.1 * (hi[j] - lo[j]) if knobs[j] != "reuse.head_topics" else 0.5 * x[j]
            xj = x.copy()
            xj[j] = x[j] + step if x[j] + step <= hi[j] else x[j] - step
            jac[:, j] = (run(xj) - y) / (xj[j] - x[j])
        if len(log) >= max_evals:
            break
        dx = np.linalg.lstsq(jac, target - y, rcond=None)[0]
        x = np.clip(x + dx, lo, hi)
        y = run(x)
        err = float(np.abs(y - target).max())
        if err < best[0]:
            best = (err, x.copy())
    result: dict[str, Any] = {"best_knobs": dict(zip(knobs, best[1].tolist(), strict=True)),
                              "max_abs_error": round(best[0], 5)}
    if report:  # the other policies at the best point: reported beside the fitted row, never fitted
        got = evaluate(_with(base, result["best_knobs"]), requests, seed, list(TARGET_ROW), report)
        result["table"] = {f"{p}@{c}": {k: round(v, 5) for k, v in got[(p, c)].items()} for p, c in got}
    _write(out, base, requests, seed, knobs, log, result)
    return result


def _get(cfg: SynthConfig, key: str) -> Any:
    section, field = key.split(".")
    return getattr(getattr(cfg, section), field)


def _write(out: Path, base: SynthConfig, requests: int, seed: int, knobs: tuple[str, ...],
           log: list[dict[str, Any]], result: dict[str, Any] | None = None) -> None:
    data = {"target_lcbfu_row": {str(c): v for c, v in TARGET_ROW.items()}, "requests": requests, "seed": seed,
            "knobs": list(knobs), "evaluations": log, "result": result, "base_config": config_data(base)}
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "calibration.json", json.dumps(data, indent=2) + "\n")


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "calibrate", help="fit the generator's reuse knobs to NIRVANA's LCBFU capacity row",
        description="Gauss-Newton search on generator knobs so that LCBFU's compute saved at 1,500 / 15,000 / "
                    "150,000 / 1,500,000 noises matches the paper's 0.12 / 0.15 / 0.18 / 0.23 (vectors mode, tree "
                    "model).")
    cmd.add_argument("--config", required=True,
                     help="generator YAML to start from (reuse.model copy, vectors.model tree)")
    cmd.add_argument("--requests", type=int, default=2_000_000)
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--knobs", default=",".join(DEFAULT_KNOBS),
                     help=f"comma-separated knobs to fit, one per capacity in order (known: {', '.join(KNOBS)})")
    cmd.add_argument("--max-evals", type=int, default=12)
    cmd.add_argument("--report", default="fifo,lru,lfu,lcbfu",
                     help="policies to evaluate at the best point, all four capacities (reported, not fitted; '' for "
                          "none)")
    cmd.add_argument("--out", required=True, help="folder for calibration.json (the log of every evaluation)")
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from sim.fileio import check_output_dir

    check_output_dir(args.out)
    knobs = tuple(k.strip() for k in args.knobs.split(",") if k.strip())
    unknown = [k for k in knobs if k not in KNOBS]
    if unknown or not knobs or len(knobs) > len(TARGET_ROW) or len(set(knobs)) != len(knobs):
        raise ConfigError(f"--knobs: expected 1-{len(TARGET_ROW)} distinct knobs of {', '.join(KNOBS)}, "
                          f"got {args.knobs!r}")
    if not 1_000 <= args.requests <= 20_000_000:
        raise ConfigError(f"--requests: expected an integer in 1,000..20,000,000, got {args.requests}")
    if not 1 <= args.max_evals <= 200:
        raise ConfigError(f"--max-evals: expected an integer in 1..200, got {args.max_evals}")
    base = load_synth_config(args.config)
    if base.vectors.model != "tree":
        raise ConfigError(f"{args.config}: vectors.model: expected 'tree' for calibration, got {base.vectors.model!r}")
    from sim.cache.policies import POLICIES

    report = tuple(p.strip() for p in args.report.split(",") if p.strip())
    bad = [p for p in report if p not in POLICIES]
    if bad:
        raise ConfigError(f"--report: {bad[0]!r} is not a registered policy")
    result = fit(base, requests=args.requests, seed=args.seed, knobs=knobs, max_evals=args.max_evals,
                 out=Path(args.out), report=report)
    print(json.dumps(result, indent=2))
    print(f"wrote {Path(args.out) / 'calibration.json'}")
    return 0
