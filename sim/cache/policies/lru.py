"""LRU: evict the item whose last admission or hit is oldest."""

from __future__ import annotations

from sim.cache.policies import POLICIES
from sim.cache.policies.base import NO_REQUEST, Item, OrderedPolicy, RequestContext


@POLICIES.register("lru")
class LRU(OrderedPolicy):
    name = "lru"

    def on_hit(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        self._order.move_to_end(item)
