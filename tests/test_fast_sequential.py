"""Differential: the integer-array replay (sequential_fast) writes the reference sequential executor's records."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sim.cache.kselect import KTable
from sim.cache.policies import POLICIES
from sim.cache.store import CacheStore
from sim.errors import ConfigError
from sim.executors import EXECUTORS, replay_loop
from sim.executors.sequential_fast import FastSequential, check_candidates
from sim.experiments.build import build_scenario, similarity_map
from sim.experiments.config import FAST_POLICIES, RunConfig, experiment_from_data
from sim.experiments.runner import simulate
from sim.hardware.profiles import StepLatency
from sim.retrieval.cosine import cosines
from sim.retrieval.exact_cosine import ExactCosine
from sim.retrieval.exact_key import ExactKey
from sim.retrieval.precompute import Candidates, raw_floor
from sim.scenario import Requests, Scenario
from sim.scenario.modes.nirvana import Nirvana
from sim.scenario.records import HOLE_HIT, Records
from sim.workload.simmap import load_map
from sim.workload.trace import Trace, load_trace
from tests.helpers import scenario, uniform_gpus

#: every column the sequential executor writes
COLUMNS = ("arrival_s", "num_steps", "service_s", "similarity", "similarity_raw", "matched_entry", "k_selected",
           "k_used", "hole", "outcome", "gpu_steps", "admit_s", "admitted_entry", "num_evicted")
CAPACITIES = (150, 1500, 5000)  # noises, as tests/golden_gen.py
# The policies the integer-array loop implements (the others are refused: tested below).
CASES = [(name, unit) for name in POLICIES.names() if name in replay_loop.POLICY_CODES
         for unit in POLICIES.get(name).units]
MAP = load_map("profiles/similarity/minilm-to-clip.yaml")
LOWEST_THRESHOLD = KTable().lowest
#: raw MiniLM cosine below which the shipped map cannot exceed the lowest threshold (the precompute's rule,
#: so the test follows the shipped map when it is refitted)
FLOOR = raw_floor(LOWEST_THRESHOLD, MAP.x, MAP.y)


class CanonicalCosine(ExactCosine):
    """ExactCosine scoring with the row-independent routine the fast path's lists and fallback use.

    ExactCosine's BLAS product can change a row's cosine in the last bit with the row's slot, so two exact
    searches over the same prompts in another layout may disagree; this reference removes that noise."""

    def nearest(self, vector: np.ndarray, text_key: int, request: int = -1) -> tuple[int, float] | None:
        if not self._slot_of:
            return None
        ids = self._ids[: self._top]
        sims = cosines(self._mat[: self._top], vector)
        sims[ids < 0] = -np.inf
        best = sims.max()
        slots = np.flatnonzero(sims == best)
        return int(ids[slots[np.argmin(ids[slots])]]), float(best)


@cache
def _trace() -> Trace:
    return load_trace("traces/tiny/trace.parquet")


def _config(policy: str, unit: str, capacity: int, retrieval: str, scope: str = "shared") -> RunConfig:
    return experiment_from_data({"name": "fast", "run": {"executor": "sequential"},
                                 "cache": {"policy": policy, "eviction_unit": unit, "capacity_noises": capacity,
                                           "retrieval": retrieval, "scope": scope}}).base


def _with_store(sc: Scenario, store: CacheStore) -> Scenario:
    assert isinstance(sc.mode, Nirvana)
    return Scenario(sc.requests, Nirvana(sc.requests, store), sc.gpus, sc.router, sc.frontend, sc.tier)


def _canonical_store(like: CacheStore, dim: int) -> CacheStore:
    return CacheStore(ks=like.ks, table=like.table, policy=POLICIES.get(like.policy.name)(like.policy.unit),
                      make_retriever=lambda: CanonicalCosine(dim), capacity_noises=like.capacity_noises,
                      capacity_bytes=like.capacity_bytes, similarity_scale=like._scale)


def brute_force_candidates(req: Requests, floor: float, cap: int) -> Candidates:
    """Per request: the earlier distinct prompts of its partition with cosine >= floor, best first, at most cap."""
    n = len(req)
    lists: list[np.ndarray] = []
    sims: list[np.ndarray] = []
    truncated = np.zeros(n, dtype=bool)
    seen: dict[int, list[int]] = {}  # partition -> its prompts in order of first request
    seen_set: dict[int, set[int]] = {}
    for i in range(n):
        p, q = int(req.partition[i]), int(req.prompt_index[i])
        earlier = np.asarray(seen.get(p, []), dtype=np.int64)
        s = cosines(req.vectors[earlier], req.vectors[q]) if len(earlier) else np.zeros(0, np.float32)
        keep = np.flatnonzero(s >= floor)
        order = keep[np.argsort(-s[keep], kind="stable")]
        truncated[i] = len(order) > cap
        order = order[:cap]
        lists.append(earlier[order].astype(np.int32))
        sims.append(s[order])
        if q not in seen_set.setdefault(p, set()):
            seen_set[p].add(q)
            seen.setdefault(p, []).append(q)
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(c) for c in lists])
    return Candidates(offsets, np.concatenate(lists), np.concatenate(sims).astype(np.float32), truncated, floor)


def _without_below_floor(rec: Records, floor: float) -> Records:
    """The reference's records as candidate lists see them: a nearest prompt below the floor is not known."""
    out = {k: v.copy() for k, v in rec.items()}
    below = np.isfinite(rec["similarity_raw"]) & (rec["similarity_raw"] < floor)
    assert not rec["k_selected"][below].any() and not rec["hole"][below].any()
    out["similarity"][below] = out["similarity_raw"][below] = np.nan
    out["matched_entry"][below] = -1
    return out


