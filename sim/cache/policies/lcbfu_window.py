"""LCBFU-window: NIRVANA's LCBFU score with uses counted only within a sliding window."""

from __future__ import annotations

from collections import deque

import numpy as np

from sim.cache.params import PolicyParams
from sim.cache.policies import POLICIES
from sim.cache.policies.base import NO_REQUEST, Item, RequestContext, ScoredPolicy, Unit


@POLICIES.register("lcbfu_window")
class LCBFUWindow(ScoredPolicy):
    """Score = K x (hits in the last ``window_requests`` requests, or ``window_s`` seconds); lowest first.

    A windowed frequency, the sliding-window LFU of Karakostas and Serpanos (ICCCN 2002: "Exploitation
    of different types of locality for Web caches"), applied to NIRVANA's K x uses. A hit expires when
    a later request (any hook with its context) is more than a window past it; under the store every
    lookup moves the window, so the victim's score is current. Ties as in lcbfu (oldest admission, then
    the smaller K, then admission order). Per noise only.
    """

    name = "lcbfu_window"
    units = ("noise",)

    def __init__(self, unit: Unit, params: PolicyParams | None = None, rng: np.random.Generator | None = None) -> None:
        super().__init__(unit, params, rng)
        self._uses: dict[Item, int] = {}
        self._hits: deque[tuple[float, Item, int]] = deque()  # (position, item, its admission seq)
        by_requests = self.params.window_requests is not None
        self._window = float(self.params.window_requests if by_requests else self.params.window_s)  # type: ignore[arg-type]
        self._by_requests = by_requests

    def _position(self, ctx: RequestContext, now: float) -> float:
        return float(ctx.request) if self._by_requests else now

    def _expire(self, at: float) -> None:
        hits = self._hits
        while hits and at - hits[0][0] > self._window:
            _, item, seq = hits.popleft()
            if item in self._heap and self._heap.key(item)[3] == seq:  # not evicted and readmitted since
                self._rekey(item, self._uses[item] - 1)

    def _rekey(self, item: Item, uses: int) -> None:
        self._uses[item] = uses
        _, inserted_s, k, seq = self._heap.key(item)
        self._heap.set(item, (k * uses, inserted_s, k, seq))

    def on_access(self, ctx: RequestContext) -> None:
        if ctx.request >= 0:
            self._expire(self._position(ctx, ctx.now))

    def on_insert(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        self._seq += 1
        self._uses[item] = 0
        self._heap.set(item, (0, now, item[1], self._seq))

    def on_hit(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        at = self._position(ctx, now)
        self._expire(at)
        self._hits.append((at, item, int(self._heap.key(item)[3])))
        self._rekey(item, self._uses[item] + 1)

    def on_remove(self, item: Item) -> None:
        super().on_remove(item)
        del self._uses[item]
