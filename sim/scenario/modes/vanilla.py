"""Vanilla serving: no cache, no embedding or search; every request runs all N steps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.cache.spec import LiveCache
from sim.requests import Requests
from sim.scenario.modes import MODES
from sim.scenario.modes.base import Decision, ServingMode, uncached

if TYPE_CHECKING:
    from sim.build import BuildParts


@MODES.register("vanilla")
class Vanilla(ServingMode):
    """The baseline every cache is measured against (NIRVANA's VANILLA row)."""

    name = "vanilla"
    caches = "nothing"
    searches = False

    def __init__(self, requests: Requests) -> None:
        self._req = requests

    @classmethod
    def from_config(cls, parts: BuildParts) -> Vanilla:
        return cls(parts.requests)

    def decide(self, cache: LiveCache | None, i: int, now: float) -> Decision:
        return uncached(int(self._req.latency_class[i]), int(self._req.num_steps[i]))
