"""Hand-traced eviction orders per policy, and store-level traces of admission, holes and capacity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.cache.kselect import DEFAULT_KS, KTable
from sim.cache.policies import POLICIES, WHOLE_PROMPT, Item, Policy, Unit
from sim.cache.store import AccessResult, AdmitResult, CacheStore
from sim.retrieval.exact_cosine import ExactCosine
from tests.helpers import drain

SMALL_BYTES = 32 * 1024  # SD-1.5 512² latent
LARGE_BYTES = 128 * 1024  # SDXL 1024² latent


def make_policy(name: str, unit: Unit) -> Policy:
    return POLICIES.get(name)(unit)



def insert_all(policy: Policy, items: list[Item], start_s: float = 0.0) -> None:
    for i, item in enumerate(items):
        policy.on_insert(item, start_s + i)


def prompts(*entry_ids: int) -> list[Item]:
    return [(e, WHOLE_PROMPT) for e in entry_ids]


# -- FIFO -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("unit", ["noise", "prompt"])
def test_fifo_ignores_hits_and_requeues_readmissions(unit: Unit) -> None:
    k = 5 if unit == "noise" else WHOLE_PROMPT
    a, b, c = (1, k), (2, k), (3, k)
    p = make_policy("fifo", unit)
    insert_all(p, [a, b, c])
    p.on_hit(a, 3.0)
    p.on_hit(a, 4.0)
    assert p.victim() == a
    p.on_remove(a)
    p.on_insert(a, 5.0)  # readmitted: now the newest
    assert drain(p) == [b, c, a]


# -- LRU ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("unit", ["noise", "prompt"])
def test_lru_hits_move_to_most_recent(unit: Unit) -> None:
    k = 15 if unit == "noise" else WHOLE_PROMPT
    a, b, c = (1, k), (2, k), (3, k)
    p = make_policy("lru", unit)
    insert_all(p, [a, b, c])
    p.on_hit(a, 3.0)
    assert p.victim() == b
    p.on_hit(b, 4.0)
    assert drain(p) == [c, a, b]


# -- LFU ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("unit", ["noise", "prompt"])
def test_lfu_fewest_hits_first(unit: Unit) -> None:
    k = 10 if unit == "noise" else WHOLE_PROMPT
    a, b, c, d = (1, k), (2, k), (3, k), (4, k)
    p = make_policy("lfu", unit)
    insert_all(p, [a, b, c, d])
    p.on_hit(a, 10.0)
    p.on_hit(a, 11.0)
    p.on_hit(a, 12.0)
    p.on_hit(b, 13.0)
    p.on_hit(b, 14.0)
    p.on_hit(c, 15.0)
    assert drain(p) == [d, c, b, a]


def test_lfu_tie_goes_to_least_recently_used_not_oldest_insert() -> None:
    a, b, c = (1, 5), (2, 5), (3, 5)
    p = make_policy("lfu", "noise")
    insert_all(p, [a, b, c])
    # One use each, touched in reverse insertion order: LRU among equals is c, then b, then a.
    p.on_hit(c, 10.0)
    p.on_hit(b, 11.0)
    p.on_hit(a, 12.0)
    assert drain(p) == [c, b, a]


def test_lfu_zero_uses_tie_is_insertion_order() -> None:
    p = make_policy("lfu", "prompt")
    insert_all(p, prompts(7, 3, 5))
    assert drain(p) == prompts(7, 3, 5)


def test_lfu_forgets_counts_on_removal() -> None:
    a, b = (1, 5), (2, 5)
    p = make_policy("lfu", "noise")
    insert_all(p, [a, b])
    for t in range(5):
        p.on_hit(a, 10.0 + t)
    p.on_hit(b, 20.0)
    p.on_remove(a)
    p.on_insert(a, 30.0)  # readmitted: starts again at zero uses
    assert p.victim() == a


# -- LCBFU ----------------------------------------------------------------------------------------
def test_lcbfu_score_is_k_times_uses_with_tie_rules() -> None:
    p = make_policy("lcbfu", "noise")
    for k in DEFAULT_KS:  # prompt 1 admitted at t=0, ascending K as the store does
        p.on_insert((1, k), 0.0)
    p.on_hit((1, 25), 1.0)  # 25
    p.on_hit((1, 5), 2.0)
    p.on_hit((1, 5), 3.0)  # 5 x 2 = 10
    p.on_hit((1, 10), 4.0)  # 10 x 1 = 10
    for k in DEFAULT_KS:  # prompt 2 admitted at t=5: new noises score 0
        p.on_insert((2, k), 5.0)
    # Score 0 and oldest admission first (prompt 1's unused noises, smaller K first), then prompt 2's
    # new noises; then the score-10 tie of one admission, smaller K first; then the 25.
    zero_old, zero_new = [(1, 15), (1, 20)], [(2, k) for k in DEFAULT_KS]
    assert drain(p) == [*zero_old, *zero_new, (1, 5), (1, 10), (1, 25)]


def test_lcbfu_new_noise_is_evicted_before_an_old_used_one() -> None:
    p = make_policy("lcbfu", "noise")
    p.on_insert((1, 5), 0.0)
    p.on_hit((1, 5), 1.0)  # score 5
    p.on_insert((2, 25), 2.0)  # score 0, though newer and larger K
    assert drain(p) == [(2, 25), (1, 5)]


def test_lcbfu_counting_the_generating_miss_keeps_new_noises_above_old_unused_ones() -> None:
    """lcbfu_initial_uses 1: a new noise scores K (its generating miss is a use), so a fresh K=25 noise
    outranks an old noise hit once at K=5 (5 x 2 = 10 < 25); the published rule (0) evicts the fresh one."""
    from sim.cache.params import PolicyParams

    p = POLICIES.get("lcbfu")("noise", PolicyParams(lcbfu_initial_uses=1))
    p.on_insert((1, 5), 0.0)  # score 5
    p.on_hit((1, 5), 1.0)  # 5 x 2 = 10
    p.on_insert((2, 25), 2.0)  # score 25
    p.on_insert((3, 5), 3.0)  # score 5: the lowest
    assert drain(p) == [(3, 5), (1, 5), (2, 25)]
    published = make_policy("lcbfu", "noise")
    for item, now in (((1, 5), 0.0), ((2, 25), 2.0), ((3, 5), 3.0)):
        published.on_insert(item, now)
    published.on_hit((1, 5), 1.0)
    assert drain(published) == [(2, 25), (3, 5), (1, 5)]


def test_lcbfu_tie_oldest_admission_before_smaller_k() -> None:
    p = make_policy("lcbfu", "noise")
    p.on_insert((1, 10), 0.0)
    p.on_insert((2, 5), 1.0)
    p.on_hit((1, 10), 2.0)  # 10 x 1 = 10
    p.on_hit((2, 5), 3.0)
    p.on_hit((2, 5), 4.0)  # 5 x 2 = 10
    assert drain(p) == [(1, 10), (2, 5)]


def test_lcbfu_same_time_smaller_k_then_admission_order() -> None:
    p = make_policy("lcbfu", "noise")
    for item in [(1, 10), (2, 5), (3, 5), (4, 25)]:
        p.on_insert(item, 7.0)
    assert drain(p) == [(2, 5), (3, 5), (1, 10), (4, 25)]


def test_lcbfu_readmitted_noise_starts_at_zero() -> None:
    p = make_policy("lcbfu", "noise")
    p.on_insert((1, 25), 0.0)
    p.on_insert((2, 5), 1.0)
    p.on_hit((1, 25), 2.0)
    p.on_hit((1, 25), 3.0)  # 50
    p.on_hit((2, 5), 4.0)  # 5
    assert p.victim() == (2, 5)
    p.on_remove((1, 25))
    p.on_insert((1, 25), 5.0)
    assert drain(p) == [(1, 25), (2, 5)]


def test_lcbfu_order_survives_many_hits() -> None:
    # Enough hits to make the lazy heap rebuild itself several times.
    p = make_policy("lcbfu", "noise")
    p.on_insert((1, 5), 0.0)
    p.on_insert((2, 10), 0.0)
    p.on_insert((3, 25), 0.0)
    for t in range(300):
        p.on_hit((1, 5), 1.0 + t)  # ends at 1500
    for t in range(40):
        p.on_hit((3, 25), 400.0 + t)  # ends at 1000
    p.on_hit((2, 10), 500.0)  # 10
    assert len(p) == 3
    assert drain(p) == [(2, 10), (3, 25), (1, 5)]


def test_lcbfu_and_lfu_disagree() -> None:
    # K=25 used once (score 25, 1 use) vs K=5 used twice (score 10, 2 uses).
    victims = {}
    for name in ("lfu", "lcbfu"):
        p = make_policy(name, "noise")
        p.on_insert((1, 25), 0.0)
        p.on_insert((2, 5), 1.0)
        p.on_hit((1, 25), 2.0)
        p.on_hit((2, 5), 3.0)
        p.on_hit((2, 5), 4.0)
        victims[name] = p.victim()
    assert victims == {"lfu": (1, 25), "lcbfu": (2, 5)}


def test_lcbfu_refuses_prompt_unit() -> None:
    cls = POLICIES.get("lcbfu")
    assert cls.units == ("noise",)
    with pytest.raises(ValueError, match=r"policy lcbfu supports eviction units \('noise',\), not 'prompt'"):
        cls("prompt")


# -- store-level traces ---------------------------------------------------------------------------
E0 = np.array([1.0, 0.0, 0.0])
E1 = np.array([0.0, 1.0, 0.0])
E2 = np.array([0.0, 0.0, 1.0])


def near_e0(similarity: float) -> np.ndarray:
    """Unit vector whose cosine with E0 is ``similarity``."""
    return np.array([similarity, math.sqrt(1.0 - similarity**2), 0.0])


def make_store(
    policy: str,
    unit: Unit,
    *,
    capacity_noises: int | None = None,
    capacity_bytes: int | None = None,
) -> CacheStore:
    return CacheStore(
        ks=DEFAULT_KS,
        table=KTable(),
        policy=make_policy(policy, unit),
        make_retriever=lambda: ExactCosine(3),
        capacity_noises=capacity_noises,
        capacity_bytes=capacity_bytes,
    )


def admit(store: CacheStore, vector: np.ndarray, now: float, noise_bytes: int = SMALL_BYTES) -> AdmitResult:
    result = store.admit("p", vector, 0, noise_bytes, now)
    store.check()
    return result


def access(store: CacheStore, vector: np.ndarray, now: float) -> AccessResult:
    result = store.access("p", vector, 0, now)
    store.check()
    return result


def assert_access(result: AccessResult, entry_id: int, similarity: float, k_selected: int, k_used: int) -> None:
    assert (result.entry_id, result.k_selected, result.k_used) == (entry_id, k_selected, k_used)
    assert result.similarity == pytest.approx(similarity, abs=1e-6)
    assert result.hole == (k_selected != 0 and k_used != k_selected)


def test_store_similarity_picks_k() -> None:
    store = make_store("fifo", "noise", capacity_noises=10)
    assert admit(store, E0, 0.0) == AdmitResult(0, 0)
    for i, (s, k) in enumerate([(0.98, 25), (0.93, 20), (0.88, 15), (0.80, 10), (0.70, 5), (0.50, 0)]):
        assert_access(access(store, near_e0(s), 1.0 + i), 0, s, k, k)


def test_store_admission_evicts_until_group_fits_and_hole_misses() -> None:
    store = make_store("fifo", "noise", capacity_noises=7)
    assert admit(store, E0, 0.0) == AdmitResult(0, 0)
    assert admit(store, E1, 1.0) == AdmitResult(1, 3)  # 5 + 5 > 7: FIFO drops prompt 0's K=5,10,15
    assert store.cached_ks(0) == (20, 25)
    assert store.cached_ks(1) == DEFAULT_KS
    assert (store.used_noises, store.used_bytes) == (7, 7 * SMALL_BYTES)
    assert store.partition_size("p") == 2
    assert_access(access(store, near_e0(0.88), 2.0), 0, 0.88, 15, 0)  # hole, nothing below: a miss
    assert_access(access(store, near_e0(0.93), 3.0), 0, 0.93, 20, 20)
    assert_access(access(store, near_e0(0.98), 4.0), 0, 0.98, 25, 25)


def test_store_hole_resolves_to_largest_cached_k_below() -> None:
    store = make_store("lru", "noise", capacity_noises=7)
    admit(store, E0, 0.0)
    for t, s in enumerate([0.70, 0.80, 0.88, 0.98]):  # touch K=5, 10, 15, 25; K=20 is now least recent
        access(store, near_e0(s), 1.0 + t)
    assert admit(store, E1, 10.0) == AdmitResult(1, 3)
    assert store.cached_ks(0) == (15, 25)  # evicted 20, then 5 and 10
    assert_access(access(store, near_e0(0.93), 11.0), 0, 0.93, 20, 15)  # hole at 20 -> 15
    assert_access(access(store, near_e0(0.98), 12.0), 0, 0.98, 25, 25)
    assert_access(access(store, near_e0(0.80), 13.0), 0, 0.80, 10, 0)


def test_store_lcbfu_keeps_used_noises_and_resolves_hole() -> None:
    store = make_store("lcbfu", "noise", capacity_noises=7)
    admit(store, E0, 0.0)
    access(store, near_e0(0.98), 1.0)  # (0, 25): score 25
    access(store, near_e0(0.70), 2.0)  # (0, 5): score 5
    assert admit(store, E1, 3.0) == AdmitResult(1, 3)
    assert store.cached_ks(0) == (5, 25)
    assert_access(access(store, near_e0(0.88), 4.0), 0, 0.88, 15, 5)  # (0, 5) now scores 10
    # Prompt 1's five noises score 0: all go, and prompt 1 leaves the index.
    assert admit(store, E2, 5.0) == AdmitResult(2, 5)
    assert store.cached_ks(1) == ()
    assert store.cached_ks(0) == (5, 25)
    assert store.partition_size("p") == 2
    assert_access(access(store, E1, 6.0), 0, 0.0, 0, 0)  # E1 is orthogonal to both survivors


def test_store_prompt_leaves_index_with_its_last_noise() -> None:
    store = make_store("fifo", "noise", capacity_noises=6)
    admit(store, E0, 0.0)
    assert admit(store, E1, 1.0) == AdmitResult(1, 4)
    assert store.cached_ks(0) == (25,)
    assert (store.num_entries, store.partition_size("p")) == (2, 2)
    assert_access(access(store, E0, 2.0), 0, 1.0, 25, 25)  # one noise left: still retrievable
    assert admit(store, E2, 3.0) == AdmitResult(2, 5)  # (0, 25), then prompt 1's K=5..20
    assert store.cached_ks(0) == ()
    assert store.cached_ks(1) == (25,)
    assert (store.num_entries, store.partition_size("p")) == (2, 2)
    # E0 is orthogonal to E1 and E2: the tie goes to the oldest surviving entry, never to entry 0.
    assert_access(access(store, E0, 4.0), 1, 0.0, 0, 0)


def test_store_prompt_unit_evicts_all_noises_at_once() -> None:
    store = make_store("fifo", "prompt", capacity_noises=10)
    admit(store, E0, 0.0)
    admit(store, E1, 1.0)
    assert store.used_noises == 10
    assert admit(store, E2, 2.0) == AdmitResult(2, 5)
    assert store.cached_ks(0) == ()
    assert store.cached_ks(1) == DEFAULT_KS
    assert sorted(store.policy.items()) == prompts(1, 2)
    assert store.partition_size("p") == 2


@pytest.mark.parametrize("unit", ["noise", "prompt"])
def test_store_hit_bumps_lru_but_not_fifo(unit: Unit) -> None:
    survivors = {}
    for name in ("lru", "fifo"):
        store = make_store(name, unit, capacity_noises=10)
        admit(store, E0, 0.0)
        admit(store, E1, 1.0)
        assert_access(access(store, E0, 2.0), 0, 1.0, 25, 25)
        admit(store, E2, 3.0)
        survivors[name] = (store.cached_ks(0), store.cached_ks(1))
    if unit == "prompt":
        assert survivors["lru"] == (DEFAULT_KS, ())  # the hit made prompt 0 most recent
        assert survivors["fifo"] == ((), DEFAULT_KS)
    else:
        # Noise unit: only (0, 25) was touched, so LRU drops prompt 0's other four, then (1, 5).
        assert survivors["lru"] == ((25,), (10, 15, 20, 25))
        assert survivors["fifo"] == ((), DEFAULT_KS)


def test_store_byte_capacity_with_mixed_noise_sizes() -> None:
    store = make_store("fifo", "noise", capacity_bytes=6 * LARGE_BYTES)
    assert admit(store, E0, 0.0, SMALL_BYTES) == AdmitResult(0, 0)
    assert admit(store, E1, 1.0, SMALL_BYTES) == AdmitResult(1, 0)
    assert store.used_bytes == 10 * SMALL_BYTES
    # 10 small + 5 large = 7.5 large > 6: drop all of prompt 0 (still 6.25), then (1, 5).
    assert admit(store, E2, 2.0, LARGE_BYTES) == AdmitResult(2, 6)
    assert store.cached_ks(0) == ()
    assert store.cached_ks(1) == (10, 15, 20, 25)
    assert (store.used_noises, store.used_bytes) == (9, 6 * LARGE_BYTES)


def test_store_noise_and_byte_capacity_both_bind() -> None:
    store = make_store("fifo", "prompt", capacity_noises=15, capacity_bytes=5 * LARGE_BYTES + 5 * SMALL_BYTES)
    admit(store, E0, 0.0, LARGE_BYTES)
    assert admit(store, E1, 1.0, SMALL_BYTES) == AdmitResult(1, 0)  # bytes exactly full
    assert admit(store, E2, 2.0, SMALL_BYTES) == AdmitResult(2, 5)  # bytes bind: prompt 0 goes
    assert (store.used_noises, store.used_bytes) == (10, 10 * SMALL_BYTES)
    assert admit(store, near_e0(0.5), 3.0, SMALL_BYTES) == AdmitResult(3, 0)
    assert admit(store, near_e0(0.3), 4.0, SMALL_BYTES) == AdmitResult(4, 5)  # noises bind: prompt 1 goes
    assert store.cached_ks(1) == ()
    assert store.num_entries == 3


def test_store_rejects_group_larger_than_cache() -> None:
    store = make_store("lru", "noise", capacity_noises=4)
    assert admit(store, E0, 0.0) == AdmitResult(-1, 0)
    assert (store.num_entries, store.used_noises, store.partition_size("p")) == (0, 0, 0)
    result = access(store, E0, 1.0)
    assert (result.entry_id, result.k_selected, result.k_used, result.hole) == (-1, 0, 0, False)
    assert math.isnan(result.similarity)


def test_store_rejected_large_group_keeps_small_ones() -> None:
    store = make_store("fifo", "noise", capacity_bytes=5 * SMALL_BYTES)
    assert admit(store, E0, 0.0, SMALL_BYTES) == AdmitResult(0, 0)
    assert admit(store, E1, 1.0, LARGE_BYTES) == AdmitResult(-1, 0)  # nothing evicted for it
    assert store.cached_ks(0) == DEFAULT_KS
    assert admit(store, E1, 2.0, SMALL_BYTES) == AdmitResult(1, 5)  # ids are not burnt by rejection


def test_store_partitions_are_isolated() -> None:
    store = make_store("fifo", "noise", capacity_noises=10)
    store.admit("alice", E0, 0, SMALL_BYTES, 0.0)
    miss = store.access("bob", E0, 0, 1.0)
    assert (miss.entry_id, miss.k_used) == (-1, 0)
    hit = store.access("alice", E0, 0, 2.0)
    assert (hit.entry_id, hit.k_used) == (0, 25)
    assert (store.partition_size("alice"), store.partition_size("bob")) == (1, 0)
    store.check()


def test_store_needs_a_capacity() -> None:
    with pytest.raises(ValueError, match="capacity_noises or capacity_bytes"):
        make_store("fifo", "noise")
