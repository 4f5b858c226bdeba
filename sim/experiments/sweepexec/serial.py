"""Serial: every sweep point in this process, in order (the default for one job)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sim.experiments.sweepexec import SWEEP_EXECUTORS
from sim.experiments.sweepexec.base import Closing, Point, R, SweepExecutor


class SerialExecutor(Closing):
    """Every point in this process, in the given order."""

    def execute(self, points: list[Point], fn: Callable[[Any], R]) -> Iterator[tuple[str, R]]:
        for name, value in points:
            yield name, fn(value)


@SWEEP_EXECUTORS.register("serial")
def _serial(jobs: int, cluster: str | None) -> SweepExecutor:
    return SerialExecutor()
