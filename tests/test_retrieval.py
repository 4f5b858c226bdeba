"""Differential: retrievers against brute-force references (exact ties included), and shared properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.retrieval import RETRIEVERS, Retriever
from sim.retrieval.exact_cosine import ExactCosine
from sim.retrieval.exact_key import ExactKey

# Vectors with every component ±1/4 in 16 dimensions have norm exactly 1, and every dot product
# between two of them is a multiple of 1/16 computed without rounding in float32, whatever the
# summation order. So a brute-force argmax can be compared for equality, and equal vectors give
# exactly tied similarities.
GRID_DIM = 16


def grid_vectors(num: int, rng: np.random.Generator) -> np.ndarray:
    return (rng.choice([-0.25, 0.25], size=(num, GRID_DIM))).astype(np.float32)


def make(name: str, dim: int) -> Retriever:
    return RETRIEVERS.get(name)(dim)


class BruteCosine:
    """Reference: argmax of cosine over every cached vector, ties to the smallest entry id."""

    def __init__(self) -> None:
        self.vectors: dict[int, np.ndarray] = {}

    def add(self, entry_id: int, vector: np.ndarray) -> None:
        self.vectors[entry_id] = vector.astype(np.float64)

    def remove(self, entry_id: int) -> None:
        del self.vectors[entry_id]

    def similarities(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.array(sorted(self.vectors), dtype=np.int64)
        mat = np.stack([self.vectors[i] for i in ids.tolist()])
        return ids, mat @ vector.astype(np.float64)

    def nearest(self, vector: np.ndarray) -> tuple[int, float] | None:
        if not self.vectors:
            return None
        ids, sims = self.similarities(vector)
        best = int(np.argmax(sims))  # first maximum = smallest id, since ids are sorted
        return int(ids[best]), float(sims[best])

    def num_tied_best(self, vector: np.ndarray) -> int:
        if not self.vectors:
            return 0
        _, sims = self.similarities(vector)
        return int((sims == sims.max()).sum())


class BruteKey:
    """Reference: the smallest live entry id with the same text key."""

    def __init__(self) -> None:
        self.keys: dict[int, int] = {}

    def nearest(self, text_key: int) -> tuple[int, float] | None:
        same = [i for i, k in self.keys.items() if k == text_key]
        return (min(same), 1.0) if same else None


# -- ExactCosine -----------------------------------------------------------------------------------
def test_exact_cosine_equals_brute_force_through_growth_reuse_and_ties() -> None:
    rng = np.random.default_rng(2024)
    pool = grid_vectors(40, rng)  # a small pool: many cached duplicates, so many exact ties
    fast, ref = ExactCosine(GRID_DIM), BruteCosine()
    live: list[int] = []
    next_id, max_live, reused, ties_checked = 0, 0, 0, 0
    # Grow past the initial 256 slots, shrink, grow again: adds after removals reuse freed slots,
    # so slot order stops following id order and the tie rule is tested on ids, not slots.
    for target in (300, 60, 420, 0, 200):
        while len(live) != target:
            grow = len(live) < target
            if rng.random() < (0.8 if grow else 0.2):
                vector = pool[rng.integers(len(pool))]
                # Slots are only allocated when none is free, so fewer live entries than the
                # most ever live means this add reuses a freed slot.
                reused += len(live) < max_live
                fast.add(next_id, vector, text_key=next_id)
                ref.add(next_id, vector)
                live.append(next_id)
                next_id += 1
            else:
                victim = live.pop(int(rng.integers(len(live)))) if live else None
                if victim is not None:
                    fast.remove(victim)
                    ref.remove(victim)
            max_live = max(max_live, len(live))
            query = pool[rng.integers(len(pool))] if rng.random() < 0.7 else grid_vectors(1, rng)[0]
            ties_checked += ref.num_tied_best(query) > 1
            assert fast.nearest(query, text_key=-1) == ref.nearest(query)
            assert len(fast) == len(live)
        if target == 0:
            assert fast.nearest(pool[0], text_key=-1) is None
    # Guards: the sequence really exercised what it claims to.
    assert max_live > 256 and reused > 500 and ties_checked > 1000


@settings(max_examples=200, deadline=None)
@given(
    initial_slots=st.integers(1, 4),
    ops=st.lists(st.tuples(st.sampled_from(["add", "remove", "query"]), st.integers(0, 5), st.integers(0, 10**6))),
)
def test_exact_cosine_matches_brute_force_on_random_sequences(
    initial_slots: int, ops: list[tuple[str, int, int]]
) -> None:
    pool = grid_vectors(6, np.random.default_rng(5))
    fast, ref = ExactCosine(GRID_DIM, initial_slots=initial_slots), BruteCosine()
    unused = list(range(10**3))  # entry ids in any order: the tie rule is on ids, not admission
    np.random.default_rng(6).shuffle(unused)
    for op, which, pick in ops:
        if op == "add" and unused:
            entry_id = unused.pop()
            fast.add(entry_id, pool[which], text_key=entry_id)
            ref.add(entry_id, pool[which])
        elif op == "remove" and ref.vectors:
            entry_id = sorted(ref.vectors)[pick % len(ref.vectors)]
            fast.remove(entry_id)
            ref.remove(entry_id)
        assert fast.nearest(pool[which], text_key=-1) == ref.nearest(pool[which])
        assert len(fast) == len(ref.vectors)


def test_exact_cosine_on_real_valued_vectors() -> None:
    """Gaussian directions in 64 dimensions: float32 rounding allowed, within 1e-6 of float64."""
    rng = np.random.default_rng(7)
    raw = rng.standard_normal((900, 64))
    vectors = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)
    fast, ref = ExactCosine(64), BruteCosine()
    for entry_id in range(600):
        fast.add(entry_id, vectors[entry_id], text_key=entry_id)
        ref.add(entry_id, vectors[entry_id])
    for entry_id in rng.choice(600, size=250, replace=False).tolist():
        fast.remove(entry_id)
        ref.remove(entry_id)
    for entry_id in range(600, 900):
        fast.add(entry_id, vectors[entry_id], text_key=entry_id)
        ref.add(entry_id, vectors[entry_id])
    for query in vectors[rng.integers(0, 900, size=300)]:
        got = fast.nearest(query, text_key=-1)
        want = ref.nearest(query)
        assert got is not None and want is not None
        _, sims = ref.similarities(query)
        second = np.partition(sims, -2)[-2]
        # A different id is acceptable only if the float64 similarities are within rounding.
        assert got[0] == want[0] or want[1] - second < 1e-6
        assert got[1] == pytest.approx(want[1], abs=1e-6)


# -- ExactKey -------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["add", "remove", "query"]), st.integers(0, 4), st.integers(0, 10**6))))
def test_exact_key_matches_brute_force(ops: list[tuple[str, int, int]]) -> None:
    vector = grid_vectors(1, np.random.default_rng(8))[0]  # one vector for all: only keys count
    fast, ref = ExactKey(GRID_DIM), BruteKey()
    next_id = 0
    for op, key, pick in ops:
        if op == "add":
            fast.add(next_id, vector, key)
            ref.keys[next_id] = key
            next_id += 1
        elif op == "remove" and ref.keys:
            entry_id = sorted(ref.keys)[pick % len(ref.keys)]
            fast.remove(entry_id)
            del ref.keys[entry_id]
        assert fast.nearest(vector, key) == ref.nearest(key)
        assert len(fast) == len(ref.keys)


def test_exact_key_ignores_vectors() -> None:
    rng = np.random.default_rng(9)
    a, b = grid_vectors(2, rng)
    index = ExactKey(GRID_DIM)
    index.add(0, a, text_key=1)
    assert index.nearest(a, text_key=2) is None  # same vector, other text: a miss
    assert index.nearest(b, text_key=1) == (0, 1.0)  # other vector, same text: a hit at 1.0


# -- every registered retriever ---------------------------------------------------------------------
@pytest.mark.parametrize("name", RETRIEVERS.names())
def test_empty_index_finds_nothing(name: str) -> None:
    index = make(name, GRID_DIM)
    vector = grid_vectors(1, np.random.default_rng(10))[0]
    assert index.nearest(vector, 0) is None and len(index) == 0
    index.add(4, vector, 0)
    assert len(index) == 1
    index.remove(4)
    assert index.nearest(vector, 0) is None and len(index) == 0


@pytest.mark.parametrize("name", RETRIEVERS.names())
def test_identical_prompts_answer_oldest_first(name: str) -> None:
    """Same text and vector cached three times (misses in flight): the oldest answers, and each
    removal promotes the next-oldest, whatever order they are removed in."""
    rng = np.random.default_rng(11)
    vector, other = grid_vectors(2, rng)
    index = make(name, GRID_DIM)
    index.add(2, other, 7)
    for entry_id in (3, 5, 9):
        index.add(entry_id, vector, 1)
    assert index.nearest(vector, 1) == (3, 1.0)
    index.remove(5)  # removing a younger copy changes nothing
    assert index.nearest(vector, 1) == (3, 1.0)
    index.remove(3)
    assert index.nearest(vector, 1) == (9, 1.0)
    index.add(12, vector, 1)
    assert index.nearest(vector, 1) == (9, 1.0)
    index.remove(9)
    assert index.nearest(vector, 1) == (12, 1.0)
    assert len(index) == 2


@pytest.mark.parametrize("name", RETRIEVERS.names())
def test_every_cached_prompt_finds_itself(name: str) -> None:
    rng = np.random.default_rng(12)
    vectors = np.unique(grid_vectors(300, rng), axis=0)  # distinct texts with distinct vectors
    index = make(name, GRID_DIM)
    for entry_id, vector in enumerate(vectors):
        index.add(entry_id, vector, entry_id)
    for entry_id, vector in enumerate(vectors):
        assert index.nearest(vector, entry_id) == (entry_id, 1.0)
