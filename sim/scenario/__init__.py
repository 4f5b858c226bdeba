"""What happens to a request: the Scenario an executor carries out (per-request inputs, service-time
model, serving mode with its store), and the record schema every executor writes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.hardware.profiles import Frontend, StorageTier
from sim.hardware.routing import Router
from sim.scenario.modes.base import ServingMode
from sim.scenario.requests import Requests
from sim.scenario.service import Gpu, ServiceModel


@dataclass
class Scenario:
    """One run, ready to execute once: the serving mode holds the cache state, so an executor consumes it.

    Times are plain seconds; nothing here holds a clock. ``write_delay``: what a miss produced becomes
    usable only after the storage write (timed executors); ``batch_window_s``: a GPU with a partial
    batch waits this long for more requests.
    """

    requests: Requests
    mode: ServingMode
    gpus: tuple[Gpu, ...]
    router: Router
    frontend: Frontend
    tier: StorageTier
    write_delay: bool = True
    batch_window_s: float = 0.0
    #: the similarity map file the mode's lookups apply (None: raw cosine, or a mode that does not search)
    similarity_map: str | None = None
    service: ServiceModel = field(init=False)

    def __post_init__(self) -> None:
        self.gpus = tuple(self.gpus)
        self.service = ServiceModel(self.gpus)

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
