"""The paper's scale (issue 9 item 7): precompute, the compiled and reference sequential replay, and the engine.

"Compiled" is `run.executor: sequential` with `run.implementation: compiled` (formerly the `sequential_fast`
executor; the stage `fast` of --only and the `fast_*` keys keep that name), "reference" the same executor with
`run.implementation: reference`. On a deterministic clustered 384-d vectors trace (`trace synth --mode
vectors`, seed 7, made by benchmarks/precompute.py's ensure_trace), each case in a fresh child process (its own
peak RSS, VmHWM): (1) the candidate precompute of the run config (`cache.retrieval: candidates`, method
--method, lists written to a fresh content-hashed folder under benchmarks/out/) — time and peak RSS; (2) the
compiled replay at 1,500 / 15,000 / 150,000 / 1,500,000 noises, LCBFU and LRU, reading those lists; the
reference on the cases of --ref-cases for the ratio; (3) the full `engine` at every capacity with --gpus A10G
(enough that the queue is not saturated: the synthetic day peaks at ~1.2 req/s x 15 s per SDXL image), its
cache by --engine-implementation (auto: the compiled core wherever it serves the run); (4) peak RSS of each;
(5) on the same trace's exact-key request sequence (its prompt ids), the compiled exact-key LRU (one noise per
prompt) beside libCacheSim's LRU request by request and in bulk (benchmarks/sequential.py's functions), with
identical hits checked. Rates are simulated requests per second of `simulate()` after the trace is loaded
(scenario build, lists read, execution, summary); the load is reported apart; the compiled replay runs twice
in its child and reports the second (the first includes numba's compile or cache load, shown in the notes).
--profile POLICY:NOISES adds one cProfiled engine case.
Prints one table and writes benchmarks/out/scale_<N>.json. Reported, never asserted.
Usage: python benchmarks/scale.py [--requests 2000000] [--method ivf] [--gpus 24] [--only fast,engine,...]
       [--capacities 1500,15000] [--policies lcbfu] [--ref-cases lcbfu:1500] [--profile lcbfu:150000]
       [--engine-implementation auto] [--trace traces/synth/ddb-2m.parquet
       --lists-dir ~/.cache/nirvana-sim/candidates]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "out"
CAPACITIES = (1_500, 15_000, 150_000, 1_500_000)
POLICIES = ("lcbfu", "lru")
STAGES = ("precompute", "fast", "reference", "engine", "libcachesim")


def _rss_gib(field: str = "VmHWM") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return 0.0


@dataclass(frozen=True)
class Setup:
    """What every case of one invocation shares: the trace, the candidate lists' method and folder, the fleet."""

    trace: str
    tag: str
    method: str
    lists_dir: str
    gpus: int

    def data(self, executor: str, implementation: str, policy: str, noises: int) -> dict[str, Any]:
        """The one-point experiment of a case (sim.experiments.sweep's grammar)."""
        return {"trace": {"path": self.trace}, "run": {"executor": executor, "implementation": implementation},
                "cache": {"policy": policy, "capacity_noises": noises, "retrieval": "candidates",
                          "candidates": {"method": self.method, "cache_dir": self.lists_dir}},
                "hardware": {"pools": [{"gpu": "a10g", "count": self.gpus}]}}


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One case in this fresh process: load the trace, then time the case's work."""
    from sim.experiments.sweep import experiment_from_data
    from sim.trace import load_trace

    cfg = experiment_from_data(spec["config"]).base
    t0 = time.perf_counter()
    trace = load_trace(cfg.trace.path, cfg.trace.limit)
    out: dict[str, Any] = {"requests": len(trace), "load_s": time.perf_counter() - t0,
                           "rss_after_load_gib": _rss_gib("VmRSS"), "load_peak_rss_gib": _rss_gib()}
    if spec["kind"] == "precompute":
        out.update(_child_precompute(cfg, trace))
    elif spec["kind"] == "simulate":
        out.update(_child_simulate(spec, cfg, trace))
    else:  # libcachesim: the trace's exact-key sequence
        out.update(_child_libcachesim(spec, trace))
    out["peak_rss_gib"] = _rss_gib()
    return out


