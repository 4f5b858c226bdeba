"""Hypothesis stateful test of CacheStore over every policy × unit × retriever, against a brute-force model."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sim.cache.kselect import DEFAULT_KS, KTable
from sim.cache.policies import POLICIES, WHOLE_PROMPT, Item, Unit
from sim.cache.store import AdmitResult, CacheStore
from sim.retrieval import RETRIEVERS, Retriever

# 2-D unit vectors at these angles: pairwise cosines fall in every K bin (checked below), none lies
# within 2e-3 of a threshold, and no two distinct vectors are within 1e-4 of equally similar to a
# third, so the expected top-1 and K are unambiguous despite float32 storage.
ANGLES_DEG = (0, 5, 11, 15, 16, 35, 44, 64, 68, 140)
POOL = np.array([[np.cos(np.radians(a)), np.sin(np.radians(a))] for a in ANGLES_DEG])
PARTITIONS = ("a", "b")
NOISE_BYTES = (32 * 1024, 128 * 1024)
# Written out independently of sim.cache.kselect (NIRVANA defaults, DESIGN.md §1).
THRESHOLDS = ((0.95, 25), (0.90, 20), (0.85, 15), (0.75, 10), (0.65, 5))
# For each pool vector, the pool vectors it would hit (similarity above the lowest threshold).
NEIGHBOURS = [[j for j in range(len(POOL)) if float(POOL[i] @ POOL[j]) > THRESHOLDS[-1][0]] for i in range(len(POOL))]
CAPACITIES = [
    (n, b)
    for n in (None, 4, 5, 7, 10, 16)
    for b in (None, 5 * 32 * 1024, 5 * 128 * 1024, 5 * 128 * 1024 + 3 * 32 * 1024, 12 * 128 * 1024)
    if n is not None or b is not None
]

CASES = [
    pytest.param(policy, unit, retrieval, id=f"{policy}-{unit}-{retrieval}")
    for policy in POLICIES.names()
    for unit in POLICIES.get(policy).units
    for retrieval in RETRIEVERS.names()
]


def expected_k(similarity: float) -> int:
    return next((k for above, k in THRESHOLDS if similarity > above), 0)


def test_pool_covers_every_k_bin() -> None:
    sims = POOL @ POOL.T
    bins = {expected_k(float(s)) for s in sims.ravel()}
    assert bins == {0, 5, 10, 15, 20, 25}
    assert min(abs(float(s) - above) for s in sims.ravel() for above, _ in THRESHOLDS) > 2e-3
    for q in range(len(POOL)):
        gaps = np.abs(sims[q][:, None] - sims[q][None, :]) + np.eye(len(POOL))
        assert gaps.min() > 1e-4


class StoreMachine(RuleBasedStateMachine):
    """Drives one store; a model of entry ids, partitions, vectors and sizes predicts every answer."""

    policy_name: str = "fifo"
    unit: Unit = "noise"
    retrieval: str = "exact_cosine"

    def __init__(self) -> None:
        super().__init__()
        self.store: CacheStore
        self.now = 0.0
        self.next_id = 0
        self.live: set[int] = set()
        self.pool_of: dict[int, int] = {}
        self.part_of: dict[int, str] = {}
        self.bytes_of: dict[int, int] = {}

    def tick(self) -> float:
        self.now += 1.0
        return self.now

    def cached(self) -> dict[int, tuple[int, ...]]:
        """Cached Ks of every live entry, pruning entries that have left the store."""
        out = {e: self.store.cached_ks(e) for e in self.live}
        self.live = {e for e, ks in out.items() if ks}
        return {e: ks for e, ks in out.items() if ks}

    @initialize(capacity=st.sampled_from(CAPACITIES))
    def build(self, capacity: tuple[int | None, int | None]) -> None:
        factory = cast(Callable[[int], Retriever], RETRIEVERS.get(self.retrieval))
        self.store = CacheStore(
            ks=DEFAULT_KS,
            table=KTable(),
            policy=POLICIES.get(self.policy_name)(self.unit),
            make_retriever=lambda: factory(POOL.shape[1]),
            capacity_noises=capacity[0],
            capacity_bytes=capacity[1],
        )

    @rule(part=st.sampled_from(PARTITIONS), v=st.integers(0, len(POOL) - 1))
    def access(self, part: str, v: int) -> None:
        self.check_access(part, v)

    @precondition(lambda self: bool(self.live))
    @rule(pick=st.integers(0, 1 << 16), near=st.integers(0, 1 << 16))
    def access_near_cached(self, pick: int, near: int) -> None:
        """Look up a vector similar to a cached one (most random lookups would miss)."""
        live = sorted(self.cached()) or sorted(self.pool_of)
        entry = live[pick % len(live)]
        v = self.pool_of[entry]
        if self.retrieval != "exact_key":
            v = NEIGHBOURS[v][near % len(NEIGHBOURS[v])]
        self.check_access(self.part_of[entry], v)

    def check_access(self, part: str, v: int) -> None:
        before = self.cached()
        policy_before = sorted(self.store.policy.items())
        declined_before = self.store.num_declined
        result = self.store.access(part, POOL[v], v, self.tick())
        declined = self.store.num_declined > declined_before  # rnd_lru, qlru_dc turn some hits into misses
        candidates = [e for e in sorted(before) if self.part_of[e] == part]
        if self.retrieval == "exact_key":
            candidates = [e for e in candidates if self.pool_of[e] == v]
        if not candidates:
            assert (result.entry_id, result.k_selected, result.k_used, result.hole) == (-1, 0, 0, False)
            assert np.isnan(result.similarity)
            return
        sims = {e: float(POOL[self.pool_of[e]] @ POOL[v]) for e in candidates}
        best = max(sims.values())
        # Ties (the same pool vector admitted twice) go to the oldest entry.
        entry = min(e for e in candidates if sims[e] > best - 1e-5)
        k_selected = expected_k(sims[entry])
        k_used = max((k for k in before[entry] if k <= k_selected), default=0)
        assert result.entry_id == entry
        assert result.similarity == pytest.approx(sims[entry], abs=1e-5)
        if declined:
            assert k_used > 0 and (result.k_selected, result.k_used, result.hole) == (k_selected, 0, False)
        else:
            assert (result.k_selected, result.k_used) == (k_selected, k_used)
            assert result.hole == (k_selected != 0 and k_used != k_selected)
        # A lookup never changes membership.
        assert self.cached() == before
        assert sorted(self.store.policy.items()) == policy_before

    @rule(part=st.sampled_from(PARTITIONS), v=st.integers(0, len(POOL) - 1), noise_bytes=st.sampled_from(NOISE_BYTES))
    def admit(self, part: str, v: int, noise_bytes: int) -> None:
        store = self.store
        need_noises, need_bytes = len(DEFAULT_KS), len(DEFAULT_KS) * noise_bytes
        cap_noises, cap_bytes = store.capacity_noises, store.capacity_bytes
        before = self.cached()
        used_before = (store.used_noises, store.used_bytes)
        refused_before = store.num_refused
        result = store.admit(part, POOL[v], v, noise_bytes, self.tick())
        if need_noises > cap_noises or need_bytes > cap_bytes or store.num_refused > refused_before:
            assert result == AdmitResult(-1, 0)
            assert self.cached() == before
            assert (store.used_noises, store.used_bytes) == used_before
            return
        assert result.entry_id == self.next_id
        self.next_id += 1
        new = result.entry_id
        self.live.add(new)
        self.pool_of[new], self.part_of[new], self.bytes_of[new] = v, part, noise_bytes
        after = self.cached()
        assert after[new] == DEFAULT_KS  # the group is whole: it never evicts its own noises

        # What went: each unit is (noises, bytes) of one eviction step.
        units: list[tuple[int, int]] = []
        for e, ks in before.items():
            kept = after.get(e, ())
            assert set(kept) <= set(ks)
            gone = len(ks) - len(kept)
            if gone == 0:
                continue
            if self.unit == "prompt":
                assert kept == ()  # a prompt goes whole
                units.append((gone, gone * self.bytes_of[e]))
            else:
                units.extend([(1, self.bytes_of[e])] * gone)
        assert sum(n for n, _ in units) == result.num_evicted_noises
        fits = used_before[0] + need_noises <= cap_noises and used_before[1] + need_bytes <= cap_bytes
        if fits:
            assert result.num_evicted_noises == 0
        else:
            # Evict until it fits and no further: putting back some evicted unit would overflow.
            assert units
            used_n, used_b = store.used_noises, store.used_bytes
            assert any(used_n + n > cap_noises or used_b + b > cap_bytes for n, b in units)

    @invariant()
    def within_capacity(self) -> None:
        assert self.store.used_noises <= self.store.capacity_noises
        assert self.store.used_bytes <= self.store.capacity_bytes

    @invariant()
    def store_check_passes(self) -> None:
        self.store.check()

    @invariant()
    def matches_model(self) -> None:
        cached = self.cached()
        store = self.store
        assert store.used_noises == sum(len(ks) for ks in cached.values())
        assert store.used_bytes == sum(len(ks) * self.bytes_of[e] for e, ks in cached.items())
        assert store.num_entries == len(cached)
        for part in PARTITIONS:
            assert store.partition_size(part) == sum(1 for e in cached if self.part_of[e] == part)
        expected: set[Item]
        if self.unit == "prompt":
            expected = {(e, WHOLE_PROMPT) for e in cached}
        else:
            expected = {(e, k) for e, ks in cached.items() for k in ks}
        assert set(store.policy.items()) == expected
        assert len(store.policy) == len(expected)


@pytest.mark.parametrize(("policy", "unit", "retrieval"), CASES)
def test_store_state_machine(policy: str, unit: Unit, retrieval: str) -> None:
    machine = type(
        f"StoreMachine_{policy}_{unit}_{retrieval}",
        (StoreMachine,),
        {"policy_name": policy, "unit": unit, "retrieval": retrieval},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=40, stateful_step_count=40, deadline=None),
    )
