"""Differential: the sequential replay on the compiled cache core writes the reference implementation's records."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sim.build import build_scenario, plan, similarity_map
from sim.cache.core import jit
from sim.cache.core.cache import CompiledCache, check_candidates
from sim.cache.core.support import POLICY_CODES, compiled_support
from sim.cache.kselect import KTable
from sim.cache.policies import POLICIES
from sim.cache.spec import CacheSpec
from sim.config import RunConfig
from sim.embedding.simmap import load_map
from sim.errors import ConfigError
from sim.executors.base import choose_implementation
from sim.experiments.runner import simulate
from sim.experiments.sweep import experiment_from_data
from sim.hardware.profiles import StepLatency
from sim.retrieval.cosine import cosines
from sim.retrieval.exact_cosine import ExactCosine
from sim.retrieval.exact_key import ExactKey
from sim.retrieval.precompute import Candidates, raw_floor
from sim.scenario import Requests, Scenario
from sim.scenario.modes.nirvana import Nirvana
from sim.scenario.records import HOLE_HIT, Records
from sim.trace import Trace, load_trace
from tests.helpers import cache_spec, execute, reference_cache, scenario, uniform_gpus

#: every column the sequential executor writes
COLUMNS = ("arrival_s", "num_steps", "service_s", "similarity", "similarity_raw", "matched_entry", "k_selected",
           "k_used", "hole", "outcome", "gpu_steps", "admit_s", "admitted_entry", "num_evicted")
CAPACITIES = (150, 1500, 5000)  # noises, as tests/golden_gen.py
# The policies the compiled core implements (the others fall back to the reference: tested below).
CASES = [(name, unit) for name in POLICIES.names() if name in POLICY_CODES for unit in POLICIES.get(name).units]
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


def _spec(sc: Scenario) -> CacheSpec:
    assert isinstance(sc.mode, Nirvana) and sc.mode.cache_spec is not None
    return sc.mode.cache_spec


def _listed(spec: CacheSpec, cand: Candidates) -> CacheSpec:
    """The spec with the candidate fast path over the given lists."""
    return replace(spec, retrieval="candidates", candidates=cand)


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
    sc = build_scenario(cfg, _trace())[0]
    ref = execute("sequential", sc)[0]
    fast = execute("sequential", sc, implementation="compiled")[0]
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
    hits = {(p, u): int((execute("sequential", build_scenario(_config(p, u, 1500, "exact_key"), _trace())[0],
                                  implementation="compiled")[0]["k_used"] > 0).sum())
            for p, u in CASES}
    assert len(set(hits.values())) >= 4, hits


@cache
def _tiny_candidates(scope: str, cap: int) -> Candidates:
    cfg = _config("lru", "noise", 150, "exact_cosine", scope)
    return brute_force_candidates(build_scenario(cfg, _trace())[0].requests, FLOOR, cap)


def _candidate_pair(policy: str, unit: str, capacity: int, scope: str = "shared",
                    cap: int = 10_000) -> tuple[Records, Records, dict[str, int]]:
    cfg = _config(policy, unit, capacity, "exact_cosine", scope)
    sc = build_scenario(cfg, _trace())[0]
    spec, req = _spec(sc), sc.requests
    dim = req.vectors.shape[1]
    ref = execute("sequential", sc, reference_cache(spec, req, lambda: CanonicalCosine(dim)))[0]
    fast, stats = execute("sequential", sc, CompiledCache(_listed(spec, _tiny_candidates(scope, cap)), req))
    return _without_below_floor(ref, FLOOR), fast, stats


def test_floor_is_conservative_for_the_shipped_map() -> None:
    assert similarity_map(_config("lru", "noise", 150, "exact_cosine"), _trace().embedder) == MAP
    # The map is monotone (checked on load): nothing at or below the floor maps above the lowest threshold.
    assert MAP.apply(FLOOR) <= LOWEST_THRESHOLD
    assert MAP.apply(FLOOR + 0.05) > LOWEST_THRESHOLD  # and the floor is not pointlessly low


@pytest.mark.parametrize(("policy", "unit", "capacity"), [("lru", "noise", 1500), ("lcbfu", "noise", 150),
                                                          ("lfu", "prompt", 5000)])
def test_candidate_records_equal_reference(policy: str, unit: str, capacity: int) -> None:
    ref, fast, stats = _candidate_pair(policy, unit, capacity)
    assert_same_records(ref, fast)
    assert stats["retrieval_exact_fallbacks"] == 0
    assert int((fast["k_used"] > 0).sum()) > 0
    assert (int((fast["outcome"] == HOLE_HIT).sum()) > 0) == (unit == "noise")  # holes need partial eviction


def test_truncated_lists_fall_back_to_exact_search() -> None:
    ref, fast, stats = _candidate_pair("lru", "noise", 1500, cap=2)
    assert_same_records(ref, fast)
    assert stats["retrieval_exact_fallbacks"] > 0


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


def test_unsupported_runs_fall_back_to_the_reference() -> None:
    """auto takes the compiled core only where it gives the reference's records; compiled asked for a run it
    does not support runs the reference and says why; a clock-only setting under the sequential replay is refused."""
    for section, why in (({"retrieval": "exact_cosine"}, "cache.retrieval exact_cosine has no compiled version"),
                         ({"retrieval": "exact_key", "policy": "sim_lru"}, "cache.policy sim_lru has no compiled"),
                         ({"retrieval": "exact_key", "admission": "second_hit"}, "cache.admission second_hit")):
        for asked, expected in (("auto", ("reference", None)), ("reference", ("reference", None))):
            cfg = experiment_from_data({"name": "x", "run": {"executor": "sequential", "implementation": asked},
                                        "cache": section}).base
            assert choose_implementation(build_scenario(cfg, _trace())[0], asked) == expected
        cfg = experiment_from_data({"name": "x", "run": {"executor": "sequential", "implementation": "compiled"},
                                    "cache": section}).base
        impl, notice = choose_implementation(build_scenario(cfg, _trace())[0], "compiled")
        assert impl == "reference" and notice is not None and why in notice
    cfg = experiment_from_data({"name": "x", "run": {"executor": "sequential"}, "hardware": {"step_jitter_cv": 0.1},
                                "cache": {"retrieval": "exact_key"}}).base
    with pytest.raises(ConfigError, match=r"hardware\.step_jitter_cv: expected 0 with run\.executor sequential"):
        plan(cfg, build_scenario(cfg, _trace())[0])
    with pytest.raises(ConfigError, match=r"run\.executor: sequential_fast is now run\.executor: sequential"):
        experiment_from_data({"name": "x", "run": {"executor": "sequential_fast"}})


def test_runner_with_candidates_config_equals_reference(tmp_path: Path) -> None:
    """`cache.retrieval: candidates` on the compiled core: the run's own lists, the same counts."""
    data: dict[str, Any] = {"name": "x", "trace": {"limit": 2000}, "cache": {
        "retrieval": "candidates", "capacity_noises": 500, "candidates": {"cache_dir": str(tmp_path)}}}
    ref = simulate(experiment_from_data({**data, "run": {"executor": "sequential",
                                                         "implementation": "reference"}}).base)[2]
    fast = simulate(experiment_from_data({**data, "run": {"executor": "sequential"}}).base)[2]
    assert (ref["implementation"], fast["implementation"]) == ("reference", "compiled")
    for key in ("hits", "k_histogram", "steps_skipped", "evicted_noises", "hole_hits", "hole_misses", "outcomes"):
        assert ref[key] == fast[key], key
    assert ref["retrieval_exact_fallbacks"] == fast["retrieval_exact_fallbacks"]


