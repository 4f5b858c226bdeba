"""LCBFU-DA: NIRVANA's LCBFU with dynamic aging, so that new noises can outrank stale frequent ones."""

from __future__ import annotations

import numpy as np

from sim.cache.params import PolicyParams
from sim.cache.policies import POLICIES
from sim.cache.policies.base import NO_REQUEST, Item, RequestContext, ScoredPolicy, Unit


@POLICIES.register("lcbfu_da")
class LCBFUDA(ScoredPolicy):
    """Score = K x uses + L, where L (the cache's age) is the score of the last evicted noise, taken when
    the noise is admitted or hit; the lowest score is evicted first. As in LFU-DA, the miss that brings
    a noise in is its first reference (uses = 1 on admission): with uses = 0, LCBFU's start, the victims
    would score exactly L, so L would never rise and the policy would equal lcbfu. Dynamic aging as in LFU-DA and GDSF
    (Arlitt, Cherkasova, Dilley, Friedrich, Jin, ACM SIGMETRICS PER 2000; Cherkasova, HP Labs
    HPL-98-69, 1998), with K x uses, NIRVANA's LCBFU score, as the value. L never decreases, so a noise
    admitted late starts where the old ones were cut, and frequency earned long ago fades relative to
    it. Ties as in lcbfu (oldest admission, then the smaller K, then admission order). Per noise only.
    """

    name = "lcbfu_da"
    units = ("noise",)

    def __init__(self, unit: Unit, params: PolicyParams | None = None, rng: np.random.Generator | None = None) -> None:
        super().__init__(unit, params, rng)
        self._uses: dict[Item, int] = {}
        self.age = 0  # L: the score of the last evicted noise

    def on_insert(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        self._seq += 1
        self._uses[item] = 1
        self._heap.set(item, (item[1] + self.age, now, item[1], self._seq))

    def on_hit(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        uses = self._uses[item] + 1
        self._uses[item] = uses
        _, inserted_s, k, seq = self._heap.key(item)
        self._heap.set(item, (k * uses + self.age, inserted_s, k, seq))

    def on_remove(self, item: Item) -> None:
        # The store removes only victims, so the removed score is the evicted one (LFU-DA's L).
        self.age = max(self.age, int(self._heap.key(item)[0]))
        super().on_remove(item)
        del self._uses[item]
