"""Exact top-1 cosine search over a numpy slot matrix (canonical cosine): the reference faster methods must match."""

from __future__ import annotations

import numpy as np

from sim.retrieval import RETRIEVERS, cosine
from sim.retrieval.base import Retriever


@RETRIEVERS.register("exact_cosine")
class ExactCosine(Retriever):
    """Vectors live in rows of a matrix that doubles when full (small at first: a per-user scope makes
    thousands of partitions); removal frees a slot for reuse (~µs per update)."""

    name = "exact_cosine"

    def __init__(self, dim: int, initial_slots: int = 16) -> None:
        super().__init__(dim)
        self._mat = np.zeros((initial_slots, dim), dtype=np.float32)
        self._ids = np.full(initial_slots, -1, dtype=np.int64)
        self._slot_of: dict[int, int] = {}
        self._free: list[int] = []
        self._top = 0  # slots [0, _top) have been used at least once

    def add(self, entry_id: int, vector: np.ndarray, text_key: int) -> None:
        if self._free:
            slot = self._free.pop()
        else:
            if self._top == len(self._ids):
                self._grow()
            slot = self._top
            self._top += 1
        self._mat[slot] = vector
        self._ids[slot] = entry_id
        self._slot_of[entry_id] = slot

    def _grow(self) -> None:
        n = len(self._ids)
        mat = np.zeros((2 * n, self._mat.shape[1]), dtype=np.float32)
        mat[:n] = self._mat
        ids = np.full(2 * n, -1, dtype=np.int64)
        ids[:n] = self._ids
        self._mat, self._ids = mat, ids

    def remove(self, entry_id: int) -> None:
        slot = self._slot_of.pop(entry_id)
        self._ids[slot] = -1
        self._mat[slot] = 0.0
        self._free.append(slot)

    def nearest(self, vector: np.ndarray, text_key: int, request: int = -1) -> tuple[int, float] | None:
        if not self._slot_of:
            return None
        return cosine.nearest(self._mat[:self._top], self._ids[:self._top], vector)

    def __len__(self) -> int:
        return len(self._slot_of)
