"""Exact-key retrieval: a hit only on the identical prompt text (similarity 1), as in a plain cache."""

from __future__ import annotations

import numpy as np

from sim.retrieval import RETRIEVERS
from sim.retrieval.base import Retriever


@RETRIEVERS.register("exact_key")
class ExactKey(Retriever):
    """Lets the cache policies be checked against an exact-match cache simulator (libCacheSim)."""

    name = "exact_key"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        # Two entries with one text can coexist (two misses in flight); the oldest answers lookups.
        # Entry ids grow with admission order, so each list stays sorted oldest-first.
        self._by_key: dict[int, list[int]] = {}
        self._key_of: dict[int, int] = {}

    def add(self, entry_id: int, vector: np.ndarray, text_key: int) -> None:
        self._by_key.setdefault(text_key, []).append(entry_id)
        self._key_of[entry_id] = text_key

    def remove(self, entry_id: int) -> None:
        key = self._key_of.pop(entry_id)
        same = self._by_key[key]
        same.remove(entry_id)
        if not same:
            del self._by_key[key]

    def nearest(self, vector: np.ndarray, text_key: int, request: int = -1) -> tuple[int, float] | None:
        same = self._by_key.get(text_key)
        return None if same is None else (same[0], 1.0)

    def __len__(self) -> int:
        return len(self._key_of)
