"""SLO search: the highest load a configuration sustains, and the fewest GPUs it needs, under a p99 latency SLO.

`python -m sim slo EXP.yaml --p99 SECONDS` — for every configuration of the experiment (each sweep point):

(a) **load**: the largest arrival-rate scale L (arrivals compressed by trace.time_scale = 1 / L) whose
    timed run has p99 latency <= the SLO and is not saturated; doubling/halving brackets it, bisection on
    L narrows it to ``tolerance``. Saturated probes are flagged in the probe table, never reported as a
    sustained load.
(b) **fleet**: at the trace's own rate, the fewest GPUs of one pool (``--pool``, the others kept) whose run
    meets the SLO unsaturated — by bisection on the count, assuming more GPUs never hurt — and the cost of
    that fleet for the trace's span: how a cache lowers the bill of a provisioned deployment (the
    ``cost.slo_fleet`` seam of a run's summary is filled here).

Every probe is a full timed simulation (engine executor); the search writes slo.json and slo.md, and
nothing if an input is invalid.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.build import with_requests
from sim.config import RunConfig
from sim.errors import ConfigError
from sim.fileio import check_output_dir, write_text_atomic
from sim.limits import MAX_GPUS_PER_POOL
from sim.quality import QualityModel
from sim.scenario import Gpu, Scenario
from sim.trace import Trace

#: bracket for the load scale (arrival rate x L): beyond these the answer is "more than" / "less than"
MAX_SCALE = 1024.0
MIN_SCALE = 1.0 / 1024
#: bounds of the flags: a p99 SLO above a day is a typo; the load bisection stops at 0.1% (at most ~33 probes
#: between the brackets), and the GPU bisection at one GPU (at most ~34 probes up to MAX_GPUS_PER_POOL)
MAX_SLO_S = 86_400.0
MIN_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Probe:
    what: str  # "load" or "gpus"
    value: float  # the load scale or the GPU count probed
    p99_s: float | None
    saturated: bool
    meets: bool


@dataclass(frozen=True)
class Built:
    """A run built once for all its probes: its trace, scenario and quality model."""

    trace: Trace
    scenario: Scenario
    quality: QualityModel


def _probe(cfg: RunConfig, built: Built, scenario: Scenario, slo_s: float, what: str,
           value: float) -> tuple[Probe, dict[str, Any]]:
    from sim.experiments.runner import execute

    _, summary = execute(cfg, built.trace, scenario, built.quality)
    p99 = summary["latency_s"]["p99"] if summary["latency_s"] else None
    saturated = bool(summary["saturated"])
    meets = p99 is not None and p99 <= slo_s and not saturated
    return Probe(what, value, p99, saturated, meets), summary


def _with(cfg: RunConfig, **changes: Any) -> RunConfig:
    """``cfg`` with dotted-section changes, e.g. trace=..., hardware=... (frozen dataclasses)."""
    return dataclasses.replace(cfg, **changes)


def _at_scale(cfg: RunConfig, scale: float) -> RunConfig:
    return _with(cfg, trace=dataclasses.replace(cfg.trace, time_scale=cfg.trace.time_scale / scale))


def _with_count(cfg: RunConfig, pool: int, count: int) -> RunConfig:
    pools = list(cfg.hardware.pools)
    pools[pool] = dataclasses.replace(pools[pool], count=count)
    return _with(cfg, hardware=dataclasses.replace(cfg.hardware, pools=tuple(pools)))


def max_load(cfg: RunConfig, built: Built, slo_s: float, tolerance: float, probes: list[Probe]) -> float | None:
    """Largest load scale meeting the SLO (None: not even at MIN_SCALE; MAX_SCALE: at least that)."""
    def meets(scale: float) -> bool:
        at = _at_scale(cfg, scale)  # arrivals exactly as a run of this config would have them
        scenario = with_requests(built.scenario, arrival_s=built.trace.arrival_s * at.trace.time_scale)
        probe, _ = _probe(at, built, scenario, slo_s, "load", scale)
        probes.append(probe)
        return probe.meets

    lo, hi = 1.0, 1.0
    if meets(1.0):
        while hi < MAX_SCALE:
            hi = min(hi * 2, MAX_SCALE)
            if not meets(hi):
                break
            lo = hi
        else:
            return MAX_SCALE
    else:
        while lo > MIN_SCALE:
            lo = max(lo / 2, MIN_SCALE)
            if meets(lo):
                break
            hi = lo
        else:
            return None
    while hi / lo > 1 + tolerance:
        mid = (lo * hi) ** 0.5
        if meets(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _pool_gpus(cfg: RunConfig, gpus: tuple[Gpu, ...], pool: int, count: int) -> tuple[Gpu, ...]:
    """The scenario's GPUs with pool ``pool`` at ``count`` GPUs (a pool's GPUs are one Gpu repeated)."""
    out: list[Gpu] = []
    start = 0
    for p, spec in enumerate(cfg.hardware.pools):
        out += [gpus[start]] * (count if p == pool else spec.count)
        start += spec.count
    return tuple(out)


def fewest_gpus(cfg: RunConfig, built: Built, slo_s: float, pool: int, max_gpus: int,
                probes: list[Probe]) -> tuple[int | None, dict[str, Any] | None]:
    """Fewest GPUs in pool ``pool`` meeting the SLO at the trace's own rate, and that run's summary."""
    found: dict[int, dict[str, Any]] = {}

    def meets(count: int) -> bool:
        scenario = dataclasses.replace(built.scenario, gpus=_pool_gpus(cfg, built.scenario.gpus, pool, count))
        probe, summary = _probe(_with_count(cfg, pool, count), built, scenario, slo_s, "gpus", count)
        probes.append(probe)
        if probe.meets:
            found[count] = summary
        return probe.meets

    hi = cfg.hardware.pools[pool].count
    while not meets(hi):
        if hi >= max_gpus:
            return None, None
        hi = min(hi * 2, max_gpus)
    lo = 0  # invariant: lo fails (0 GPUs serve nothing), hi meets
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return hi, found[hi]


def search(runs: list[tuple[str, RunConfig]], slo_s: float, *, pool: int, max_gpus: int,
           tolerance: float) -> list[dict[str, Any]]:
    from sim.build import build_scenario
    from sim.trace import load_trace

    out = []
    for name, cfg in runs:
        cfg = _with(cfg, run=dataclasses.replace(cfg.run, executor="engine"))
        trace = load_trace(cfg.trace.path, cfg.trace.limit)
        built = Built(trace, *build_scenario(cfg, trace))  # once: every probe executes it with changes
        load_probes: list[Probe] = []
        gpu_probes: list[Probe] = []
        scale = max_load(cfg, built, slo_s, tolerance, load_probes)
        count, summary = fewest_gpus(cfg, built, slo_s, pool, max_gpus, gpu_probes)
        cost = (summary or {}).get("cost") or {}
        out.append({
            "run": name,
            "mode": cfg.serving.mode,
            "max_load_scale": None if scale is None else round(scale, 4),
            "max_load_note": ("at least" if scale == MAX_SCALE else "below the search floor" if scale is None
                              else "bisection, within tolerance"),
            "pool": cfg.hardware.pools[pool].gpu,
            "gpus_needed": count,
            "slo_fleet": None if count is None else {
                "gpus": count, "p99_s": summary["latency_s"]["p99"] if summary else None,
                "fleet": cost.get("fleet"), "on_demand_consumed": cost.get("on_demand_consumed")},
            "probes": [dataclasses.asdict(p) for p in load_probes + gpu_probes],
        })
    return out


def markdown(slo_s: float, results: list[dict[str, Any]]) -> str:
    lines = [f"# SLO search: p99 <= {slo_s:g} s", "",
             "| run | mode | max load scale | GPUs needed | fleet USD / 1k images | saturated probes |",
             "|---|---|---|---|---|---|"]
    for r in results:
        fleet = ((r["slo_fleet"] or {}).get("fleet") or {}).get("usd_per_1000_images")
        sat = sum(p["saturated"] for p in r["probes"])
        scale = "n/a" if r["max_load_scale"] is None else f"{r['max_load_scale']:g}"
        if r["max_load_note"] == "at least":
            scale = f">= {scale}"
        gpus = "more than the search cap" if r["gpus_needed"] is None else f"{r['gpus_needed']} {r['pool']}"
        lines.append(f"| {r['run']} | {r['mode']} | {scale} | {gpus} | "
                     f"{'n/a' if fleet is None else f'{fleet:.3f}'} | {sat} |")
    lines += ["", "Load scale L: arrivals compressed L-fold (trace.time_scale / L). Saturated probes never count as",
              "meeting the SLO. GPUs needed: at the trace's own rate, other pools unchanged."]
    return "\n".join(lines) + "\n"


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "slo", help="highest load and fewest GPUs under a p99 latency SLO",
        description="For each configuration of an experiment: the highest arrival-rate scale it sustains with "
                    "p99 latency under the SLO, and the fewest GPUs of one pool that meet it, with their cost.")
    cmd.add_argument("experiment")
    cmd.add_argument("--p99", type=float, required=True, metavar="SECONDS", help="the p99 latency SLO")
    cmd.add_argument("--set", action="append", metavar="KEY=VALUE")
    cmd.add_argument("--pool", type=int, default=0, help="index of the pool whose GPU count is searched")
    cmd.add_argument("--max-gpus", type=int, default=1024, help="give up above this many GPUs in the pool")
    cmd.add_argument("--tolerance", type=float, default=0.05, help="relative width at which load bisection stops")
    cmd.add_argument("--out", help="folder for slo.json and slo.md (default results/<name>-slo)")
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    import math

    from sim.experiments.runner import validate_runs
    from sim.experiments.sweep import load_experiment, parse_overrides

    if not (math.isfinite(args.p99) and 0 < args.p99 <= MAX_SLO_S):
        raise ConfigError(f"--p99: expected a latency in seconds in (0, {MAX_SLO_S:g}], got {args.p99}")
    if not (math.isfinite(args.tolerance) and MIN_TOLERANCE <= args.tolerance < 1):
        raise ConfigError(f"--tolerance: expected a number in [{MIN_TOLERANCE:g}, 1), got {args.tolerance}")
    if not 1 <= args.max_gpus <= MAX_GPUS_PER_POOL:
        raise ConfigError(f"--max-gpus: expected an integer in 1..{MAX_GPUS_PER_POOL:,}, got {args.max_gpus}")
    experiment = load_experiment(args.experiment, parse_overrides(args.set or []))
    runs = experiment.runs()
    for name, cfg in runs:
        if not 0 <= args.pool < len(cfg.hardware.pools):
            raise ConfigError(f"--pool {args.pool}: run {name} has {len(cfg.hardware.pools)} pool(s)")
    if args.out is not None and not args.out.strip():
        raise ConfigError("--out: expected an output folder, got an empty path")
    out = Path(args.out) if args.out else Path("results") / f"{experiment.base.name}-slo"
    check_output_dir(out)
    validate_runs(runs)
    results = search(runs, args.p99, pool=args.pool, max_gpus=args.max_gpus, tolerance=args.tolerance)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "slo.json", json.dumps({"p99_slo_s": args.p99, "results": results}, indent=2,
                                                   allow_nan=False) + "\n")
    text = markdown(args.p99, results)
    write_text_atomic(out / "slo.md", text)
    print(text, end="")
    return 0