def test_runner_summary_equals_reference() -> None:
    data: dict[str, Any] = {"name": "x", "cache": {"retrieval": "exact_key", "capacity_noises": 1500,
                                                   "policy": "lcbfu"}}
    summaries = {}
    for impl in ("reference", "compiled"):
        summary = simulate(experiment_from_data({**data, "run": {"executor": "sequential",
                                                                 "implementation": impl}}).base)[2]
        assert summary.pop("implementation") == impl
        summaries[impl] = summary
    assert summaries["reference"] == summaries["compiled"]


def test_refuses_retrievals_it_does_not_have() -> None:
    sc = build_scenario(_config("lru", "noise", 1500, "exact_cosine"), _trace())[0]
    with pytest.raises(ValueError, match=r"cache\.retrieval exact_cosine has no compiled version"):
        CompiledCache(_spec(sc), sc.requests)


@pytest.mark.parametrize("executor", ["sequential", "engine"])
@pytest.mark.parametrize("mode", ["final_image", "small_model"])
def test_other_modes_on_the_compiled_cache_equal_reference(mode: str, executor: str) -> None:
    """The core is a cache, not a mode: the final-image cache and the small model's latent cache run on it too."""
    cfg = experiment_from_data({"name": "x", "serving": {"mode": mode, "small_model": {"serve": "misses"}},
                                "run": {"executor": executor},
                                "cache": {"retrieval": "exact_key", "capacity_noises": 500}}).base
    sc = build_scenario(cfg, _trace())[0]
    ref, ref_stats = execute(executor, sc)
    fast, fast_stats = execute(executor, sc, implementation="compiled")
    assert_same_records(ref, fast)
    assert ref_stats == fast_stats and int((fast["num_evicted"] > 0).sum()) > 0


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


