"""The routing interface: which GPU serves a request (or, with one shared queue, which idle GPU starts)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from typing import ClassVar


class GpuState:
    """What a router may read about one GPU; the engine keeps it current."""

    __slots__ = ("busy_until", "in_service", "index", "kind", "queue", "queued_work_s")

    def __init__(self, index: int, kind: str, queue: deque[int]) -> None:
        self.index = index
        self.kind = kind
        self.queue = queue  # request indices waiting for this GPU (shared by all GPUs with a central queue)
        self.in_service = 0  # requests in the running batch
        self.busy_until = 0.0  # when the running batch ends
        self.queued_work_s = 0.0  # expected service of the requests queued for this GPU alone


class Router(ABC):
    """Routers are plain Python taking ``now``; ties always go to the lowest GPU index (determinism)."""

    name: ClassVar[str]
    #: True: one FCFS queue for all GPUs and ``choose`` picks among the idle GPUs which one starts;
    #: False: ``choose`` picks, at arrival, the GPU whose own FCFS queue the request joins.
    shared_queue: ClassVar[bool] = False

    @abstractmethod
    def choose(self, candidates: Sequence[GpuState], expected_s: Callable[[GpuState], float], now: float) -> GpuState:
        """``expected_s(gpu)``: this request's expected service time on that GPU at batch size 1."""