def assert_same_records(ref: Records, fast: Records) -> None:
    for col in COLUMNS:
        a, b = ref[col], fast[col]
        equal = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else a == b
        bad = np.flatnonzero(~equal)
        assert not len(bad), f"column {col}: first difference at request {bad[0]}: {a[bad[0]]} vs {b[bad[0]]}"


def _exact_key_pair(policy: str, unit: str, capacity: int, scope: str = "shared") -> tuple[Records, Records]:
    cfg = _config(policy, unit, capacity, "exact_key", scope)
    ref = EXECUTORS.get("sequential")().run(build_scenario(cfg, _trace())[0])
    fast = EXECUTORS.get("sequential_fast")().run(build_scenario(cfg, _trace())[0])
    return ref, fast


@pytest.mark.parametrize("capacity", CAPACITIES)
@pytest.mark.parametrize(("policy", "unit"), CASES)
def test_exact_key_records_equal_reference(policy: str, unit: str, capacity: int) -> None:
    ref, fast = _exact_key_pair(policy, unit, capacity)
    assert_same_records(ref, fast)
    assert 0 < int((fast["k_used"] > 0).sum()) < len(fast["k_used"])


def test_exact_key_per_user_scope() -> None:
    ref, fast = _exact_key_pair("lru", "noise", 1500, scope="user")
    assert_same_records(ref, fast)


def test_policies_and_units_differ_on_the_tiny_trace() -> None:
    """Without this the equality above could hold with every policy replayed alike."""
    fast = EXECUTORS.get("sequential_fast")
    hits = {(p, u): int((fast().run(build_scenario(_config(p, u, 1500, "exact_key"), _trace())[0])["k_used"] > 0).sum())
            for p, u in CASES}
    assert len(set(hits.values())) >= 4, hits


@cache
def _tiny_candidates(scope: str, cap: int) -> Candidates:
    cfg = _config("lru", "noise", 150, "exact_cosine", scope)
    return brute_force_candidates(build_scenario(cfg, _trace())[0].requests, FLOOR, cap)


def _candidate_pair(policy: str, unit: str, capacity: int, scope: str = "shared",
                    cap: int = 10_000) -> tuple[Records, Records, FastSequential]:
    cfg = _config(policy, unit, capacity, "exact_cosine", scope)
    sc = build_scenario(cfg, _trace())[0]
    assert isinstance(sc.mode, Nirvana)
    dim = sc.requests.vectors.shape[1]
    ref = EXECUTORS.get("sequential")().run(_with_store(sc, _canonical_store(sc.mode.store, dim)))
    executor = FastSequential(_tiny_candidates(scope, cap))
    fast = executor.run(build_scenario(cfg, _trace())[0])
    return _without_below_floor(ref, FLOOR), fast, executor


def test_floor_is_conservative_for_the_shipped_map() -> None:
    assert similarity_map(_config("lru", "noise", 150, "exact_cosine"), _trace().embedder) == MAP
    # The map is monotone (checked on load): nothing at or below the floor maps above the lowest threshold.
    assert MAP.apply(FLOOR) <= LOWEST_THRESHOLD
    assert MAP.apply(FLOOR + 0.05) > LOWEST_THRESHOLD  # and the floor is not pointlessly low


