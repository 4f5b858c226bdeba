"""The serving-mode interface: what a request's lookup decides and what its completion admits.

A mode is plain Python taking ``now`` (no clock of its own): every executor asks it the same two
questions, so the SimPy engine, the sequential replay and the real-GPU executor follow one set of rules.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

from sim.cache.store import CacheStore
from sim.scenario.records import NO_CACHE

Caches = Literal["nothing", "latents", "images"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What one request's lookup decided; executors carry it out and copy it into the records."""

    outcome: int  # index into sim.scenario.records.OUTCOMES
    gpu_steps: int  # denoising steps to run on a GPU (0: no GPU work at all)
    latency_class: int  # which (model, shape) latency table the GPU work uses
    fetch_bytes: int = 0  # cached object read from the storage tier before the GPU (0: none)
    admit_bytes: int = 0  # bytes this request writes for the cache when it completes (0: admits nothing)
    similarity: float = float("nan")
    similarity_raw: float = float("nan")
    matched_entry: int = -1
    k_selected: int = 0
    k_used: int = 0
    hole: bool = False


@dataclass(frozen=True, slots=True)
class Admitted:
    entry_id: int  # -1: not admitted (larger than the whole cache)
    num_evicted: int  # cached units (noises or images) evicted to make room


class ServingMode(ABC):
    """One way of serving a trace. Subclasses live one per file in this package (YAML name = file name)."""

    name: ClassVar[str]
    #: what the mode keeps between requests (an instance may narrow it, e.g. small_model without a cache)
    caches: Caches
    #: whether a request is embedded and searched before it reaches a GPU (front-end latency applies)
    searches: bool
    #: config key of the quality profile this mode's outcomes are scored with (dotted)
    quality_key: ClassVar[str] = "quality.profile"

    def search_size(self, i: int) -> int:
        """Cached prompts request ``i``'s search scans (its latency model grows with them)."""
        return 0

    @abstractmethod
    def decide(self, i: int, now: float) -> Decision:
        """Look request ``i`` up at time ``now`` and say how it is served."""

    def admit(self, i: int, now: float) -> Admitted:
        """Insert what request ``i`` produced (called only when its decision has ``admit_bytes``)."""
        raise NotImplementedError(f"serving mode {self.name} admits nothing")

    def capacity_bytes(self) -> int | None:
        """Storage the mode's cache occupies when full, for the storage bill (None: no cache)."""
        return None

    def stats(self) -> dict[str, int]:
        """Counters for the summary that only the mode can know: hits its cache policy declined (served as
        misses) and misses it refused to admit."""
        store = getattr(self, "store", None)
        if store is None:
            return {}
        out = {"hits_declined": store.num_declined, "admissions_refused": store.num_refused}
        counts = store.retrieval_counts()
        if not any(counts.values()):  # the store's retriever was never asked (a replay that reads its config only)
            return out
        return out | {f"retrieval_{name}": n for name, n in counts.items()}


def uncached(latency_class: int, num_steps: int) -> Decision:
    """A request generated from scratch with no cache at all."""
    return Decision(NO_CACHE, num_steps, latency_class)


def store_capacity_bytes(store: CacheStore, unit_bytes: int) -> int:
    """The binding limit of a store: its byte capacity, or its unit capacity x the largest unit, if smaller."""
    limits = [store.capacity_bytes, store.capacity_noises * unit_bytes]
    return min(v for v in limits if v < 1 << 62)
