"""Static greedy: with the whole trace known, fill the cache once, greedily by marginal steps skipped."""

from __future__ import annotations

import heapq

import numpy as np

from sim.cache.offline import OFFLINE
from sim.cache.offline.base import OfflineReference, Preload
from sim.cache.policies.base import NO_REQUEST, Item, RequestContext, Unit
from sim.cache.policies.fifo import FIFO
from sim.errors import ConfigError

#: request x candidate cells the brute-force gain matrix may hold (int8: 1 byte each)
MAX_CELLS = 200_000_000


@OFFLINE.register("static_greedy")
class StaticGreedy(OfflineReference, FIFO):
    """Reference, not a policy. Candidates are the (partition, prompt) pairs of the trace, each cached
    whole (a noise at every K). f(S) = sum over requests of the K the nearest prompt of S would give
    (largest cached K <= K(similarity), capped at N - 1) is a facility-location function: monotone and
    submodular, so the greedy choice (lazy evaluation, Minoux 1978) reaches >= (1 - 1/e) of the best
    static content of that size (Nemhauser, Wolsey, Fisher 1978). The chosen prompts are inserted before
    the first request and no miss is admitted after; a request for a chosen prompt hits it at the top K
    from the start (the content is preloaded, not generated). ``self.objective`` = f(chosen), the
    steps a replay skips (up to float rounding at threshold edges). Brute force: O(requests x prompts)."""

    name = "static_greedy"
    preloads = True

    def __init__(self, unit: Unit, *args, **kwargs) -> None:
        super().__init__(unit, *args, **kwargs)
        self.objective = 0
        self.chosen: list[int] = []  # candidate prompt keys, in greedy order

    def initial_content(self, capacity_noises: int, capacity_bytes: int) -> list[Preload]:
        fut = self._need_future()
        n = len(fut)
        pairs = np.unique(np.stack([fut.partition, fut.prompt_index], axis=1), axis=0)
        if n * len(pairs) > MAX_CELLS:
            raise ConfigError(f"cache.policy: static_greedy is brute force: {n:,} requests x {len(pairs):,} "
                              f"prompts is over {MAX_CELLS:,} (set trace.limit)")
        pairs_of = zip(fut.partition.tolist(), fut.prompt_index.tolist(), strict=True)
        first = {pk: i for i, pk in reversed(list(enumerate(pairs_of)))}
        cand_part, cand_key = pairs[:, 0], pairs[:, 1]
        rows = np.arange(n)
        gain = np.zeros((n, len(pairs)), dtype=np.int8)  # K <= 127 (checked by the config's N)
        for lo in range(0, len(pairs), 2048):  # blocks keep the float matrix small
            cols = slice(lo, lo + 2048)
            sim = fut.similarity(rows, cand_key[cols], cand_part[cols])
            gain[:, cols] = fut.resolve(fut.k_of(sim, rows))
        num_ks = len(fut.ks)
        best = np.zeros(n, dtype=np.int64)
        heap = [(-int(gain[:, c].sum()), c) for c in range(len(pairs))]
        heapq.heapify(heap)
        out: list[Preload] = []
        used_noises = used_bytes = 0
        while heap:
            neg, c = heapq.heappop(heap)
            fresh = int(np.maximum(gain[:, c] - best, 0).sum())
            if fresh != -neg:
                if fresh > 0:
                    heapq.heappush(heap, (-fresh, c))  # stale bound: re-queue with its true gain
                continue
            if fresh == 0:
                break
            nbytes = int(fut.noise_bytes[first[(int(cand_part[c]), int(cand_key[c]))]])
            if used_noises + num_ks > capacity_noises or used_bytes + num_ks * nbytes > capacity_bytes:
                continue  # does not fit (bytes may still allow a smaller one)
            used_noises += num_ks
            used_bytes += num_ks * nbytes
            best = np.maximum(best, gain[:, c])
            self.chosen.append(int(cand_key[c]))
            out.append((int(cand_part[c]), fut.vectors[cand_key[c]], int(cand_key[c]), nbytes))
        self.objective = int(best.sum())
        return out

    def admits(self, ctx: RequestContext) -> bool:
        return False  # static: the content chosen in advance never changes

    def on_hit(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        pass