@pytest.mark.parametrize(("policy", "unit", "capacity"), [("lru", "noise", 1500), ("lcbfu", "noise", 150),
                                                          ("lfu", "prompt", 5000)])
def test_candidate_records_equal_reference(policy: str, unit: str, capacity: int) -> None:
    ref, fast, executor = _candidate_pair(policy, unit, capacity)
    assert_same_records(ref, fast)
    assert executor.stats["retrieval_exact_fallbacks"] == 0
    assert int((fast["k_used"] > 0).sum()) > 0
    assert (int((fast["outcome"] == HOLE_HIT).sum()) > 0) == (unit == "noise")  # holes need partial eviction


def test_truncated_lists_fall_back_to_exact_search() -> None:
    ref, fast, executor = _candidate_pair("lru", "noise", 1500, cap=2)
    assert_same_records(ref, fast)
    assert executor.stats["retrieval_exact_fallbacks"] > 0


def test_candidates_per_user_scope() -> None:
    ref, fast, _ = _candidate_pair("lfu", "noise", 1500, scope="user", cap=3)
    assert_same_records(ref, fast)


@pytest.mark.slow
@pytest.mark.parametrize("capacity", CAPACITIES)
@pytest.mark.parametrize(("policy", "unit"), CASES)
def test_candidate_records_equal_reference_every_policy(policy: str, unit: str, capacity: int) -> None:
    for cap in (10_000, 4):
        ref, fast, _ = _candidate_pair(policy, unit, capacity, cap=cap)
        assert_same_records(ref, fast)


def test_config_refuses_what_the_fast_replay_does_not_serve() -> None:
    with pytest.raises(ConfigError, match=r"run\.executor: expected serving\.mode nirvana, cache\.retrieval "
                                          r"exact_key or candidates, .* for sequential_fast"):
        experiment_from_data({"name": "x", "run": {"executor": "sequential_fast"}})
    with pytest.raises(ConfigError, match=r"hardware\.step_jitter_cv: expected 0 with run\.executor sequential_fast"):
        experiment_from_data({"name": "x", "run": {"executor": "sequential_fast"}, "hardware": {"step_jitter_cv": 0.1},
                              "cache": {"retrieval": "exact_key"}})


def test_runner_with_candidates_config_equals_reference(tmp_path: Path) -> None:
    """`cache.retrieval: candidates` + `run.executor: sequential_fast`: the run's own lists, the same counts."""
    data: dict[str, Any] = {"name": "x", "trace": {"limit": 2000}, "cache": {
        "retrieval": "candidates", "capacity_noises": 500, "candidates": {"cache_dir": str(tmp_path)}}}
    ref = simulate(experiment_from_data({**data, "run": {"executor": "sequential"}}).base)[2]
    fast = simulate(experiment_from_data({**data, "run": {"executor": "sequential_fast"}}).base)[2]
    for key in ("hits", "k_histogram", "steps_skipped", "evicted_noises", "hole_hits", "hole_misses", "outcomes"):
        assert ref[key] == fast[key], key
    assert ref["retrieval_exact_fallbacks"] == fast["retrieval_exact_fallbacks"]


def test_runner_summary_equals_reference() -> None:
    data: dict[str, Any] = {"name": "x", "cache": {"retrieval": "exact_key", "capacity_noises": 1500,
                                                   "policy": "lcbfu"}}
    summaries = {}
    for ex in ("sequential", "sequential_fast"):
        summary = simulate(experiment_from_data({**data, "run": {"executor": ex}}).base)[2]
        assert summary.pop("executor") == ex
        summaries[ex] = summary
    assert summaries["sequential"] == summaries["sequential_fast"]


def test_refuses_other_modes_and_retrievals() -> None:
    cfg = _config("lru", "noise", 1500, "exact_cosine")
    with pytest.raises(ValueError, match="retrieval 'exact_cosine' is served only by exact_key"):
        FastSequential().run(build_scenario(cfg, _trace())[0])
    req = build_scenario(cfg, _trace())[0].requests
    with pytest.raises(ValueError, match="serving mode nirvana only"):
        FastSequential().run(scenario(req, uniform_gpus(StepLatency(0.1, 0.0, 0.0), 1)))


