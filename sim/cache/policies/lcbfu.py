"""LCBFU (NIRVANA): least computationally beneficial and frequently used, per noise."""

from __future__ import annotations

import numpy as np

from sim.cache.params import PolicyParams
from sim.cache.policies import POLICIES
from sim.cache.policies.base import NO_REQUEST, Item, RequestContext, ScoredPolicy, Unit


@POLICIES.register("lcbfu")
class LCBFU(ScoredPolicy):
    """Score = K x uses of each cached noise; the lowest score is evicted first.

    New noises start at ``policy_params.lcbfu_initial_uses`` uses: 0, score 0, as published (so the newest
    noises go first once older ones have a use: the policy freezes), or 1, score K, counting the miss that
    generated them. Ties go to the oldest admission, then the smaller K (the tie rule is ours: NIRVANA's
    sources leave it open), then admission order. Defined per noise only.
    """

    name = "lcbfu"
    units = ("noise",)

    def __init__(self, unit: Unit, params: PolicyParams | None = None, rng: np.random.Generator | None = None) -> None:
        super().__init__(unit, params, rng)
        self._uses: dict[Item, int] = {}

    def on_insert(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        self._seq += 1
        uses = self.params.lcbfu_initial_uses
        self._uses[item] = uses
        self._heap.set(item, (item[1] * uses, now, item[1], self._seq))

    def on_hit(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        uses = self._uses[item] + 1
        self._uses[item] = uses
        _, inserted_s, k, seq = self._heap.key(item)
        self._heap.set(item, (k * uses, inserted_s, k, seq))

    def on_remove(self, item: Item) -> None:
        super().on_remove(item)
        del self._uses[item]
