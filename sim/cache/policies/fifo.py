"""FIFO: evict the item admitted longest ago; hits do not change the order."""

from __future__ import annotations

from collections import OrderedDict

from sim.cache.policies import POLICIES
from sim.cache.policies.base import Item, Policy, Unit


@POLICIES.register("fifo")
class FIFO(Policy):
    name = "fifo"

    def __init__(self, unit: Unit) -> None:
        super().__init__(unit)
        self._order: OrderedDict[Item, None] = OrderedDict()

    def on_insert(self, item: Item, now: float) -> None:
        self._order[item] = None

    def on_hit(self, item: Item, now: float) -> None:
        pass

    def on_remove(self, item: Item) -> None:
        del self._order[item]

    def victim(self) -> Item:
        return next(iter(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, item: object) -> bool:
        return item in self._order

    def items(self) -> list[Item]:
        return list(self._order)