class LinearScale:
    """A similarity scale that is not a fitted SimilarityMap: 0.5 + 0.5 x cosine."""

    x = (-1.0, 1.0)
    y = (0.0, 1.0)
    source = "test"

    def apply(self, similarity: float) -> float:
        return 0.5 + 0.5 * similarity

    def apply_array(self, similarity: np.ndarray) -> np.ndarray:
        return 0.5 + 0.5 * similarity


def _small_spec(req: Requests, policy: str, unit: str, seed: int, scale: Any, retrieval: str) -> CacheSpec:
    caps = [dict(capacity_noises=12), dict(capacity_bytes=25), dict(capacity_noises=20, capacity_bytes=40)]
    return cache_spec(req, policy, unit, ks=SMALL_KS, retrieval=retrieval, scale=scale,
                      **caps[seed % 3])  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("policy", "unit"), CASES)
def test_small_random_traces(policy: str, unit: str, seed: int) -> None:
    req = _small_requests(seed)
    scale = LinearScale() if seed == 1 else None
    floor = 0.2 if seed == 1 else 0.6  # 0.5 + 0.5 x 0.2 = 0.6 < 0.65: nothing below it selects a K
    spec = _small_spec(req, policy, unit, seed, scale, "exact_cosine")
    sc = scenario(req, uniform_gpus(STEP, 1), mode=Nirvana(req, spec))
    ref = execute("sequential", sc, reference_cache(spec, req, lambda: CanonicalCosine(4)))[0]
    cand = brute_force_candidates(req, floor, cap=(1, 2, 100)[seed])
    fast = execute("sequential", sc, CompiledCache(_listed(spec, cand), req))[0]
    assert_same_records(_without_below_floor(ref, floor), fast)
    assert (fast["k_used"] > 0).any() and (fast["num_evicted"] > 0).any()
    key_spec = _small_spec(req, policy, unit, seed, scale, "exact_key")
    sc = scenario(req, uniform_gpus(STEP, 1), mode=Nirvana(req, key_spec))
    key_ref = execute("sequential", sc, reference_cache(key_spec, req, lambda: ExactKey(4)))[0]
    key_fast = execute("sequential", sc, CompiledCache(key_spec, req))[0]
    assert_same_records(key_ref, key_fast)


def test_small_traces_exercise_ties_holes_and_fallbacks() -> None:
    """The random traces above reach the cases they are for (else their equality says little)."""
    req = _small_requests(0)
    sims = cosines(req.vectors, req.vectors[0])
    assert len(np.unique(sims)) < len(sims)  # distinct prompts at exactly one cosine
    spec = _listed(_small_spec(req, "lru", "noise", 0, None, "exact_cosine"), brute_force_candidates(req, 0.6, cap=1))
    rec, stats = execute("sequential", scenario(req, uniform_gpus(STEP, 1), mode=Nirvana(req, spec)),
                         CompiledCache(spec, req))
    assert stats["retrieval_exact_fallbacks"] > 0
    assert (rec["outcome"] == HOLE_HIT).any() and (rec["hole"] & (rec["outcome"] == 0)).any()
    assert (rec["num_steps"][rec["hole"]] == 5).any()  # N - 1 below the smallest K


@pytest.mark.slow
def test_plain_python_loop_writes_the_same_records() -> None:
    """Without numba (not installed, or NUMBA_DISABLE_JIT=1) the same core runs as plain Python."""
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
    # the small random traces (3 per case), the truncated-list fallback, the fallback of unsupported runs, and
    # the compiled flag: all ran, in plain Python
    assert f"{3 * len(CASES) + 3} passed" in done.stdout, done.stdout[-500:]


def test_compiled_unless_disabled() -> None:
    import os

    assert jit.COMPILED == (os.environ.get("NUMBA_DISABLE_JIT", "0") == "0")


