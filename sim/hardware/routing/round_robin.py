"""Round-robin: requests go to GPUs in turn, whatever their load or speed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sim.hardware.routing import ROUTERS
from sim.hardware.routing.base import GpuState, Router


@ROUTERS.register("round_robin")
class RoundRobin(Router):
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, candidates: Sequence[GpuState], expected_s: Callable[[GpuState], float], now: float) -> GpuState:
        gpu = candidates[self._next % len(candidates)]
        self._next += 1
        return gpu
