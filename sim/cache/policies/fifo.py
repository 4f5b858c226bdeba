"""FIFO: evict the item admitted longest ago; hits do not change the order."""

from __future__ import annotations

from sim.cache.policies import POLICIES
from sim.cache.policies.base import NO_REQUEST, Item, OrderedPolicy, RequestContext


@POLICIES.register("fifo")
class FIFO(OrderedPolicy):
    name = "fifo"

    def on_hit(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        pass
