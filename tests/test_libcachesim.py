"""Differential: exact-key CacheStore hit sequences equal libCacheSim's FIFO/LRU/LFU (a test-only oracle)."""

from __future__ import annotations

from collections.abc import Callable

import libcachesim as lcs  # GPLv3+: test-only, sim/ never imports it
import numpy as np
import pytest

from sim.cache.kselect import KTable
from sim.cache.policies import NO_REQUEST, POLICIES, Item, Policy, RequestContext, Unit
from sim.cache.store import CacheStore
from sim.retrieval import RETRIEVERS

KS = (5, 10, 15, 20, 25)  # one prompt = 5 noises, so a capacity of 5 x C noises holds C prompts
DIM = 8
VECTOR = np.eye(DIM, dtype=np.float32)[0]  # exact-key retrieval ignores vectors
CAPACITY_FRACTIONS = (0.01, 0.05, 0.20)  # of the distinct ids in the trace

# Registered policy -> libCacheSim class with the same semantics on unit-size objects.
ORACLES: dict[str, Callable[[int], lcs.CacheBase]] = {"fifo": lcs.FIFO, "lru": lcs.LRU, "lfu": lcs.LFU}
# Registered policies with no exact-key counterpart in libCacheSim, and why.
NO_ORACLE = {
    "lcbfu": "scores K x uses per noise; with exact keys only K=25 is ever hit",
    "lcbfu_da": "LCBFU's score with aging; libCacheSim's LFUDA counts objects, not K x uses per noise",
    "lcbfu_window": "a windowed K x uses; libCacheSim has no windowed LFU",
    "sim_lru": "with exact keys and unit prompt it is LRU (checked by lru's oracle); no similarity in libCacheSim",
    "rnd_lru": "declines hits at random by K; no similarity in libCacheSim",
    "qlru_dc": "inserts at random by K saved; no similarity in libCacheSim",
}


def zipf_trace(num_requests: int, num_ids: int, alpha: float, seed: int) -> np.ndarray:
    """Object ids with P(rank r) ∝ r^-alpha; ranks are shuffled so id order says nothing."""
    rng = np.random.default_rng(seed)
    weights = np.arange(1, num_ids + 1, dtype=np.float64) ** -alpha
    ranks = rng.choice(num_ids, size=num_requests, p=weights / weights.sum())
    return rng.permutation(num_ids)[ranks].astype(np.int64)


def sim_hits(policy: str | Policy, capacity: int, trace: np.ndarray) -> np.ndarray:
    """Per-request hit flags from CacheStore in exact-key mode, evicting whole prompts."""
    store = CacheStore(
        ks=KS,
        table=KTable(),
        policy=POLICIES.get(policy)("prompt") if isinstance(policy, str) else policy,
        make_retriever=lambda: RETRIEVERS.get("exact_key")(DIM),
        capacity_noises=len(KS) * capacity,
    )
    hits = np.zeros(len(trace), dtype=bool)
    for t, obj in enumerate(trace.tolist()):
        now = float(t)
        result = store.access(0, VECTOR, obj, now)
        if result.k_used == 0:
            store.admit(0, VECTOR, obj, 1, now)
        else:
            hits[t] = True
            assert result.k_used == KS[-1] and result.similarity == 1.0
    store.check()
    assert store.num_entries == min(capacity, len(np.unique(trace)))
    return hits


def oracle_hits(policy: str, capacity: int, trace: np.ndarray) -> np.ndarray:
    """Per-request hit flags from libCacheSim: C bytes of cache, every object 1 byte."""
    cache = ORACLES[policy](capacity)
    req = lcs.Request()
    req.obj_size = 1
    hits = np.zeros(len(trace), dtype=bool)
    for t, obj in enumerate(trace.tolist()):
        req.obj_id = obj
        req.clock_time = t
        hits[t] = cache.get(req)
    assert cache.get_n_obj() == min(capacity, len(np.unique(trace)))
    return hits