def _child_precompute(cfg: Any, trace: Any) -> dict[str, Any]:
    """The run's candidate lists, built as its cache spec is (sim.build.BuildParts.cache_spec)."""
    from sim.build import BuildParts, build_requests, similarity_map

    t1 = time.perf_counter()
    requests, classes = build_requests(cfg, trace)
    BuildParts(cfg, requests, classes, similarity_map(cfg, trace.embedder)).cache_spec()
    return {"seconds": time.perf_counter() - t1, "prompts": int(requests.prompt_index.max()) + 1,
            "dim": int(requests.vectors.shape[1])}


def _record_caches(opened: list[Any]) -> None:
    """Keep every live cache the executors open (the compiled one knows its fallback matrix's resident rows)."""
    from sim.executors import base

    plain = base.open_cache

    def recording(spec: Any, requests: Any, implementation: str) -> Any:
        cache = plain(spec, requests, implementation)
        opened.append(cache)
        return cache

    base.open_cache = recording


def _profile_top(prof: Any) -> str:
    import io
    import pstats

    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
    return buf.getvalue()


def _child_simulate(spec: dict[str, Any], cfg: Any, trace: Any) -> dict[str, Any]:
    from sim.experiments.runner import simulate

    out: dict[str, Any] = {}
    opened: list[Any] = []
    _record_caches(opened)
    prof = None
    if spec.get("profile"):
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t1 = time.perf_counter()
    _, records, summary = simulate(cfg, trace)
    out["seconds"] = time.perf_counter() - t1
    if spec.get("again"):  # the compiled replay: the first run includes numba's compile (or its cache load)
        t1 = time.perf_counter()
        _, records, summary = simulate(cfg, trace)
        out["first_run_s"], out["seconds"] = out["seconds"], time.perf_counter() - t1
    if prof is not None:
        out["profile_top"] = _profile_top(prof)
    hits = records["k_used"] > 0
    out["implementation"] = summary.get("implementation")
    out["hit_share"] = float(hits.mean())
    out["p50_queue_s"] = float(_median(records, "queue_wait_s"))
    out["fast_path"] = {k: v for k, v in summary.items() if "fallback" in k or "listed" in k}
    rows = getattr(opened[-1], "matrix_rows", None) if opened else None
    if rows is not None:
        out["fallback_matrix_mib"] = rows * trace.vectors.shape[1] * 4 / 2**20
    return out


