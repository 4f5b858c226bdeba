"""Differential: sequential_fast's exact fallback (the row matrix) equals the reference when most lookups fall back."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sim.cache.kselect import KTable
from sim.cache.policies import POLICIES
from sim.cache.store import CacheStore
from sim.executors import EXECUTORS, replay_loop
from sim.executors.sequential_fast import FastSequential
from sim.retrieval.exact_cosine import ExactCosine
from sim.retrieval.precompute import Candidates
from sim.scenario import Requests
from sim.scenario.modes.nirvana import Nirvana
from tests.helpers import scenario, uniform_gpus
from tests.test_fast_sequential import (
    CASES,
    SMALL_KS,
    STEP,
    CanonicalCosine,
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


def _store(policy: str, unit: str, retriever: Any, capacity: int) -> CacheStore:
    return CacheStore(ks=SMALL_KS, table=KTable(), policy=POLICIES.get(policy)(unit), make_retriever=retriever,
                      capacity_noises=capacity)


def _pair(policy: str, unit: str, capacity: int, cap: int, seed: int,
          monkeypatch: pytest.MonkeyPatch, one_partition: bool = False) -> tuple[Any, Any, FastSequential, int]:
    """(reference records as lists see them, fast records, the fast executor, fallbacks that gathered rows)."""
    req = _requests(seed)
    if one_partition:
        req = Requests(**{**{f: getattr(req, f) for f in Requests.__dataclass_fields__},
                          "partition": np.full(len(req), 7, dtype=np.int64)})
    gpus = uniform_gpus(STEP, 1)
    ref = EXECUTORS.get("sequential")().run(
        scenario(req, gpus, mode=Nirvana(req, _store(policy, unit, lambda: CanonicalCosine(8), capacity))))
    gathers = []
    inner = replay_loop.partition_rows

    def counted(*args: Any) -> int:
        gathers.append(1)
        return int(inner(*args))

    monkeypatch.setattr(replay_loop, "partition_rows", counted)
    executor = FastSequential(brute_force_candidates(req, FLOOR, cap))
    fast = executor.run(scenario(req, gpus, mode=Nirvana(req, _store(policy, unit, lambda: ExactCosine(8), capacity))))
    return _without_below_floor(ref, FLOOR), fast, executor, len(gathers)


@pytest.mark.parametrize(("cap", "seed"), [(1, 0), (2, 1)])
def test_many_fallbacks_equal_reference_lru(cap: int, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    ref, fast, executor, gathers = _pair("lru", "noise", 150, cap, seed, monkeypatch)
    assert_same_records(ref, fast)
    fallbacks = executor.stats["retrieval_exact_fallbacks"]
    assert fallbacks > 0.5 * len(fast["k_used"])  # most lookups fall back: the lists hold 1 or 2 prompts
    assert 0 < gathers < fallbacks  # both ways of scoring: every row, and the partition's own rows
    assert (fast["k_used"] > 0).sum() > 100 and (fast["num_evicted"] > 0).sum() > 100
    # one row per distinct cached prompt: at most the 150 noises' live entries, and rows are recycled
    assert 0 < executor.matrix_rows <= 150 < int((fast["admitted_entry"] >= 0).sum())


def test_many_fallbacks_reach_ties_and_shared_rows() -> None:
    """The trace above has what the equality is for: distinct prompts at one cosine, a prompt cached in two
    partitions at once, and two live entries of one prompt in one partition."""
    req = _requests(0)
    assert len(np.unique(req.vectors, axis=0)) < len(np.unique(req.prompt_index))
    store = _store("lru", "noise", lambda: ExactCosine(8), 150)
    rec = FastSequential(brute_force_candidates(req, FLOOR, 1)).run(
        scenario(req, uniform_gpus(STEP, 1), mode=Nirvana(req, store)))
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
        ref, fast, executor, _ = _pair(policy, unit, capacity, cap, seed, monkeypatch)
        assert_same_records(ref, fast)
        assert executor.stats["retrieval_exact_fallbacks"] > 100


def test_prompt_ids_outside_the_vectors_are_refused() -> None:
    """The loop copies vectors[prompt] without bounds checks, so the executor checks the ids first."""
    req = _requests(0)
    n = len(req)  # empty lists, all truncated: they name no prompt, so only the requests' ids are out of range
    cand = Candidates(np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), np.ones(n, bool),
                      FLOOR)
    short = Requests(**{**{f: getattr(req, f) for f in Requests.__dataclass_fields__},
                        "vectors": req.vectors[: int(req.prompt_index.max())]})
    store = _store("lru", "noise", lambda: ExactCosine(8), 150)
    with pytest.raises(ValueError, match=r"prompt_index outside Requests\.vectors"):
        FastSequential(cand).run(scenario(short, uniform_gpus(STEP, 1), mode=Nirvana(short, store)))


@pytest.mark.parametrize("one_partition", [False, True])
@pytest.mark.parametrize(("batch", "window"), [(1, 50), (4, 7), (128, 20_000)])
@pytest.mark.parametrize(("policy", "unit"), CASES)
def test_batched_fallback_screens_equal_reference(policy: str, unit: str, batch: int, window: int, one_partition: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Fallbacks screened in batches (BLAS product, rows rewritten since rescreened, canonical cosine only near
    the best) give the reference's records, ties included; here every fallback is screened. With one partition
    the screen scans the referenced rows instead of walking the partition's slots."""
    from sim.executors import sequential_fast

    monkeypatch.setattr(sequential_fast, "SCREEN_MIN_ROWS", 1)
    monkeypatch.setattr(sequential_fast, "SCREEN_BATCH", batch)
    monkeypatch.setattr(sequential_fast, "SCREEN_WINDOW", window)
    scans: list[int] = []
    inner = replay_loop.screen_rows

    def counted(*args: Any) -> int:
        scans.append(1)
        return int(inner(*args))

    monkeypatch.setattr(replay_loop, "screen_rows", counted)
    for capacity, cap, seed in ((60, 1, 2), (400, 2, 3)):
        ref, fast, executor, _ = _pair(policy, unit, capacity, cap, seed, monkeypatch, one_partition)
        assert_same_records(ref, fast)
        batches, screened = executor.screens
        if replay_loop.COMPILED:
            assert 0 < batches <= executor.stats["retrieval_exact_fallbacks"]
            if batch > 1:
                assert screened > batches  # later fallbacks were met in an earlier batch
    if replay_loop.COMPILED:
        assert bool(scans) == one_partition  # the row scan serves exactly the one-partition stores
