"""qLRU-dC (Neglia, Garetto, Leonardi, IEEE/ACM ToN 2022): LRU that inserts with a probability
proportional to the cost the insertion would save."""

from __future__ import annotations

import numpy as np

from sim.cache.params import PolicyParams
from sim.cache.policies import POLICIES
from sim.cache.policies.base import Item, RequestContext, Unit
from sim.cache.policies.sim_lru import SimLRU


@POLICIES.register("qlru_dc")
class QLRUDC(SimLRU):
    """qLRU-dC extends qLRU (insert a miss with probability q; a hit moves its object to the front) to
    similarity caching: request x is inserted with probability q x dC / C_r, dC the serving cost that
    caching x would save. Adaptation to K levels (ours): serving at K costs N - K steps and x itself
    would give the top K an identical prompt gets (``k_top``), so dC = k_top - K for a hit at K and
    k_top for a miss; we normalise by k_top (the most any one insertion saves) rather than by C_r = N,
    so that a miss is inserted with probability q exactly as in qLRU. An inserted hit is run as a miss
    (all N steps: in this serving model a prompt's own latents exist only if it is generated from the
    start), a served hit refreshes its whole prompt as in sim_lru. Parameter ``q`` (in (0, 1]). Draws
    from the run's "policy" stream: one per hit, one per miss. The text of the rule is from our reading
    of the paper; its k-nearest-neighbour serving (several objects answer one request) has no
    counterpart here, where one noise serves a request.
    """

    name = "qlru_dc"

    def __init__(self, unit: Unit, params: PolicyParams | None = None, rng: np.random.Generator | None = None) -> None:
        super().__init__(unit, params, rng)
        self._inserting: set[int] = set()  # requests whose hit was turned into an insertion

    def insert_probability(self, ctx: RequestContext) -> float:
        top = ctx.k_top if ctx.k_top > 0 else max(ctx.k_used, 1)
        return self.params.q * max(top - ctx.k_used, 0) / top

    def serves(self, item: Item, ctx: RequestContext) -> bool:
        if self._rng.random() < self.insert_probability(ctx):
            self._inserting.add(ctx.request)
            return False
        return True

    def admits(self, ctx: RequestContext) -> bool:
        if ctx.request in self._inserting:
            self._inserting.discard(ctx.request)
            return True  # the coin was thrown when the hit was declined
        return bool(self._rng.random() < self.insert_probability(ctx))