def _child_libcachesim(spec: dict[str, Any], trace: Any) -> dict[str, Any]:
    """The compiled replay's exact-key LRU (one noise per prompt) beside libCacheSim's, on the trace's prompt ids."""
    import numpy as np
    import sequential as seqbench

    ids = np.asarray(trace.prompt_index, dtype=np.int64)
    num_ids = int(ids.max()) + 1
    cap = spec["objects"]
    seqbench.replay(seqbench.make_scenario(ids[:1000], num_ids, cap, "lru", (25,)))  # compile
    fast_s, rec = seqbench.timed(lambda: seqbench.replay(
        seqbench.make_scenario(ids, num_ids, cap, "lru", (25,))), spec["repeats"])
    fast_hits = seqbench.hits_of(rec)
    rbr_s, lcs_hits = seqbench.timed(lambda: seqbench.libcachesim_rbr(ids, cap), spec["repeats"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seq.oracleGeneral.bin"
        seqbench.write_oracle_general(ids, path)
        bulk_s, misses = seqbench.timed(lambda: seqbench.libcachesim_bulk(path, cap), spec["repeats"])
    n = len(ids)
    return {"seconds": fast_s, "objects": cap, "fast_req_s": n / fast_s, "libcachesim_rbr_req_s": n / rbr_s,
            "libcachesim_bulk_req_s": n / bulk_s, "fast_over_rbr": rbr_s / fast_s,
            "fast_over_bulk": bulk_s / fast_s, "hit_share": float(fast_hits.mean()),
            "identical_hits_rbr": bool(np.array_equal(fast_hits, lcs_hits)),
            "same_misses_bulk": misses == int((~fast_hits).sum())}


def _median(records: Any, column: str) -> float:
    import numpy as np

    try:
        col = records[column]
    except KeyError:
        return float("nan")
    return float(np.nanmedian(col)) if len(col) else float("nan")


def spawn(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}",
                "stderr_tail": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2_000_000, help="requests of the generated trace")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--method", default="ivf", choices=("exact", "ivf", "hnsw"))
    ap.add_argument("--gpus", type=int, default=24, help="A10G GPUs of the engine cases")
    ap.add_argument("--engine-implementation", default="auto", choices=("auto", "reference", "compiled"),
                    help="run.implementation of the engine cases (auto: the compiled cache core where it serves)")
    ap.add_argument("--capacities", default=",".join(map(str, CAPACITIES)), help="noises, comma-separated")
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated")
    ap.add_argument("--ref-cases", default="lcbfu:1500,lru:150000", help="POLICY:NOISES the reference replays")
    ap.add_argument("--objects", type=int, default=15_000, help="cache size (prompts) of the libCacheSim case")
    ap.add_argument("--repeats", type=int, default=1, help="repeats of the libCacheSim case (median)")
    ap.add_argument("--only", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    ap.add_argument("--profile", default="", help="POLICY:NOISES: cProfile that engine case (top by tottime)")
    ap.add_argument("--trace", help="an existing canonical trace instead of the generated clustered one "
                    "(e.g. traces/synth/ddb-2m.parquet from `make trace-2m`); --requests is then ignored")
    ap.add_argument("--lists-dir", help="read candidate lists from this folder (e.g. the default cache "
                    "~/.cache/nirvana-sim/candidates) instead of benchmarks/out/; not with the precompute stage")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    return ap


def _setup(ap: argparse.ArgumentParser, args: argparse.Namespace, stages: set[str]) -> Setup:
    """The trace (given, or generated) and the candidate lists' folder of this invocation."""
    from precompute import ensure_trace

    if args.lists_dir and "precompute" in stages:
        ap.error("--lists-dir reads existing lists; the precompute stage builds fresh ones in benchmarks/out/ "
                 "(drop one of them)")
    if args.trace:
        if not Path(args.trace).is_file():
            ap.error(f"--trace {args.trace}: no such file")
        trace = str(Path(args.trace).resolve())
        tag = Path(args.trace).stem
    else:
        trace, tag = str(ensure_trace(args.requests, args.dim)), str(args.requests)
    lists_dir = str(Path(args.lists_dir).expanduser()) if args.lists_dir else str(
        OUT / f"scale_lists_{args.method}_{tag}")
    return Setup(trace, tag, args.method, lists_dir, args.gpus)


def _case(rows: list[dict[str, Any]], stage: str, label: str, spec: dict[str, Any]) -> None:
    """Run one case in a child, append its row and print it."""
    t0 = time.perf_counter()
    res = spawn(spec)
    res.update({"stage": stage, "case": label, "wall_s": time.perf_counter() - t0})
    if "seconds" in res:
        res["req_s"] = res["requests"] / res["seconds"]
    rows.append(res)
    print(json.dumps({k: v for k, v in res.items() if k not in ("profile_top", "stderr_tail")}), flush=True)
    if "profile_top" in res:
        print(res["profile_top"], flush=True)


def _policy_noises(item: str) -> tuple[str, int]:
    policy, noises = item.split(":")
    return policy, int(noises)


def _sequential_cases(args: argparse.Namespace, setup: Setup, stages: set[str], rows: list[dict[str, Any]]) -> None:
    """The compiled replay at every policy and capacity, then the reference on --ref-cases."""
    if "fast" in stages:
        for policy in args.policies.split(","):
            for noises in map(int, args.capacities.split(",")):
                _case(rows, "seq compiled", f"{policy} {noises:,}",
                      {"kind": "simulate", "config": setup.data("sequential", "compiled", policy, noises),
                       "again": True})
    if "reference" in stages:
        for policy, noises in map(_policy_noises, args.ref_cases.split(",")):
            _case(rows, "seq reference", f"{policy} {noises:,}",
                  {"kind": "simulate", "config": setup.data("sequential", "reference", policy, noises)})


def _engine_cases(args: argparse.Namespace, setup: Setup, rows: list[dict[str, Any]]) -> None:
    impl = args.engine_implementation
    for policy in args.policies.split(","):
        for noises in map(int, args.capacities.split(",")):
            _case(rows, "engine", f"{policy} {noises:,}",
                  {"kind": "simulate", "config": setup.data("engine", impl, policy, noises)})
    if args.profile:
        policy, noises = _policy_noises(args.profile)
        _case(rows, "engine", f"{policy} {noises:,} (cProfile)",
              {"kind": "simulate", "config": setup.data("engine", impl, policy, noises), "profile": True})


def _run_stages(args: argparse.Namespace, setup: Setup, stages: set[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "precompute" in stages:
        shutil.rmtree(setup.lists_dir, ignore_errors=True)  # a fresh build, not a cache read
        _case(rows, "precompute", args.method,
              {"kind": "precompute", "config": setup.data("sequential", "compiled", "lcbfu", 1500)})
    _sequential_cases(args, setup, stages, rows)
    if "engine" in stages:
        _engine_cases(args, setup, rows)
    if "libcachesim" in stages:
        _case(rows, "libcachesim", f"exact-key LRU {args.objects:,} prompts",
              {"kind": "libcachesim", "config": setup.data("sequential", "compiled", "lru", 1500),
               "objects": args.objects, "repeats": args.repeats})
    return rows


def _notes(r: dict[str, Any]) -> str:
    if r["stage"] == "libcachesim":
        return (f"libCacheSim rbr {r['libcachesim_rbr_req_s']:,.0f}/s (compiled {r['fast_over_rbr']:.2f}x), "
                f"bulk {r['libcachesim_bulk_req_s']:,.0f}/s ({r['fast_over_bulk']:.2f}x), "
                f"identical hits {r['identical_hits_rbr']}/{r['same_misses_bulk']}")
    if "hit_share" in r:
        notes = f"hits {r['hit_share']:.3f}"
        if r["stage"] == "engine":
            notes += f", p50 queue {r['p50_queue_s']:.2f} s, {r.get('implementation')} cache"
        if "first_run_s" in r:
            notes += f", first run {r['first_run_s']:.2f} s (compile)"
        if "fallback_matrix_mib" in r:
            notes += f", fallback matrix {r['fallback_matrix_mib']:.1f} MiB"
        return notes
    if r["stage"] == "precompute":
        return f"{r['prompts']:,} prompts x {r['dim']}-d"
    return ""


def _print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'stage':16s} {'case':30s} {'requests':>9s} {'load s':>7s} {'run s':>8s} {'req/s':>11s} "
          f"{'peak RSS GiB':>12s}  notes")
    for r in rows:
        if "error" in r:
            print(f"{r['stage']:16s} {r['case']:30s} ERROR {r['error']}")
            continue
        print(f"{r['stage']:16s} {r['case']:30s} {r['requests']:9,d} {r['load_s']:7.1f} {r['seconds']:8.2f} "
              f"{r['req_s']:11,.0f} {r['peak_rss_gib']:12.2f}  {_notes(r)}")


def main() -> None:
    ap = _parser()
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    from sequential import machine

    OUT.mkdir(parents=True, exist_ok=True)
    stages = set(args.only.split(","))
    setup = _setup(ap, args, stages)
    rows = _run_stages(args, setup, stages)
    _print_table(rows)
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
              "load_average": os.getloadavg(), "command": " ".join(sys.argv), "trace": setup.trace,
              "method": args.method, "gpus": args.gpus, "engine_implementation": args.engine_implementation,
              "rows": rows}
    path = OUT / f"scale_{setup.tag}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
