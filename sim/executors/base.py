"""The executor interface, and the one place a mode's decision is copied into the records."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from sim.scenario import Scenario
from sim.scenario.modes.base import Admitted, Decision
from sim.scenario.records import Records


class Executor(ABC):
    name: ClassVar[str]
    #: whether the records carry times (queue waits, service, latency); the sequential replay has none
    timed: ClassVar[bool]
    #: when what a miss produced becomes usable, as summaries name it
    admission: ClassVar[str]
    #: counters for the summary, filled by run() (e.g. a replay's exact-search fallbacks)
    stats: dict[str, int]

    def __init__(self) -> None:
        self.stats = {}

    @abstractmethod
    def run(self, scenario: Scenario) -> Records:
        """Execute every request of ``scenario`` (which it consumes: the mode's cache state advances)."""


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
