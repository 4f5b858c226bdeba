"""LFU: evict the item with the fewest hits since admission; ties go to the least recently used."""

from __future__ import annotations

from typing import ClassVar

from sim.cache.policies import POLICIES
from sim.cache.policies.base import NO_REQUEST, Item, RequestContext, ScoredPolicy, Unit


@POLICIES.register("lfu")
class LFU(ScoredPolicy):
    """Frequency counts start at 0 on admission and are forgotten on eviction (no ghost history).

    The tie rule (least recently used first) is libCacheSim's, so exact-key runs can be checked
    against it. Evicts whole prompts by default (``eviction_unit: auto``), as the paper's baselines do in the
    public re-implementations (CacheAttack, MoDM); per noise on request.
    """

    name = "lfu"
    units: ClassVar[tuple[Unit, ...]] = ("prompt", "noise")

    def on_insert(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        self._seq += 1
        self._heap.set(item, (0, self._seq))

    def on_hit(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        self._seq += 1
        uses = self._heap.key(item)[0]
        self._heap.set(item, (uses + 1, self._seq))
