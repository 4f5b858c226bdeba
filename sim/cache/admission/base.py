"""The admission interface: asked once per offered miss, before any eviction; the store does the rest."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from sim.cache.params import AdmissionParams
from sim.cache.policies.base import RequestContext


class Admission(ABC):
    """Decides whether a miss is admitted. It sees each offered miss once, in order, and keeps its own
    state (a rejected miss leaves the cache and the eviction policy untouched)."""

    name: ClassVar[str]

    def __init__(self, params: AdmissionParams | None = None, rng: np.random.Generator | None = None) -> None:
        self.params = params if params is not None else AdmissionParams()
        # The store's builder passes the run's "admission" stream (sim.rng.rng_stream(seed, "admission")).
        self._rng = rng if rng is not None else np.random.default_rng(0)

    @abstractmethod
    def admit(self, ctx: RequestContext) -> bool:
        """Whether the miss of ``ctx`` (its prompt key, request index and time) enters the cache."""