# -- small random traces: exact ties between prompts, N below the largest K, byte capacities, shared arrivals --
SMALL_KS = (5, 10, 15, 20, 25)
STEP = StepLatency(step_s=0.1, text_encoder_s=0.5, vae_decode_s=0.25)


def _small_requests(seed: int) -> Requests:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(5, 4)).round(1)
    base[1] = base[0] + rng.normal(scale=0.2, size=4).round(1)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    vectors = base[rng.integers(0, 5, size=10)].astype(np.float32)  # 10 prompts, 5 vectors: tied cosines
    n = 300
    prompts = np.minimum(rng.zipf(1.4, size=n) - 1, 9)
    return Requests(arrival_s=np.cumsum(rng.integers(0, 2, size=n)).astype(float), vectors=vectors,
                    prompt_index=prompts.astype(np.int64), partition=rng.choice([7, -3, 10**12], size=n),
                    noise_bytes=rng.integers(1, 4, size=n), num_steps=rng.choice([5, 12, 21, 50], size=n),
                    latency_class=np.zeros(n, np.int64), step_factor=np.ones(n))


def _small_store(policy: str, unit: str, retriever: Any, seed: int, scale: Any) -> CacheStore:
    caps = [dict(capacity_noises=12), dict(capacity_bytes=25), dict(capacity_noises=20, capacity_bytes=40)]
    return CacheStore(ks=SMALL_KS, table=KTable(), policy=POLICIES.get(policy)(unit), make_retriever=retriever,
                      similarity_scale=scale, **caps[seed % 3])  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("policy", "unit"), CASES)
def test_small_random_traces(policy: str, unit: str, seed: int) -> None:
    req = _small_requests(seed)
    gpus = uniform_gpus(STEP, 1)
    scale = (lambda s: 0.5 + 0.5 * s) if seed == 1 else None  # a callable that is not a SimilarityMap
    floor = 0.2 if seed == 1 else 0.6  # 0.5 + 0.5 x 0.2 = 0.6 < 0.65: nothing below it selects a K
    ref = EXECUTORS.get("sequential")().run(
        scenario(req, gpus, mode=Nirvana(req, _small_store(policy, unit, lambda: CanonicalCosine(4), seed, scale))))
    cand = brute_force_candidates(req, floor, cap=(1, 2, 100)[seed])
    executor = FastSequential(cand)
    fast = executor.run(
        scenario(req, gpus, mode=Nirvana(req, _small_store(policy, unit, lambda: ExactCosine(4), seed, scale))))
    assert_same_records(_without_below_floor(ref, floor), fast)
    assert (fast["k_used"] > 0).any() and (fast["num_evicted"] > 0).any()
    key_ref = EXECUTORS.get("sequential")().run(
        scenario(req, gpus, mode=Nirvana(req, _small_store(policy, unit, lambda: ExactKey(4), seed, scale))))
    key_fast = FastSequential().run(
        scenario(req, gpus, mode=Nirvana(req, _small_store(policy, unit, lambda: ExactKey(4), seed, scale))))
    assert_same_records(key_ref, key_fast)


def test_small_traces_exercise_ties_holes_and_fallbacks() -> None:
    """The random traces above reach the cases they are for (else their equality says little)."""
    req = _small_requests(0)
    sims = cosines(req.vectors, req.vectors[0])
    assert len(np.unique(sims)) < len(sims)  # distinct prompts at exactly one cosine
    store = _small_store("lru", "noise", lambda: ExactCosine(4), 0, None)
    executor = FastSequential(brute_force_candidates(req, 0.6, cap=1))
    rec = executor.run(scenario(req, uniform_gpus(STEP, 1), mode=Nirvana(req, store)))
    assert executor.stats["retrieval_exact_fallbacks"] > 0
    assert (rec["outcome"] == HOLE_HIT).any() and (rec["hole"] & (rec["outcome"] == 0)).any()
    assert (rec["num_steps"][rec["hole"]] == 5).any()  # N - 1 below the smallest K


