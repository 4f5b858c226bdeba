"""The executor interface, the choice of implementation, and the one place a decision is copied into the records."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from sim.cache.core.support import compiled_support
from sim.cache.spec import CacheSpec, LiveCache
from sim.requests import Requests
from sim.scenario import Scenario
from sim.scenario.modes.base import Admitted, Decision
from sim.scenario.records import Records

#: how a run's cache may be carried out (run.implementation)
IMPLEMENTATIONS = ("reference", "compiled")


class Executor(ABC):
    """Carries out a Scenario with one semantics (``name`` is run.executor): when lookups and admissions happen
    and whether time is simulated. The cache underneath is the reference or the compiled implementation of the
    scenario's cache spec, chosen by ``choose_implementation``; both give the same records."""

    name: ClassVar[str]
    #: whether the records carry times (queue waits, service, latency); the sequential replay has none
    timed: ClassVar[bool]
    #: when what a miss produced becomes usable, as summaries name it
    admission: ClassVar[str]
    #: counters for the summary, filled by run() (hits declined, admissions refused, retrieval fallbacks)
    stats: dict[str, int]

    def __init__(self) -> None:
        self.stats = {}

    def supports(self, scenario: Scenario) -> str | None:
        """None when this executor can carry the scenario out, else why not (one line naming the key)."""
        return None

    def run(self, scenario: Scenario, implementation: str = "reference", cache: LiveCache | None = None) -> Records:
        """Execute every request of ``scenario`` once, on a fresh cache of the given implementation (or ``cache``,
        already open: tests and calibration hand one in). The scenario itself is not changed."""
        spec = scenario.mode.cache_spec
        if cache is not None and spec is None:
            raise ValueError(f"serving mode {scenario.mode.name} keeps no cache, but a cache was handed in")
        if cache is None and spec is not None:
            cache = open_cache(spec, scenario.requests, implementation)
        records = self._execute(scenario, cache)
        self.stats = cache.stats() if cache is not None else {}
        return records

    @abstractmethod
    def _execute(self, scenario: Scenario, cache: LiveCache | None) -> Records:
        """Every request of ``scenario`` against ``cache`` (None: the mode keeps none)."""


def open_cache(spec: CacheSpec, requests: Requests, implementation: str) -> LiveCache:
    """A fresh live cache of ``spec`` over ``requests``: ``reference`` (the Python store and policies, the
    oracle) or ``compiled`` (the core, imported only now: it compiles with numba; raises ValueError for a spec
    it does not support)."""
    if implementation == "compiled":
        from sim.cache.core.cache import CompiledCache

        return CompiledCache(spec, requests)
    if implementation != "reference":
        raise ValueError(f"implementation: reference or compiled, got {implementation!r}")
    from sim.cache.reference import ReferenceCache

    return ReferenceCache(spec, requests)


def choose_implementation(scenario: Scenario, asked: str) -> tuple[str, str | None]:
    """(implementation to run, a one-line notice or None) for run.implementation ``asked`` (auto, reference or
    compiled): auto takes the compiled core wherever it supports the scenario's cache; compiled that is not
    supported falls back to the reference and says why. A mode without a cache runs no cache code at all."""
    spec = scenario.mode.cache_spec
    if spec is None or asked == "reference":
        return "reference", None
    why = compiled_support(spec)
    if why is None:
        return "compiled", None
    if asked == "compiled":
        return "reference", f"run.implementation compiled: {why}; running the reference implementation"
    return "reference", None


def record_decision(rec: Records | dict[str, list], i: int, d: Decision) -> None:
    rec["similarity"][i] = d.similarity
    rec["similarity_raw"][i] = d.similarity_raw
    rec["matched_entry"][i] = d.matched_entry
    rec["k_selected"][i] = d.k_selected
    rec["k_used"][i] = d.k_used
    rec["hole"][i] = d.hole
    rec["outcome"][i] = d.outcome
    rec["gpu_steps"][i] = d.gpu_steps


def record_admission(rec: Records | dict[str, list], i: int, now: float, done: Admitted) -> None:
    rec["admit_s"][i] = now
    rec["admitted_entry"][i] = done.entry_id
    rec["num_evicted"][i] = done.num_evicted
