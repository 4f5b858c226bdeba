"""Shortest expected wait: the GPU that would finish this request first, counting its running batch,
its queue's expected work and this request's own service time on that GPU type."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sim.hardware.routing import ROUTERS
from sim.hardware.routing.base import GpuState, Router


@ROUTERS.register("shortest_expected_wait")
class ShortestExpectedWait(Router):
    name = "shortest_expected_wait"

    def choose(self, candidates: Sequence[GpuState], expected_s: Callable[[GpuState], float], now: float) -> GpuState:
        def finish(g: GpuState) -> tuple[float, int]:
            return (max(g.busy_until - now, 0.0) + g.queued_work_s + expected_s(g), g.index)

        return min(candidates, key=finish)