@pytest.mark.slow
def test_plain_python_loop_writes_the_same_records() -> None:
    """Without numba (not installed, or NUMBA_DISABLE_JIT=1) the same loop runs over Python lists."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k",
                           "small_random or fall_back or compiled_unless", str(Path(__file__).resolve())],
                          cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "23 passed" in done.stdout, done.stdout[-500:]


def test_compiled_unless_disabled() -> None:
    import os

    assert replay_loop.COMPILED == (os.environ.get("NUMBA_DISABLE_JIT", "0") == "0")


def test_refuses_unsorted_candidate_lists() -> None:
    req = _small_requests(0)
    good = brute_force_candidates(req, 0.6, cap=100)
    o = good.offsets
    i = next(r for r in range(len(req)) if o[r + 1] - o[r] >= 2 and good.sims[o[r]] > good.sims[o[r] + 1])
    sims = good.sims.copy()
    sims[good.offsets[i]: good.offsets[i] + 2] = sims[good.offsets[i]: good.offsets[i] + 2][::-1].copy()
    assert sims[good.offsets[i]] < sims[good.offsets[i] + 1]
    bad = Candidates(good.offsets, good.prompts, sims, good.truncated, good.floor)
    store = _small_store("lru", "noise", lambda: ExactCosine(4), 0, None)
    with pytest.raises(ValueError, match=f"request {i}'s list is not sorted"):
        FastSequential(bad).run(scenario(req, uniform_gpus(STEP, 1), mode=Nirvana(req, store)))
    check_candidates(good, req)


def _zipf_requests(ids: np.ndarray) -> Requests:
    n = len(ids)
    return Requests(arrival_s=np.arange(n, dtype=float), vectors=np.ones((int(ids.max()) + 1, 1), np.float32),
                    prompt_index=ids, partition=np.zeros(n, np.int64), noise_bytes=np.ones(n, np.int64),
                    num_steps=np.full(n, 50, np.int64), latency_class=np.zeros(n, np.int64), step_factor=np.ones(n))


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["fifo", "lfu", "lru"])
def test_exact_key_hits_equal_libcachesim_100k(policy: str) -> None:
    """The fast replay against the oracle directly (prompt unit: one item per prompt, as libCacheSim's objects)."""
    from tests.test_libcachesim import LARGE, capacities, oracle_hits

    req = _zipf_requests(LARGE)
    for cap in capacities(LARGE):
        store = CacheStore(ks=SMALL_KS, table=KTable(), policy=POLICIES.get(policy)("prompt"),
                           make_retriever=lambda: ExactKey(1), capacity_noises=len(SMALL_KS) * cap)
        rec = FastSequential().run(scenario(req, uniform_gpus(STEP, 1), mode=Nirvana(req, store)))
        assert np.array_equal(rec["k_used"] > 0, oracle_hits(policy, cap, LARGE)), (policy, cap)


@pytest.mark.slow
@pytest.mark.parametrize(("policy", "unit"), CASES)
def test_exact_key_records_equal_reference_50k(policy: str, unit: str) -> None:
    from tests.test_libcachesim import zipf_trace

    ids = zipf_trace(50_000, 8_000, 0.9, seed=11)
    req = _zipf_requests(ids)
    for cap in (100, 1_000, 4_000):
        recs = []
        for executor in ("sequential", "sequential_fast"):
            store = CacheStore(ks=SMALL_KS, table=KTable(), policy=POLICIES.get(policy)(unit),
                               make_retriever=lambda: ExactKey(1), capacity_noises=len(SMALL_KS) * cap)
            recs.append(EXECUTORS.get(executor)().run(scenario(req, uniform_gpus(STEP, 1), mode=Nirvana(req, store))))
        assert_same_records(*recs)


def test_no_requests_no_records() -> None:
    req = _zipf_requests(np.zeros(1, np.int64))
    empty = Requests(*(np.asarray(getattr(req, f))[:0] if f != "vectors" else req.vectors
                       for f in Requests.__dataclass_fields__))
    store = CacheStore(ks=SMALL_KS, table=KTable(), policy=POLICIES.get("lru")("noise"),
                       make_retriever=lambda: ExactKey(1), capacity_noises=10)
    rec = FastSequential().run(scenario(empty, uniform_gpus(STEP, 1), mode=Nirvana(empty, store)))
    assert all(len(v) == 0 for v in rec.values())


def test_policies_without_an_array_version_are_refused() -> None:
    others = [name for name in POLICIES.names() if name not in replay_loop.POLICY_CODES]
    assert others  # lcbfu_da, sim_lru, ... exist: the refusal is reachable
    assert set(FAST_POLICIES) == set(replay_loop.POLICY_CODES)  # the config's list is the loop's
    with pytest.raises(ConfigError, match=r"cache\.policy one of fifo, lru, lfu, lcbfu"):
        experiment_from_data({"cache": {"policy": others[0], "retrieval": "exact_key"},
                              "run": {"executor": "sequential_fast"}})
