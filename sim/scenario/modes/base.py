"""The serving-mode interface: what a request's lookup decides and what its completion admits.

A mode is a frozen description (its requests and the CacheSpec of what it keeps); the state of one
execution lives in the live cache an executor opens from that spec and passes to every call. So one
Scenario can be executed many times, and every executor (the SimPy engine, the sequential replay, the
real-GPU validation) follows one set of rules. Each mode builds itself from its config section
(``from_config``), registered under its file name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Literal, NamedTuple

from sim.cache.spec import CacheSpec, LiveCache
from sim.scenario.records import NO_CACHE

if TYPE_CHECKING:
    from sim.build import BuildParts

Caches = Literal["nothing", "latents", "images"]


class Decision(NamedTuple):
    """What one request's lookup decided; executors carry it out and copy it into the records (a named tuple:
    immutable, and five times cheaper to build than a frozen dataclass on the engine's per-request path)."""

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


class Admitted(NamedTuple):
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
    #: the cache this mode keeps (None: none); executors open a live cache from it per execution
    cache_spec: CacheSpec | None = None

    @classmethod
    @abstractmethod
    def from_config(cls, parts: BuildParts) -> ServingMode:
        """The mode of a run, from its config section and the run's requests (the builder's parts)."""

    def search_size(self, cache: LiveCache | None, i: int) -> int:
        """Cached prompts request ``i``'s search scans (its latency model grows with them)."""
        return cache.partition_size(i) if cache is not None else 0

    @abstractmethod
    def decide(self, cache: LiveCache | None, i: int, now: float) -> Decision:
        """Look request ``i`` up at time ``now`` and say how it is served."""

    def admit(self, cache: LiveCache | None, i: int, now: float) -> Admitted:
        """Insert what request ``i`` produced (called only when its decision has ``admit_bytes``)."""
        if cache is None:
            raise NotImplementedError(f"serving mode {self.name} admits nothing")
        done = cache.admit(i, now)
        return Admitted(done.entry_id, done.num_evicted_noises)

    def capacity_bytes(self) -> int | None:
        """Storage the mode's cache occupies when full, for the storage bill (None: no cache)."""
        return self.cache_spec.capacity_bytes_when_full() if self.cache_spec is not None else None


def uncached(latency_class: int, num_steps: int) -> Decision:
    """A request generated from scratch with no cache at all."""
    return Decision(NO_CACHE, num_steps, latency_class)