def capacities(trace: np.ndarray) -> list[int]:
    distinct = len(np.unique(trace))
    return [max(1, round(f * distinct)) for f in CAPACITY_FRACTIONS]


def assert_same_hits(policy: str, capacity: int, trace: np.ndarray) -> int:
    ours, theirs = sim_hits(policy, capacity, trace), oracle_hits(policy, capacity, trace)
    differ = np.flatnonzero(ours != theirs)
    first = int(differ[0]) if len(differ) else -1
    assert int(ours.sum()) == int(theirs.sum()), f"{policy} C={capacity}: hit counts differ, first at request {first}"
    assert first == -1, f"{policy} C={capacity}: equal counts but hit sequences differ, first at request {first}"
    return int(ours.sum())


class LFUAdmissionTies(Policy):
    """A deliberately wrong LFU (ties to the oldest admission, not the least recent use)."""

    name = "lfu_admission_ties"

    def __init__(self, unit: Unit) -> None:
        super().__init__(unit)
        self._key: dict[Item, tuple[int, int]] = {}
        self._seq = 0

    def on_insert(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        self._seq += 1
        self._key[item] = (0, self._seq)

    def on_hit(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        uses, admitted = self._key[item]
        self._key[item] = (uses + 1, admitted)

    def on_remove(self, item: Item) -> None:
        del self._key[item]

    def victim(self) -> Item:
        return min(self._key, key=self._key.__getitem__)

    def __len__(self) -> int:
        return len(self._key)

    def __contains__(self, item: object) -> bool:
        return item in self._key

    def items(self) -> list[Item]:
        return list(self._key)


SMALL = zipf_trace(10_000, 2_000, 0.9, seed=7)
LARGE = zipf_trace(100_000, 15_000, 0.9, seed=8)
# On a skewed trace LFU's minimum is nearly always an object not hit since admission, where least
# recent use and oldest admission agree. With 24 equally popular ids and room for 20, a new object
# is usually hit before the next miss, so ties at higher counts decide evictions.
TIES = np.random.default_rng(3).integers(0, 24, size=10_000)
TIES_CAPACITY = 20


def test_every_policy_has_an_oracle_or_a_reason() -> None:
    assert set(ORACLES).isdisjoint(NO_ORACLE)
    assert set(ORACLES) | set(NO_ORACLE) == set(POLICIES.names())


@pytest.mark.parametrize("policy", sorted(ORACLES))
@pytest.mark.parametrize("capacity", capacities(SMALL))
def test_hits_equal_libcachesim_small(policy: str, capacity: int) -> None:
    assert_same_hits(policy, capacity, SMALL)


@pytest.mark.parametrize("policy", sorted(ORACLES))
def test_hits_equal_libcachesim_tie_heavy(policy: str) -> None:
    assert_same_hits(policy, TIES_CAPACITY, TIES)


def test_tie_heavy_trace_pins_the_lfu_tie_rule() -> None:
    """Sensitivity partner: breaking LFU ties by admission instead of last use changes the hits."""
    wrong = int(sim_hits(LFUAdmissionTies("prompt"), TIES_CAPACITY, TIES).sum())
    assert wrong != int(oracle_hits("lfu", TIES_CAPACITY, TIES).sum())


@pytest.mark.slow
@pytest.mark.parametrize("policy", sorted(ORACLES))
@pytest.mark.parametrize("capacity", capacities(LARGE))
def test_hits_equal_libcachesim_100k(policy: str, capacity: int) -> None:
    assert_same_hits(policy, capacity, LARGE)


@pytest.mark.parametrize("capacity", capacities(SMALL))
def test_trace_tells_the_policies_apart(capacity: int) -> None:
    """Without this the equality above could hold vacuously (e.g. a cache that never evicts)."""
    counts = {p: int(oracle_hits(p, capacity, SMALL).sum()) for p in ORACLES}
    assert len(set(counts.values())) == len(counts), counts
    assert all(0 < n < len(SMALL) - len(np.unique(SMALL)) for n in counts.values()), counts