def test_refuses_unsorted_candidate_lists() -> None:
    req = _small_requests(0)
    good = brute_force_candidates(req, 0.6, cap=100)
    o = good.offsets
    i = next(r for r in range(len(req)) if o[r + 1] - o[r] >= 2 and good.sims[o[r]] > good.sims[o[r] + 1])
    sims = good.sims.copy()
    sims[good.offsets[i]: good.offsets[i] + 2] = sims[good.offsets[i]: good.offsets[i] + 2][::-1].copy()
    assert sims[good.offsets[i]] < sims[good.offsets[i] + 1]
    bad = Candidates(good.offsets, good.prompts, sims, good.truncated, good.floor)
    spec = _small_spec(req, "lru", "noise", 0, None, "exact_cosine")
    with pytest.raises(ValueError, match=f"request {i}'s list is not sorted"):
        CompiledCache(_listed(spec, bad), req)
    check_candidates(good, req)


def _zipf_requests(ids: np.ndarray) -> Requests:
    n = len(ids)
    return Requests(arrival_s=np.arange(n, dtype=float), vectors=np.ones((int(ids.max()) + 1, 1), np.float32),
                    prompt_index=ids, partition=np.zeros(n, np.int64), noise_bytes=np.ones(n, np.int64),
                    num_steps=np.full(n, 50, np.int64), latency_class=np.zeros(n, np.int64), step_factor=np.ones(n))


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["fifo", "lfu", "lru"])
def test_exact_key_hits_equal_libcachesim_100k(policy: str) -> None:
    """The compiled core against the oracle directly (prompt unit: one item per prompt, as libCacheSim's objects)."""
    from tests.test_libcachesim import LARGE, capacities, oracle_hits

    req = _zipf_requests(LARGE)
    for cap in capacities(LARGE):
        spec = cache_spec(req, policy, "prompt", ks=SMALL_KS, retrieval="exact_key",
                          capacity_noises=len(SMALL_KS) * cap)
        rec = execute("sequential", scenario(req, uniform_gpus(STEP, 1), mode=Nirvana(req, spec)),
                      implementation="compiled")[0]
        assert np.array_equal(rec["k_used"] > 0, oracle_hits(policy, cap, LARGE)), (policy, cap)


@pytest.mark.slow
@pytest.mark.parametrize(("policy", "unit"), CASES)
def test_exact_key_records_equal_reference_50k(policy: str, unit: str) -> None:
    from tests.test_libcachesim import zipf_trace

    ids = zipf_trace(50_000, 8_000, 0.9, seed=11)
    req = _zipf_requests(ids)
    for cap in (100, 1_000, 4_000):
        spec = cache_spec(req, policy, unit, ks=SMALL_KS, retrieval="exact_key", capacity_noises=len(SMALL_KS) * cap)
        sc = scenario(req, uniform_gpus(STEP, 1), mode=Nirvana(req, spec))
        recs = [execute("sequential", sc, implementation=impl)[0] for impl in ("reference", "compiled")]
        assert_same_records(*recs)


def test_no_requests_no_records() -> None:
    req = _zipf_requests(np.zeros(1, np.int64))
    empty = Requests(*(np.asarray(getattr(req, f))[:0] if f != "vectors" else req.vectors
                       for f in ("arrival_s", "vectors", "prompt_index", "partition", "noise_bytes", "num_steps",
                                 "latency_class", "step_factor")))
    spec = cache_spec(empty, "lru", "noise", ks=SMALL_KS, retrieval="exact_key", capacity_noises=10)
    rec = execute("sequential", scenario(empty, uniform_gpus(STEP, 1), mode=Nirvana(empty, spec)),
                  CompiledCache(spec, empty))[0]
    assert all(len(v) == 0 for v in rec.values())


def test_policies_without_a_compiled_version_are_reported() -> None:
    others = [name for name in POLICIES.names() if name not in POLICY_CODES]
    assert others  # sim_lru, qlru_dc, ... exist: the refusal is reachable
    assert set(POLICY_CODES) <= set(POLICIES.names())  # every compiled policy has its reference file
    req = _zipf_requests(np.zeros(1, np.int64))
    why = compiled_support(cache_spec(req, others[0], "noise", retrieval="exact_key", capacity_noises=10))
    assert why is not None and f"cache.policy {others[0]} has no compiled version" in why
