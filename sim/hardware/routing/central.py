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
        """The idle GPU with the shortest expected service; ties to the lowest index (a plain loop: this runs once
        per request, over every idle GPU)."""
        best = candidates[0]
        best_s = expected_s(best)
        for g in candidates:
            s = expected_s(g)
            if s < best_s or (s == best_s and g.index < best.index):
                best, best_s = g, s
        return best
