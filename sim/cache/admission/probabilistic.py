"""Probabilistic: admit a miss with probability q, an independent draw per offered miss."""

from __future__ import annotations

from sim.cache.admission import ADMISSIONS
from sim.cache.admission.base import Admission
from sim.cache.policies.base import RequestContext


@ADMISSIONS.register("probabilistic")
class Probabilistic(Admission):
    """Reads ``q`` (in (0, 1]; 1 = always). One draw per offered miss from the "admission" stream, so
    two runs with one seed admit the same misses. A one-hit-wonder filter in expectation: a prompt
    seen m times is admitted at least once with probability 1 - (1 - q)^m."""

    name = "probabilistic"

    def admit(self, ctx: RequestContext) -> bool:
        return bool(self._rng.random() < self.params.q)
