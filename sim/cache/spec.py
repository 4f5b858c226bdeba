"""The cache of a run as data (CacheSpec), and the interface of a live cache that executors drive by request index.

A spec is frozen and picklable: a Scenario holds it, not a store, so a Scenario can be executed many times
(validation, SLO probes). Each execution opens a fresh live cache from it: the reference store and policies
(sim/cache/store.py, sim/cache/policies/) or the compiled core (sim/cache/core/), which give identical
records wherever the core supports the spec (``compiled_support``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sim.cache.kselect import KTable
from sim.cache.params import AdmissionParams, PolicyParams
from sim.cache.policies.base import Unit
from sim.cache.store import AccessResult, AdmitResult
from sim.retrieval.precompute import Candidates


class SimilarityScale(Protocol):
    """A monotone map from the retriever's cosine to the K table's scale (sim.embedding.simmap.SimilarityMap)."""

    @property
    def x(self) -> tuple[float, ...]: ...

    @property
    def y(self) -> tuple[float, ...]: ...

    @property
    def source(self) -> str: ...

    def apply(self, similarity: float) -> float: ...

    def apply_array(self, similarity: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class CacheSpec:
    """Everything a run's cache is: what a miss stores (``ks``), how similarity picks K (``table``, after
    ``similarity_map``), who is evicted (policy, unit, params), who enters (admission), how much fits
    (capacities: both hold when both are set), how the nearest cached prompt is found (``retrieval``, and
    the precomputed ``candidates`` of the fast path), and the seed of the randomised policies' streams.

    ``capped``: a hit's K is capped at its request's N - 1 (latents; an image cache has no steps to skip).
    ``unit_bytes[i]``: bytes of one unit request i stores (a latent, or an image)."""

    ks: tuple[int, ...]
    table: KTable
    policy: str
    unit: Unit
    policy_params: PolicyParams
    admission: str
    admission_params: AdmissionParams
    capacity_noises: int | None
    capacity_bytes: int | None
    retrieval: str
    unit_bytes: np.ndarray
    seed: int = 0
    capped: bool = True
    similarity_map: SimilarityScale | None = None
    candidates: Candidates | None = None

    @property
    def scale(self) -> Callable[[float], float] | None:
        """The similarity map as a function (None: the K table reads raw cosines)."""
        return self.similarity_map.apply if self.similarity_map is not None else None

    def capacity_bytes_when_full(self) -> int:
        """The binding limit: the byte capacity, or the unit capacity x the largest unit, if smaller."""
        unit = int(self.unit_bytes.max()) if len(self.unit_bytes) else 0
        limits = [v for v in (self.capacity_bytes, None if self.capacity_noises is None
                              else self.capacity_noises * unit) if v is not None]
        return min(limits)


class LiveCache(ABC):
    """One execution's cache, asked by request index: the spec's store, policy and retrieval state.

    Both executors call it; the sequential replay may instead hand a whole run to ``replay`` (compiled only).
    """

    #: which implementation this is (the summary names it)
    implementation: str

    @abstractmethod
    def lookup(self, i: int, now: float) -> AccessResult:
        """Request i's nearest cached prompt at time ``now``, K from its similarity, holes resolved; a hit
        counts a use of the unit it reads."""

    @abstractmethod
    def admit(self, i: int, now: float) -> AdmitResult:
        """Insert what request i's miss produced (a unit at every cached K), evicting by policy until it fits."""

    @abstractmethod
    def partition_size(self, i: int) -> int:
        """Cached prompts request i's search scans (its retrieval partition's)."""

    @abstractmethod
    def stats(self) -> dict[str, int]:
        """Counters for the summary: hits the policy declined, misses refused admission, and how retrieval
        answered (the fast path's exact fallbacks)."""

