"""SIM-LRU (Pandey et al., WWW 2009): LRU in which an approximate hit refreshes the prompt that served it."""

from __future__ import annotations

import numpy as np

from sim.cache.params import PolicyParams
from sim.cache.policies import POLICIES
from sim.cache.policies.base import NO_REQUEST, Item, OrderedPolicy, RequestContext, Unit


@POLICIES.register("sim_lru")
class SimLRU(OrderedPolicy):
    """SIM-LRU, as restated by Garetto, Leonardi and Neglia (INFOCOM 2020, "Similarity caching: theory
    and algorithms"): a request is served by its nearest cached object when within the threshold (here
    the K table's lowest threshold plays C_theta), which then moves to the front; otherwise it is
    fetched and inserted at the front, the least recently used object going. The cached object is a
    prompt: with eviction unit noise a hit moves every cached K of the matched prompt to the front
    (ascending K, so the smaller K goes first), where lru moves only the noise used; with unit prompt it
    equals lru. Costs of the papers are not needed: SIM-LRU's rule reads none.
    """

    name = "sim_lru"

    def __init__(self, unit: Unit, params: PolicyParams | None = None, rng: np.random.Generator | None = None) -> None:
        super().__init__(unit, params, rng)
        self._ks: dict[int, list[int]] = {}  # entry -> its cached K, ascending

    def on_insert(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        super().on_insert(item, now, ctx)
        ks = self._ks.setdefault(item[0], [])
        ks.append(item[1])
        ks.sort()

    def on_hit(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        self._refresh(item[0])

    def _refresh(self, entry: int) -> None:
        for k in self._ks[entry]:
            self._order.move_to_end((entry, k))

    def on_remove(self, item: Item) -> None:
        super().on_remove(item)
        ks = self._ks[item[0]]
        ks.remove(item[1])
        if not ks:
            del self._ks[item[0]]
