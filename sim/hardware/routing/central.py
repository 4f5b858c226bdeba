"""Central: one FCFS queue for every GPU; a free GPU takes the head. With several idle, the fastest starts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sim.hardware.routing import ROUTERS
from sim.hardware.routing.base import GpuState, Router


@ROUTERS.register("central")
class Central(Router):
    """Work-conserving M/G/c discipline: no GPU idles while a request waits (the default)."""

    name = "central"
    shared_queue = True

    def choose(self, candidates: Sequence[GpuState], expected_s: Callable[[GpuState], float], now: float) -> GpuState:
        return min(candidates, key=lambda g: (expected_s(g), g.index))
