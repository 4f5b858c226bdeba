"""Sequential replay speed: the compiled replay (numba, and plain Python) vs the reference vs libCacheSim's LRU.

The compiled replay is `run.executor: sequential` with `run.implementation: compiled` (formerly the
`sequential_fast` executor; its report keys keep the `fast_` prefix), the reference the same executor with
`run.implementation: reference`; libCacheSim's LRU runs request by request and in bulk, all on one
deterministic exact-key request sequence.

The headline case is an exact-key LRU cache evicting per noise with one cached K (one noise per prompt, so
it is an object cache like libCacheSim's): compiled and libCacheSim must agree on every request's hit, and the
reference's records must equal the compiled path's. Further rows time NIRVANA's five K per prompt (LRU, LCBFU)
and synthetic candidate lists. Figures are medians of --repeats runs; reported, never asserted.
Usage: python benchmarks/sequential.py [--requests 1000000] [--ids 100000] [--capacity 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from sim.cache.core import jit, kernel  # noqa: E402
from sim.cache.kselect import KTable  # noqa: E402
from sim.cache.params import AdmissionParams, PolicyParams  # noqa: E402
from sim.cache.spec import CacheSpec  # noqa: E402
from sim.executors import EXECUTORS  # noqa: E402
from sim.hardware.profiles import Frontend, LatencyTable, StepLatency, StorageTier  # noqa: E402
from sim.retrieval.precompute import Candidates  # noqa: E402
from sim.scenario import Gpu, Requests, Scenario  # noqa: E402
from sim.scenario.modes.nirvana import Nirvana  # noqa: E402
from sim.scenario.records import Records  # noqa: E402

ALPHA = 0.9
SEED = 8
PAPER_CAPACITIES = (1_500, 15_000, 150_000, 1_500_000)


def sequence(num_requests: int, num_ids: int, seed: int = SEED) -> np.ndarray:
    """Object ids with P(rank r) ∝ r^-ALPHA, ranks shuffled (tests/test_libcachesim.py's generator)."""
    rng = np.random.default_rng(seed)
    weights = np.arange(1, num_ids + 1, dtype=np.float64) ** -ALPHA
    ranks = rng.choice(num_ids, size=num_requests, p=weights / weights.sum())
    return rng.permutation(num_ids)[ranks].astype(np.int64)


def make_scenario(ids: np.ndarray, num_ids: int, capacity: int, policy: str, ks: tuple[int, ...],
                  candidates: Candidates | None = None) -> Scenario:
    """NIRVANA over ``ids`` with ``capacity`` prompts of ``ks`` (noise unit): exact-key retrieval, or the given
    candidate lists (``cache.retrieval: candidates``)."""
    n = len(ids)
    req = Requests(arrival_s=np.arange(n, dtype=np.float64), vectors=np.ones((num_ids, 1), np.float32),
                   prompt_index=ids, partition=np.zeros(n, np.int64), noise_bytes=np.ones(n, np.int64),
                   num_steps=np.full(n, 50, np.int64), latency_class=np.zeros(n, np.int64), step_factor=np.ones(n))
    spec = CacheSpec(ks=tuple(sorted(ks)), table=KTable(), policy=policy, unit="noise", policy_params=PolicyParams(),
                     admission="always", admission_params=AdmissionParams(), capacity_noises=capacity * len(ks),
                     capacity_bytes=None, retrieval="exact_key" if candidates is None else "candidates",
                     unit_bytes=req.noise_bytes, candidates=candidates)
    table = LatencyTable("bench", "bench/gpu", (1,), (StepLatency(0.02, 0.0, 0.0),))
    return Scenario(req, Nirvana(req, spec), (Gpu("bench", (table,)),), "central",
                    Frontend(0.0, 0.0, 0.0), StorageTier(0.0, 1e9, 0.0, 1e9), False)


def replay(scenario: Scenario, implementation: str = "compiled") -> Records:
    """The sequential executor's records of ``scenario`` on a fresh cache of ``implementation``."""
    return EXECUTORS.get("sequential")().run(scenario, implementation)


def synthetic_candidates(ids: np.ndarray, num_ids: int, per_request: int, seed: int = 1) -> Candidates:
    """Speed-only lists: the request's own prompt (when seen before) at 0.99, then random prompts, descending."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    seen = np.zeros(n, dtype=bool)
    first = np.full(num_ids, n, dtype=np.int64)
    np.minimum.at(first, ids, np.arange(n))
    seen[first[ids] < np.arange(n)] = True
    others = ids[rng.integers(0, n, size=(n, per_request - 1))]
    prompts = np.concatenate([ids[:, None], others], axis=1)
    sims = np.sort(rng.uniform(0.6, 0.98, size=(n, per_request)).astype(np.float32), axis=1)[:, ::-1].copy()
    sims[:, 0] = 0.99
    keep = np.ones((n, per_request), dtype=bool)
    keep[:, 0] = seen
    counts = keep.sum(axis=1)
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    return Candidates(offsets, prompts[keep].astype(np.int32), sims[keep], np.zeros(n, dtype=bool), 0.5)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def loop_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds inside the compiled loop alone (the cache's setup, the executor and records excluded)."""
    inner = kernel.replay
    spent: list[float] = []

    def wrapped(*args: Any) -> Any:
        t0 = time.perf_counter()
        result = inner(*args)
        spent.append(time.perf_counter() - t0)
        return result

    times = []
    kernel.replay = wrapped
    try:
        for _ in range(repeats):
            spent.clear()
            fn()
            times.append(sum(spent))
    finally:
        kernel.replay = inner
    return statistics.median(times)


def hits_of(rec: Records) -> np.ndarray:
    return rec["k_used"] > 0


def libcachesim_rbr(ids: np.ndarray, capacity: int) -> np.ndarray:
    import libcachesim as lcs  # GPLv3+: the benchmark's oracle, never imported by sim/

    cache = lcs.LRU(capacity)
    req = lcs.Request()
    req.obj_size = 1
    hits = np.zeros(len(ids), dtype=bool)
    for t, obj in enumerate(ids.tolist()):
        req.obj_id = obj
        req.clock_time = t
        hits[t] = cache.get(req)
    return hits


def write_oracle_general(ids: np.ndarray, path: Path) -> None:
    """libCacheSim's oracleGeneral binary trace: (u32 time, u64 id, u32 size, i64 next access) per request."""
    rec = np.zeros(len(ids), dtype=np.dtype([("t", "<u4"), ("id", "<u8"), ("size", "<u4"), ("next", "<i8")]))
    rec["t"] = np.arange(len(ids))
    rec["id"] = ids
    rec["size"] = 1
    rec["next"] = -1
    assert rec.dtype.itemsize == struct.calcsize("<IQIq")
    path.write_bytes(rec.tobytes())


def libcachesim_bulk(path: Path, capacity: int) -> int:
    import libcachesim as lcs

    reader = lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE)
    cache = lcs.LRU(capacity)
    miss_ratio, _ = cache.process_trace(reader)
    return round(miss_ratio * (path.stat().st_size // 24))


def machine() -> str:
    from sim.profiling.host import hardware_description

    return f"{hardware_description()}, Python {platform.python_version()}"


def pure_python_child(args: argparse.Namespace) -> None:
    """Runs under NUMBA_DISABLE_JIT=1: the same loop as plain Python over lists."""
    assert not jit.COMPILED
    ids = sequence(args.requests, args.ids)[: args.pure_requests]
    sec, rec = timed(lambda: replay(make_scenario(ids, args.ids, args.capacity, "lru", (25,))), 1)
    print(json.dumps({"seconds": sec, "requests": len(ids), "hits": int(hits_of(rec).sum())}))


def big(args: argparse.Namespace) -> None:
    """A long replay: seconds and peak memory (records included) of one run per policy, no references."""
    import resource

    t0 = time.perf_counter()
    ids = sequence(args.requests, args.ids)
    print(f"{'generation_s':42s} {time.perf_counter() - t0:.1f}")
    five = (5, 10, 15, 20, 25)
    for policy in ("lru", "lcbfu"):
        sc = make_scenario(ids, args.ids, 1_500_000 // len(five), policy, five)
        t0 = time.perf_counter()
        rec = replay(sc)
        sec = time.perf_counter() - t0
        rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"{policy + '_1500000_noises_s':42s} {sec:.1f} ({len(ids) / sec:,.0f} req/s, "
              f"{int(hits_of(rec).sum()):,} hits, peak RSS so far {rss_gib:.2f} GiB)", flush=True)
        del rec, sc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--ids", type=int, default=100_000)
    ap.add_argument("--capacity", type=int, default=10_000, help="objects (prompts) the cache holds")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ref-requests", type=int, default=1_000_000, help="prefix the reference executor replays")
    ap.add_argument("--pure-requests", type=int, default=200_000, help="prefix the plain-Python loop replays")
    ap.add_argument("--big", action="store_true",
                    help="only the compiled replay at 5 K per prompt, LRU and LCBFU at 1,500,000 noises, with peak RSS "
                         "(e.g. --requests 14000000 --ids 1400000)")
    ap.add_argument("--child", choices=["pure"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "pure":
        pure_python_child(args)
        return
    if args.big:
        big(args)
        return
    n = args.requests
    ids = sequence(n, args.ids)
    cap = args.capacity
    out: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "requests": n,
                           "ids": args.ids, "alpha": ALPHA, "capacity": cap, "compiled": jit.COMPILED}

    def fast(policy: str = "lru", ks: tuple[int, ...] = (25,)) -> Records:
        return replay(make_scenario(ids, args.ids, cap, policy, ks))

    t0 = time.perf_counter()
    fast()
    out["fast_first_call_s"] = time.perf_counter() - t0  # compile, or load numba's on-disk cache
    sec, rec = timed(fast, args.repeats)
    fast_hits = hits_of(rec)
    out["fast_req_s"] = n / sec
    out["fast_loop_only_req_s"] = n / loop_seconds(fast, args.repeats)

    sec, lcs_hits = timed(lambda: libcachesim_rbr(ids, cap), args.repeats)
    out["libcachesim_rbr_req_s"] = n / sec
    out["identical_hits_vs_libcachesim"] = bool(np.array_equal(fast_hits, lcs_hits))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seq.oracleGeneral.bin"
        write_oracle_general(ids, path)
        sec, misses = timed(lambda: libcachesim_bulk(path, cap), args.repeats)
    out["libcachesim_bulk_req_s"] = n / sec
    out["same_misses_as_libcachesim_bulk"] = misses == int((~fast_hits).sum())
    out["fast_over_libcachesim_rbr"] = out["fast_req_s"] / out["libcachesim_rbr_req_s"]
    out["fast_over_libcachesim_bulk"] = out["fast_req_s"] / out["libcachesim_bulk_req_s"]

    m = min(args.ref_requests, n)
    sec, ref = timed(lambda: replay(make_scenario(ids[:m], args.ids, cap, "lru", (25,)), "reference"), 1)
    out["reference_req_s"] = m / sec
    sub = replay(make_scenario(ids[:m], args.ids, cap, "lru", (25,)))
    out["reference_records_equal"] = all(
        np.array_equal(ref[c], sub[c], equal_nan=ref[c].dtype.kind == "f") for c in ref)

    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    child = subprocess.run([sys.executable, __file__, "--child", "pure", "--requests", str(n), "--ids",
                            str(args.ids), "--capacity", str(cap), "--pure-requests", str(args.pure_requests)],
                           env=env, capture_output=True, text=True, check=True)
    pure = json.loads(child.stdout.strip().splitlines()[-1])
    out["pure_python_req_s"] = pure["requests"] / pure["seconds"]
    out["pure_python_hits_match"] = pure["hits"] == int(fast_hits[: pure["requests"]].sum())

    five = (5, 10, 15, 20, 25)
    for policy in ("lru", "lcbfu"):
        sec, _ = timed(lambda policy=policy: fast(policy, five), args.repeats)  # type: ignore[misc]
        out[f"fast_5k_{policy}_req_s"] = n / sec
    for noises in PAPER_CAPACITIES:  # the paper's cache sizes, in noises (5 per prompt)
        sec, _ = timed(lambda noises=noises: replay(  # type: ignore[misc]
            make_scenario(ids, args.ids, noises // len(five), "lcbfu", five)), args.repeats)
        out[f"fast_5k_lcbfu_{noises}_noises_req_s"] = n / sec
    cand = synthetic_candidates(ids, args.ids, 8)
    sec, _ = timed(lambda: replay(make_scenario(ids, args.ids, cap, "lcbfu", five, cand)), args.repeats)
    out["fast_candidates8_lcbfu_req_s"] = n / sec
    for key, value in out.items():
        print(f"{key:42s} {value:,.0f}" if isinstance(value, float) and value > 100 else f"{key:42s} {value}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
