"""What happens to a request: the Scenario an executor carries out (per-request inputs, service-time model,
serving mode with the spec of its cache), and the record schema every executor writes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sim.hardware.profiles import Frontend, StorageTier
from sim.requests import Requests
from sim.scenario.modes.base import ServingMode
from sim.scenario.service import Gpu, ServiceModel


@dataclass(frozen=True)
class Scenario:
    """One run as frozen data, ready to execute any number of times: the serving mode holds the *spec* of its
    cache, and each execution opens a fresh live cache and fresh routers from it.

    Times are plain seconds; nothing here holds a clock. ``routing``: the router's registered name (a router
    keeps state, so each execution makes its own). ``write_delay``: what a miss produced becomes usable only
    after the storage write (timed executors); ``batch_window_s``: a GPU with a partial batch waits this long
    for more requests.
    """

    requests: Requests
    mode: ServingMode
    gpus: tuple[Gpu, ...]
    routing: str
    frontend: Frontend
    tier: StorageTier
    write_delay: bool = True
    batch_window_s: float = 0.0
    #: the similarity map file the mode's lookups apply (None: raw cosine, or a mode that does not search)
    similarity_map: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpus", tuple(self.gpus))

    @cached_property
    def service(self) -> ServiceModel:
        return ServiceModel(self.gpus)

    def __len__(self) -> int:
        return len(self.requests)

    @property
    def gpu_kinds(self) -> list[str]:
        return [g.kind for g in self.gpus]


def warmup_mask(arrival_s: np.ndarray, warmup_requests: int, warmup_s: float) -> np.ndarray:
    """Requests excluded from summary statistics: the first ``warmup_requests`` and those arriving
    within ``warmup_s`` of the first arrival (either rule; both 0 = none)."""
    mask = np.zeros(len(arrival_s), dtype=bool)
    mask[:warmup_requests] = True
    if warmup_s > 0 and len(arrival_s):
        mask |= arrival_s < arrival_s[0] + warmup_s
    return mask


__all__ = ["Gpu", "Requests", "Scenario", "ServiceModel", "warmup_mask"]
