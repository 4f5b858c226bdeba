"""The eviction-policy interface: the store tells a policy what happened, the policy answers victim()."""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from sim.cache.params import PolicyParams

# An item is (entry id, K). With eviction unit 'prompt' the whole prompt is one item, K = WHOLE_PROMPT.
Item = tuple[int, int]
WHOLE_PROMPT = 0
Unit = Literal["prompt", "noise"]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The request a hook is called for (libCacheSim passes every hook its request).

    On a lookup: the nearest cached entry, its similarity (K table's scale), the K the request asked
    (after the N - 1 cap) and the K it used (0 on a miss). On an admission: the admitted entry, the
    miss's lookup fields, k_used 0. ``num_steps`` is the request's N (0 when the mode has none).
    """

    request: int
    now: float
    key: int = -1  # prompt text key (equal key = identical prompt)
    similarity: float = float("nan")
    entry_id: int = -1
    k_asked: int = 0
    k_used: int = 0
    num_steps: int = 0
    k_top: int = 0  # the K an identical cached prompt would give this request (the most a hit can skip)


#: the context of a hook called outside any request (tests that drive a policy by hand)
NO_REQUEST = RequestContext(-1, float("nan"))


class Policy(ABC):
    """Orders cached items for eviction. The store owns sizes and membership; a policy only orders.

    Contract (tested over every registered policy): ``victim()`` returns a tracked item and does not
    change which items are tracked or their order; ``on_remove`` forgets an item completely.
    """

    name: ClassVar[str]
    #: eviction units this policy supports; the first is the default
    units: ClassVar[tuple[Unit, ...]] = ("noise", "prompt")

    def __init__(self, unit: Unit, params: PolicyParams | None = None, rng: np.random.Generator | None = None) -> None:
        if unit not in self.units:
            raise ValueError(f"policy {self.name} supports eviction units {self.units}, not {unit!r}")
        self.unit: Unit = unit
        self.params = params if params is not None else PolicyParams()
        # Only randomised policies draw from it; the store's builder passes the run's "policy" stream.
        self._rng = rng if rng is not None else np.random.default_rng(0)

    @abstractmethod
    def on_insert(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None: ...

    @abstractmethod
    def on_hit(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None: ...

    def on_access(self, ctx: RequestContext) -> None:  # noqa: B027 - an optional hook, not abstract
        """Every lookup, before its result is used (hit or miss); most policies ignore it."""

    def serves(self, item: Item, ctx: RequestContext) -> bool:
        """Whether a hit on ``item`` is served (False: the request is run as a miss and offered for
        admission). Called once per hit, before ``on_hit``; the default serves every hit."""
        return True

    def admits(self, ctx: RequestContext) -> bool:
        """The policy's own admission rule for a miss (RND-LRU, qLRU-dC insert selectively); the store
        admits only when this and the admission policy agree. The default admits every miss."""
        return True

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

    def __init__(self, unit: Unit, params: PolicyParams | None = None, rng: np.random.Generator | None = None) -> None:
        super().__init__(unit, params, rng)
        self._order: OrderedDict[Item, None] = OrderedDict()

    def on_insert(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
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

    def __init__(self, unit: Unit, params: PolicyParams | None = None, rng: np.random.Generator | None = None) -> None:
        super().__init__(unit, params, rng)
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
