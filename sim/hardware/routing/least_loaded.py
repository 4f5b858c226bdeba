"""Least-loaded: the GPU with the fewest requests queued or in service (blind to GPU speed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sim.hardware.routing import ROUTERS
from sim.hardware.routing.base import GpuState, Router


@ROUTERS.register("least_loaded")
class LeastLoaded(Router):
    name = "least_loaded"

    def choose(self, candidates: Sequence[GpuState], expected_s: Callable[[GpuState], float], now: float) -> GpuState:
        return min(candidates, key=lambda g: (len(g.queue) + g.in_service, g.index))
