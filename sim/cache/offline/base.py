"""What an offline reference knows in advance (the Future), and the interface it adds to a policy."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from sim.cache.kselect import MISS, KTable
from sim.cache.params import PolicyParams
from sim.cache.policies.base import Policy, Unit
from sim.retrieval import cosine

#: prompt x prompt similarities kept in memory at most (float32: 4 bytes each)
FULL_CELLS = 25_000_000

#: one prompt to insert before the first request: (partition, vector, prompt key, noise bytes)
Preload = tuple[Hashable, np.ndarray, int, int]


@dataclass(frozen=True)
class Future:
    """The whole trace as the serving mode will see it (the fields of sim.scenario.Requests it needs),
    with the K table and similarity map of the store, so a reference computes the K a request would use."""

    vectors: np.ndarray  # float32 [num_prompts, dim]
    prompt_index: np.ndarray  # int64 per request
    partition: np.ndarray  # int64 per request
    num_steps: np.ndarray  # int64 per request
    noise_bytes: np.ndarray  # int64 per request
    table: KTable
    ks: tuple[int, ...]
    scale: Callable[[np.ndarray], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.prompt_index)

    def similarity(self, requests: np.ndarray, prompts: np.ndarray, partitions: np.ndarray) -> np.ndarray:
        """Similarity (K table's scale) of each of ``requests`` (rows) to each cached prompt key in its
        partition (columns); -inf where the partitions differ (the store never searches across them)."""
        full = self._full()
        if full is not None:
            sim = full[self.prompt_index[requests][:, None], prompts[None, :]]
        else:
            raw = cosine.cosine_matrix(self.vectors[self.prompt_index[requests]], self.vectors[prompts])
            sim = self.scale(raw) if self.scale is not None else raw
        same = self.partition[requests][:, None] == partitions[None, :]
        return np.where(same, sim, -np.inf)

    def _full(self) -> np.ndarray | None:
        """Prompt x prompt similarity on the K table's scale, computed once when it fits in FULL_CELLS."""
        n = len(self.vectors)
        if n * n > FULL_CELLS:
            return None
        cache = self.__dict__.get("_full_sim")
        if cache is None:
            raw = cosine.cosine_matrix(self.vectors, self.vectors)
            cache = (self.scale(raw) if self.scale is not None else raw).astype(np.float32)
            object.__setattr__(self, "_full_sim", cache)  # a memo on a frozen dataclass: same value forever
        return cache

    def k_of(self, similarity: np.ndarray, requests: np.ndarray) -> np.ndarray:
        """K asked at each similarity (rows: ``requests``), capped at the request's N - 1, as the store does."""
        return np.minimum(self.table.select_array(similarity), (self.num_steps[requests] - 1)[:, None])

    def resolve(self, k_asked: np.ndarray) -> np.ndarray:
        """Largest cached K <= each asked K (every K of the prompt cached), 0 where none is."""
        ks = np.asarray(self.ks)
        pos = np.searchsorted(ks, k_asked, side="right") - 1
        return np.where(pos >= 0, ks[np.maximum(pos, 0)], MISS)


class OfflineReference(Policy):
    """A policy built with the whole trace. ``initial_content`` is inserted before the first request
    (a static reference); the store's hooks then run as for any policy."""

    units: ClassVar[tuple[Unit, ...]] = ("noise", "prompt")
    #: whether the reference needs the sequential executor (it reads request indices as the clock)
    sequential_only = True
    #: whether ``initial_content`` inserts prompts before the first request (then prompts the trace asks for only
    #: later are cached early: candidate lists, which list each request's earlier prompts, cannot see them)
    preloads = False

    def __init__(self, unit: Unit, params: PolicyParams | None = None, rng: np.random.Generator | None = None,
                 future: Future | None = None) -> None:
        super().__init__(unit, params, rng)
        self.future = future

    def initial_content(self, capacity_noises: int, capacity_bytes: int) -> list[Preload]:
        """Prompts to insert before the first request, within the store's capacities (none by default)."""
        return []

    def _need_future(self) -> Future:
        if self.future is None:
            raise ValueError(f"offline reference {self.name} needs the trace (future=...) at construction")
        return self.future
