"""Infinite: a cache large enough for every miss of the trace, so nothing is ever evicted (the ceiling)."""

from __future__ import annotations

from sim.cache.offline import OFFLINE
from sim.cache.offline.base import OfflineReference
from sim.cache.policies.base import NO_REQUEST, Item, RequestContext
from sim.cache.policies.fifo import FIFO


@OFFLINE.register("infinite")
class Infinite(OfflineReference, FIFO):
    """Reference, not a policy: the store's builder sizes the cache to hold a noise at every K for every
    request of the trace (the only future it reads is the trace's length), so ``victim`` is never asked;
    it orders FIFO so that the contract (a victim is a tracked item) still holds. Not a bound on compute
    saved in general: with approximate hits, a low-K hit on a kept prompt stops a miss from inserting
    one that would serve later requests at a higher K (on the default synthetic trace at 1,500 noises
    lcbfu_da saves more); policies that decline hits (rnd_lru, qlru_dc) can beat it as well. It is the
    ceiling of the tiny trace for every policy that serves each hit it finds (a slow test)."""

    name = "infinite"

    def on_hit(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        pass
