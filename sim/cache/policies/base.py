"""The eviction-policy interface: the store tells a policy what happened, the policy answers victim()."""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import ClassVar, Literal

# An item is (entry id, K). With eviction unit 'prompt' the whole prompt is one item, K = WHOLE_PROMPT.
Item = tuple[int, int]
WHOLE_PROMPT = 0
Unit = Literal["prompt", "noise"]


class Policy(ABC):
    """Orders cached items for eviction. The store owns sizes and membership; a policy only orders.

    Contract (tested over every registered policy): ``victim()`` returns a tracked item and does not
    change which items are tracked or their order; ``on_remove`` forgets an item completely.
    """

    name: ClassVar[str]
    #: eviction units this policy supports; the first is the default
    units: ClassVar[tuple[Unit, ...]] = ("noise", "prompt")

    def __init__(self, unit: Unit) -> None:
        if unit not in self.units:
            raise ValueError(f"policy {self.name} supports eviction units {self.units}, not {unit!r}")
        self.unit: Unit = unit

    @abstractmethod
    def on_insert(self, item: Item, now: float) -> None: ...

    @abstractmethod
    def on_hit(self, item: Item, now: float) -> None: ...

    @abstractmethod
    def on_remove(self, item: Item) -> None: ...

    @abstractmethod
    def victim(self) -> Item: ...

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __contains__(self, item: object) -> bool: ...

    @abstractmethod
    def items(self) -> list[Item]:
        """The tracked items (any order); used by consistency checks, not on hot paths."""


class KeyedHeap:
    """Min-heap of items by a mutable sort key, with lazy invalidation of superseded entries.

    Keys must be unique per item (policies append a sequence number), so the minimum is unambiguous.
    """

    def __init__(self) -> None:
        self._key: dict[Item, tuple[float, ...]] = {}
        self._heap: list[tuple[tuple[float, ...], Item]] = []

    def set(self, item: Item, key: tuple[float, ...]) -> None:
        self._key[item] = key
        heapq.heappush(self._heap, (key, item))
        if len(self._heap) > 2 * len(self._key) + 64:
            # Stale entries outnumber live ones: rebuild so memory stays O(live items).
            self._heap = [(k, it) for it, k in self._key.items()]
            heapq.heapify(self._heap)

    def remove(self, item: Item) -> None:
        del self._key[item]

    def key(self, item: Item) -> tuple[float, ...]:
        return self._key[item]

    def min(self) -> Item:
        heap = self._heap
        while True:
            key, item = heap[0]
            if self._key.get(item) == key:
                return item
            # Dropping a superseded entry changes no live key: victim() stays observably pure.
            heapq.heappop(heap)

    def __len__(self) -> int:
        return len(self._key)

    def __contains__(self, item: object) -> bool:
        return item in self._key

    def items(self) -> list[Item]:
        return list(self._key)


class OrderedPolicy(Policy):
    """A policy that evicts the first item of an insertion-ordered list; subclasses decide what a hit does."""

    def __init__(self, unit: Unit) -> None:
        super().__init__(unit)
        self._order: OrderedDict[Item, None] = OrderedDict()

    def on_insert(self, item: Item, now: float) -> None:
        self._order[item] = None

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


class ScoredPolicy(Policy):
    """A policy that evicts the item with the smallest sort key; subclasses decide the keys."""

    def __init__(self, unit: Unit) -> None:
        super().__init__(unit)
        self._heap = KeyedHeap()
        self._seq = 0

    def on_remove(self, item: Item) -> None:
        self._heap.remove(item)

    def victim(self) -> Item:
        return self._heap.min()

    def __len__(self) -> int:
        return len(self._heap)

    def __contains__(self, item: object) -> bool:
        return item in self._heap

    def items(self) -> list[Item]:
        return self._heap.items()
