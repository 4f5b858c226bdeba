"""FIFO: evict the item admitted longest ago; hits do not change the order."""

from __future__ import annotations

from typing import ClassVar

from sim.cache.policies import POLICIES
from sim.cache.policies.base import NO_REQUEST, Item, OrderedPolicy, RequestContext, Unit


@POLICIES.register("fifo")
class FIFO(OrderedPolicy):
    """Evicts whole prompts by default (``eviction_unit: auto``), as the paper's baselines do in the public
    re-implementations of its table (CacheAttack's and MoDM's simulators); per noise on request."""

    name = "fifo"
    units: ClassVar[tuple[Unit, ...]] = ("prompt", "noise")

    def on_hit(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        pass
