"""The paper's scale (issue 9 item 7): precompute, sequential_fast, sequential and engine at every paper capacity.

On a deterministic clustered 384-d vectors trace (`trace synth --mode vectors`, seed 7, made by
benchmarks/precompute.py's ensure_trace), each case in a fresh child process (its own peak RSS, VmHWM):
(1) the candidate precompute of the run config (`cache.retrieval: candidates`, method --method, lists
written to a fresh content-hashed folder under benchmarks/out/) — time and peak RSS; (2) `sequential_fast`
at 1,500 / 15,000 / 150,000 / 1,500,000 noises, LCBFU and LRU, reading those lists; the reference
`sequential` on the cases of --ref-cases for the ratio; (3) the full `engine` at every capacity with --gpus
A10G (enough that the queue is not saturated: the synthetic day peaks at ~1.2 req/s x 15 s per SDXL image);
(4) peak RSS of each; (5) on the same trace's exact-key request sequence (its prompt ids), sequential_fast's
exact-key LRU (one noise per prompt) beside libCacheSim's LRU request by request and in bulk
(benchmarks/sequential.py's functions), with identical hits checked. Rates are simulated requests per second
of `simulate()` after the trace is loaded (scenario build, lists read, execution, summary); the load is
reported apart; sequential_fast runs twice in its child and reports the second (the first includes numba's
compile or cache load, shown in the notes). --profile POLICY:NOISES adds one cProfiled engine case.
Prints one table and writes benchmarks/out/scale_<N>.json. Reported, never asserted.
Usage: python benchmarks/scale.py [--requests 2000000] [--method ivf] [--gpus 24] [--only fast,engine,...]
       [--capacities 1500,15000] [--policies lcbfu] [--ref-cases lcbfu:1500] [--profile lcbfu:150000]
       [--trace traces/synth/ddb-2m.parquet --lists-dir ~/.cache/nirvana-sim/candidates]
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


def run_data(trace: str, executor: str, policy: str, noises: int, method: str, lists_dir: str,
             gpus: int) -> dict[str, Any]:
    return {"trace": {"path": trace}, "run": {"executor": executor},
            "cache": {"policy": policy, "capacity_noises": noises, "retrieval": "candidates",
                      "candidates": {"method": method, "cache_dir": lists_dir}},
            "hardware": {"pools": [{"gpu": "a10g", "count": gpus}]}}


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One case in this fresh process: load the trace, then time the case's work."""
    from sim.experiments.sweep import experiment_from_data
    from sim.workload.trace import load_trace

    cfg = experiment_from_data(spec["config"]).base
    t0 = time.perf_counter()
    trace = load_trace(cfg.trace.path, cfg.trace.limit)
    out: dict[str, Any] = {"requests": len(trace), "load_s": time.perf_counter() - t0,
                           "rss_after_load_gib": _rss_gib("VmRSS"), "load_peak_rss_gib": _rss_gib()}
    if spec["kind"] == "precompute":
        from sim.build import build_requests, make_store, similarity_map

        t1 = time.perf_counter()
        requests, _ = build_requests(cfg, trace)
        make_store(cfg, requests.vectors.shape[1], similarity_map(cfg, trace.embedder), requests=requests)
        out["seconds"] = time.perf_counter() - t1
        out["prompts"] = int(requests.prompt_index.max()) + 1
        out["dim"] = int(requests.vectors.shape[1])
    elif spec["kind"] == "simulate":
        from sim.experiments.runner import simulate

        matrix_rows: list[int] = []
        if cfg.run.executor == "sequential_fast":  # the fallback matrix's resident rows (an executor attribute)
            from sim.executors.sequential_fast import FastSequential

            plain_run = FastSequential.run

            def recording(self: FastSequential, scenario: Any) -> Any:
                rec = plain_run(self, scenario)
                matrix_rows.append(self.matrix_rows)
                return rec

            FastSequential.run = recording  # type: ignore[method-assign]
        prof = None
        if spec.get("profile"):
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t1 = time.perf_counter()
        _, records, summary = simulate(cfg, trace)
        out["seconds"] = time.perf_counter() - t1
        if spec.get("again"):  # sequential_fast: the first run includes numba's compile (or its cache load)
            t1 = time.perf_counter()
            _, records, summary = simulate(cfg, trace)
            out["first_run_s"], out["seconds"] = out["seconds"], time.perf_counter() - t1
        if prof is not None:
            import io
            import pstats

            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
            out["profile_top"] = buf.getvalue()
        hits = records["k_used"] > 0
        out["hit_share"] = float(hits.mean())
        out["p50_queue_s"] = float(_median(records, "queue_wait_s"))
        out["fast_path"] = {k: v for k, v in summary.items() if "fallback" in k or "listed" in k}
        if matrix_rows:
            out["fallback_matrix_mib"] = matrix_rows[-1] * trace.vectors.shape[1] * 4 / 2**20
    else:  # libcachesim: the trace's exact-key sequence
        import numpy as np
        import sequential as seqbench

        from sim.executors.sequential_fast import FastSequential

        ids = np.asarray(trace.prompt_index, dtype=np.int64)
        num_ids = int(ids.max()) + 1
        cap = spec["objects"]
        seqbench.FastSequential().run(seqbench.make_scenario(ids[:1000], num_ids, cap, "lru", (25,)))  # compile
        fast_s, rec = seqbench.timed(lambda: FastSequential().run(
            seqbench.make_scenario(ids, num_ids, cap, "lru", (25,))), spec["repeats"])
        fast_hits = seqbench.hits_of(rec)
        rbr_s, lcs_hits = seqbench.timed(lambda: seqbench.libcachesim_rbr(ids, cap), spec["repeats"])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "seq.oracleGeneral.bin"
            seqbench.write_oracle_general(ids, path)
            bulk_s, misses = seqbench.timed(lambda: seqbench.libcachesim_bulk(path, cap), spec["repeats"])
        n = len(ids)
        out.update({"seconds": fast_s, "objects": cap, "fast_req_s": n / fast_s, "libcachesim_rbr_req_s": n / rbr_s,
                    "libcachesim_bulk_req_s": n / bulk_s, "fast_over_rbr": rbr_s / fast_s,
                    "fast_over_bulk": bulk_s / fast_s, "hit_share": float(fast_hits.mean()),
                    "identical_hits_rbr": bool(np.array_equal(fast_hits, lcs_hits)),
                    "same_misses_bulk": misses == int((~fast_hits).sum())})
    out["peak_rss_gib"] = _rss_gib()
    return out


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2_000_000, help="requests of the generated trace")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--method", default="ivf", choices=("exact", "ivf", "hnsw"))
    ap.add_argument("--gpus", type=int, default=24, help="A10G GPUs of the engine cases")
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
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    from precompute import ensure_trace
    from sequential import machine

    OUT.mkdir(parents=True, exist_ok=True)
    stages = set(args.only.split(","))
    capacities = [int(c) for c in args.capacities.split(",")]
    policies = args.policies.split(",")
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

    def data(executor: str, policy: str, noises: int) -> dict[str, Any]:
        return run_data(trace, executor, policy, noises, args.method, lists_dir, args.gpus)

    rows: list[dict[str, Any]] = []

    def case(stage: str, label: str, spec: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        res = spawn(spec)
        res.update({"stage": stage, "case": label, "wall_s": time.perf_counter() - t0})
        if "seconds" in res:
            res["req_s"] = res["requests"] / res["seconds"]
        rows.append(res)
        print(json.dumps({k: v for k, v in res.items() if k not in ("profile_top", "stderr_tail")}), flush=True)
        if "profile_top" in res:
            print(res["profile_top"], flush=True)

    if "precompute" in stages:
        shutil.rmtree(lists_dir, ignore_errors=True)  # a fresh build, not a cache read
        case("precompute", args.method, {"kind": "precompute", "config": data("sequential_fast", "lcbfu", 1500)})
    for policy in policies:
        for noises in capacities:
            if "fast" in stages:
                case("sequential_fast", f"{policy} {noises:,}",
                     {"kind": "simulate", "config": data("sequential_fast", policy, noises), "again": True})
    if "reference" in stages:
        for item in args.ref_cases.split(","):
            policy, noises = item.split(":")[0], int(item.split(":")[1])
            case("sequential", f"{policy} {noises:,}",
                 {"kind": "simulate", "config": data("sequential", policy, noises)})
    if "engine" in stages:
        for policy in policies:
            for noises in capacities:
                case("engine", f"{policy} {noises:,}", {"kind": "simulate", "config": data("engine", policy, noises)})
        if args.profile:
            policy, noises = args.profile.split(":")[0], int(args.profile.split(":")[1])
            case("engine", f"{policy} {noises:,} (cProfile)",
                 {"kind": "simulate", "config": data("engine", policy, noises), "profile": True})
    if "libcachesim" in stages:
        case("libcachesim", f"exact-key LRU {args.objects:,} prompts",
             {"kind": "libcachesim", "config": data("sequential_fast", "lru", 1500), "objects": args.objects,
              "repeats": args.repeats})

    print(f"\n{'stage':16s} {'case':30s} {'requests':>9s} {'load s':>7s} {'run s':>8s} {'req/s':>11s} "
          f"{'peak RSS GiB':>12s}  notes")
    for r in rows:
        if "error" in r:
            print(f"{r['stage']:16s} {r['case']:30s} ERROR {r['error']}")
            continue
        notes = ""
        if r["stage"] == "libcachesim":
            notes = (f"libCacheSim rbr {r['libcachesim_rbr_req_s']:,.0f}/s (fast {r['fast_over_rbr']:.2f}x), "
                     f"bulk {r['libcachesim_bulk_req_s']:,.0f}/s ({r['fast_over_bulk']:.2f}x), "
                     f"identical hits {r['identical_hits_rbr']}/{r['same_misses_bulk']}")
        elif "hit_share" in r:
            notes = f"hits {r['hit_share']:.3f}" + (f", p50 queue {r['p50_queue_s']:.2f} s"
                                                   if r["stage"] == "engine" else "")
            if "first_run_s" in r:
                notes += f", first run {r['first_run_s']:.2f} s (compile)"
            if "fallback_matrix_mib" in r:
                notes += f", fallback matrix {r['fallback_matrix_mib']:.1f} MiB"
        elif r["stage"] == "precompute":
            notes = f"{r['prompts']:,} prompts x {r['dim']}-d"
        print(f"{r['stage']:16s} {r['case']:30s} {r['requests']:9,d} {r['load_s']:7.1f} {r['seconds']:8.2f} "
              f"{r['req_s']:11,.0f} {r['peak_rss_gib']:12.2f}  {notes}")
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
              "load_average": os.getloadavg(), "command": " ".join(sys.argv), "trace": trace,
              "method": args.method, "gpus": args.gpus, "rows": rows}
    path = OUT / f"scale_{tag}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
