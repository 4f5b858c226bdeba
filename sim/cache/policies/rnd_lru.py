"""RND-LRU (Garetto, Leonardi, Neglia, INFOCOM 2020): SIM-LRU that serves a hit only with a probability
falling with its cost, and otherwise fetches and inserts the request."""

from __future__ import annotations

from sim.cache.policies import POLICIES
from sim.cache.policies.base import Item, RequestContext
from sim.cache.policies.sim_lru import SimLRU


@POLICIES.register("rnd_lru")
class RndLRU(SimLRU):
    """The paper serves request x from its nearest cached y with probability 1 - q(C_a(x, y)), q growing
    with the approximation cost; otherwise x is retrieved (a miss, cost C_r) and inserted at the front.
    Adaptation to K levels (ours): a hit at K costs the N - K steps it still runs and a miss N, so
    q = ((N - K) / N) ** decline_exponent (the ``decline_exponent`` parameter, default 4: a hit at
    K = 25 of 50 is declined with probability 0.06, at K = 5 with 0.66). Departures: the paper's cost is
    a loss of answer quality paid by the user, ours is GPU steps; a declined hit runs all N steps and is
    offered for admission like any miss (the admission policy still applies), and a served hit
    refreshes the whole prompt as in sim_lru. One draw per hit from the run's "policy" stream.
    """

    name = "rnd_lru"

    def decline_probability(self, ctx: RequestContext) -> float:
        n = ctx.num_steps if ctx.num_steps > 0 else ctx.k_used + 1
        return float(((n - ctx.k_used) / n) ** self.params.decline_exponent)

    def serves(self, item: Item, ctx: RequestContext) -> bool:
        return bool(self._rng.random() >= self.decline_probability(ctx))
