"""Differential: the compiled core's exact fallback (its row matrix) equals the reference when most lookups
fall back."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sim.cache.core import cache as core_cache
from sim.cache.core import fallback, jit
from sim.cache.core.cache import CompiledCache
from sim.cache.spec import CacheSpec
from sim.retrieval.precompute import Candidates
from sim.scenario import Requests
from sim.scenario.modes.nirvana import Nirvana
from tests.helpers import cache_spec, execute, reference_cache, scenario, uniform_gpus
from tests.test_fast_sequential import (
    CASES,
    SMALL_KS,
    STEP,
    CanonicalCosine,
    _listed,
    _without_below_floor,
    assert_same_records,
    brute_force_candidates,
)

FLOOR = 0.6


def _requests(seed: int, n: int = 2500, num_prompts: int = 300) -> Requests:
    """Clustered prompts with exactly tied cosines (several prompts share a vector), four partitions of
    unequal size (the fallback scans every row for the big one, gathers its own rows for the small ones),
    one prompt requested in several partitions (one row, several slots), and N = 5 (below the smallest
    K: always a miss, so one prompt gets several live entries)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 8))
    base = (centres[rng.integers(0, 6, size=60)] + rng.normal(scale=0.6, size=(60, 8))).round(1)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    vectors = base[rng.integers(0, 60, size=num_prompts)].astype(np.float32)
    prompts = np.minimum(rng.zipf(1.3, size=n) - 1, num_prompts - 1)
    return Requests(arrival_s=np.cumsum(rng.integers(0, 2, size=n)).astype(float), vectors=vectors,
                    prompt_index=prompts.astype(np.int64),
                    partition=rng.choice([4, 11, -2, 9], p=[0.7, 0.1, 0.1, 0.1], size=n),
                    noise_bytes=np.ones(n, np.int64), num_steps=rng.choice([5, 30, 50], p=[0.1, 0.3, 0.6], size=n),
                    latency_class=np.zeros(n, np.int64), step_factor=np.ones(n))


def _spec(req: Requests, policy: str, unit: str, capacity: int) -> CacheSpec:
    return cache_spec(req, policy, unit, ks=SMALL_KS, capacity_noises=capacity)


def _pair(policy: str, unit: str, capacity: int, cap: int, seed: int, monkeypatch: pytest.MonkeyPatch,
          one_partition: bool = False) -> tuple[Any, Any, CompiledCache, dict[str, int], int]:
    """(reference records as lists see them, compiled records, the compiled cache, its stats, fallbacks that
    gathered rows)."""
    req = _requests(seed)
    if one_partition:
        req = Requests(**{**{f: getattr(req, f) for f in Requests.__dataclass_fields__},
                          "partition": np.full(len(req), 7, dtype=np.int64)})
    spec = _spec(req, policy, unit, capacity)
    sc = scenario(req, uniform_gpus(STEP, 1), mode=Nirvana(req, spec))
    ref = execute("sequential", sc, reference_cache(spec, req, lambda: CanonicalCosine(8)))[0]
    gathers = []
    inner = core_cache.partition_rows

    def counted(*args: Any) -> int:
        gathers.append(1)
        return int(inner(*args))

    monkeypatch.setattr(core_cache, "partition_rows", counted)
    cache = CompiledCache(_listed(spec, brute_force_candidates(req, FLOOR, cap)), req)
    fast, stats = execute("sequential", sc, cache)
    return _without_below_floor(ref, FLOOR), fast, cache, stats, len(gathers)


