"""Second hit: admit a prompt only on its second miss within a window (one-hit wonders never enter)."""

from __future__ import annotations

import numpy as np

from sim.cache.admission import ADMISSIONS
from sim.cache.admission.base import Admission
from sim.cache.params import AdmissionParams
from sim.cache.policies.base import RequestContext


@ADMISSIONS.register("second_hit")
class SecondHit(Admission):
    """Remembers the last miss of each prompt key (ghost entries, no data); a miss is admitted when the
    same prompt text missed before within ``window_requests`` requests (request index difference) or
    ``window_s`` seconds. An admitted or expired prompt starts over: its next admission needs two misses
    again. After the "2-hit" filters of CDN caches (e.g. Maggs & Sitaraman, SIGCOMM CCR 2015)."""

    name = "second_hit"

    def __init__(self, params: AdmissionParams | None = None, rng: np.random.Generator | None = None) -> None:
        super().__init__(params, rng)
        self._last: dict[int, float] = {}  # prompt key -> request index (or time) of its last unadmitted miss

    def admit(self, ctx: RequestContext) -> bool:
        p = self.params
        at, window = (float(ctx.request), p.window_requests) if p.window_requests is not None else (ctx.now, p.window_s)
        assert window is not None
        last = self._last.get(ctx.key)
        if last is not None and at - last <= window:
            del self._last[ctx.key]
            return True
        self._last[ctx.key] = at
        return False