@pytest.mark.parametrize(("cap", "seed"), [(1, 0), (2, 1)])
def test_many_fallbacks_equal_reference_lru(cap: int, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    ref, fast, cache, stats, gathers = _pair("lru", "noise", 150, cap, seed, monkeypatch)
    assert_same_records(ref, fast)
    fallbacks = stats["retrieval_exact_fallbacks"]
    assert fallbacks > 0.5 * len(fast["k_used"])  # most lookups fall back: the lists hold 1 or 2 prompts
    assert 0 < gathers < fallbacks  # both ways of scoring: every row, and the partition's own rows
    assert (fast["k_used"] > 0).sum() > 100 and (fast["num_evicted"] > 0).sum() > 100
    # one row per distinct cached prompt: at most the 150 noises' live entries, and rows are recycled
    assert 0 < cache.matrix_rows <= 150 < int((fast["admitted_entry"] >= 0).sum())


def test_many_fallbacks_reach_ties_and_shared_rows() -> None:
    """The trace above has what the equality is for: distinct prompts at one cosine, a prompt cached in two
    partitions at once, and two live entries of one prompt in one partition."""
    req = _requests(0)
    assert len(np.unique(req.vectors, axis=0)) < len(np.unique(req.prompt_index))
    spec = _listed(_spec(req, "lru", "noise", 150), brute_force_candidates(req, FLOOR, 1))
    rec = execute("sequential", scenario(req, uniform_gpus(STEP, 1), mode=Nirvana(req, spec)),
                  implementation="compiled")[0]
    # Evictions happen only at admissions: admissions with the same running eviction count coexist.
    epoch = np.cumsum(rec["num_evicted"])
    groups: dict[int, list[tuple[int, int]]] = {}
    for i in np.flatnonzero(rec["admitted_entry"] >= 0):
        groups.setdefault(int(epoch[i]), []).append((int(req.partition[i]), int(req.prompt_index[i])))
    shared_row = any(len({p for p, q in g if q == q0}) > 1 for g in groups.values() for _, q0 in g)
    same_partition = any(len(set(g)) < len(g) for g in groups.values())
    assert shared_row and same_partition


@pytest.mark.parametrize("capacity", (60, 400))
@pytest.mark.parametrize(("policy", "unit"), CASES)
def test_many_fallbacks_equal_reference_every_policy(policy: str, unit: str, capacity: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for cap, seed in ((1, 2), (2, 3)):
        ref, fast, _, stats, _ = _pair(policy, unit, capacity, cap, seed, monkeypatch)
        assert_same_records(ref, fast)
        assert stats["retrieval_exact_fallbacks"] > 100


def test_prompt_ids_outside_the_vectors_are_refused() -> None:
    """The core copies vectors[prompt] without bounds checks, so it checks the ids first."""
    req = _requests(0)
    n = len(req)  # empty lists, all truncated: they name no prompt, so only the requests' ids are out of range
    cand = Candidates(np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), np.ones(n, bool),
                      FLOOR)
    short = Requests(**{**{f: getattr(req, f) for f in Requests.__dataclass_fields__},
                        "vectors": req.vectors[: int(req.prompt_index.max())]})
    with pytest.raises(ValueError, match=r"prompt_index outside Requests\.vectors"):
        CompiledCache(_listed(_spec(short, "lru", "noise", 150), cand), short)


@pytest.mark.parametrize("one_partition", [False, True])
@pytest.mark.parametrize(("batch", "window"), [(1, 50), (4, 7), (128, 20_000)])
@pytest.mark.parametrize(("policy", "unit"), CASES)
def test_batched_fallback_screens_equal_reference(policy: str, unit: str, batch: int, window: int, one_partition: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Fallbacks screened in batches (BLAS product, rows rewritten since rescreened, canonical cosine only near
    the best) give the reference's records, ties included; here every fallback is screened. With one partition
    the screen scans the referenced rows instead of walking the partition's slots."""
    monkeypatch.setattr(core_cache, "SCREEN_MIN_ROWS", 1)
    monkeypatch.setattr(fallback, "SCREEN_BATCH", batch)
    monkeypatch.setattr(fallback, "SCREEN_WINDOW", window)
    scans: list[int] = []
    inner = fallback.screen_rows

    def counted(*args: Any) -> int:
        scans.append(1)
        return int(inner(*args))

    monkeypatch.setattr(fallback, "screen_rows", counted)
    for capacity, cap, seed in ((60, 1, 2), (400, 2, 3)):
        ref, fast, cache, stats, _ = _pair(policy, unit, capacity, cap, seed, monkeypatch, one_partition)
        assert_same_records(ref, fast)
        if jit.COMPILED:
            assert cache.screen is not None
            batches, screened = cache.screen.batches, cache.screen.screened
            assert 0 < batches <= stats["retrieval_exact_fallbacks"]
            if batch > 1:
                assert screened > batches  # later fallbacks were met in an earlier batch
    if jit.COMPILED:
        assert bool(scans) == one_partition  # the row scan serves exactly the one-partition stores
