"""NIRVANA (NSDI 2024): reuse the cached latent of the nearest similar prompt and skip its first K steps."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sim.cache.spec import CacheSpec, LiveCache
from sim.cache.store import AccessResult
from sim.requests import Requests
from sim.scenario.modes import MODES
from sim.scenario.modes.base import Decision, ServingMode
from sim.scenario.records import APPROX_HIT, HOLE_HIT, MISS, Records

if TYPE_CHECKING:
    from sim.build import BuildParts


@MODES.register("nirvana")
class Nirvana(ServingMode):
    """A miss runs all N steps and stores a latent at every cached K; a hit with similarity s loads the
    matched prompt's latent at K(s) (a hole: the largest cached K' <= K) and runs the remaining N - K
    steps conditioned on its own prompt. Only misses insert; a hit counts a use of the noise it read."""

    name = "nirvana"
    caches = "latents"
    searches = True

    def __init__(self, requests: Requests, spec: CacheSpec) -> None:
        self._req = requests
        self.cache_spec = spec
        self._num_ks = len(spec.ks)

    @classmethod
    def from_config(cls, parts: BuildParts) -> Nirvana:
        return cls(parts.requests, parts.cache_spec())

    def decide(self, cache: LiveCache | None, i: int, now: float) -> Decision:
        assert cache is not None
        return self.decision(i, cache.lookup(i, now))

    def decision(self, i: int, result: AccessResult) -> Decision:
        """How request i is served, given its lookup."""
        req = self._req
        num_steps = int(req.num_steps[i])
        cls = int(req.latency_class[i])
        k = result.k_used
        if k:
            outcome = HOLE_HIT if result.hole else APPROX_HIT
            return Decision(outcome, num_steps - k, cls, fetch_bytes=int(req.noise_bytes[i]),
                            similarity=result.similarity, similarity_raw=result.similarity_raw,
                            matched_entry=result.entry_id, k_selected=result.k_selected, k_used=k, hole=result.hole)
        # A miss produced a latent at every cached K: it offers all of them for admission.
        return Decision(MISS, num_steps, cls, admit_bytes=self._num_ks * int(req.noise_bytes[i]),
                        similarity=result.similarity, similarity_raw=result.similarity_raw,
                        matched_entry=result.entry_id, k_selected=result.k_selected, hole=result.hole)

    def decisions(self, rec: Records) -> None:
        """``decision``'s outcome and GPU steps for every request at once, from the lookup columns a compiled
        replay wrote (k_used, hole)."""
        k, hole = rec["k_used"], rec["hole"]
        rec["outcome"][:] = np.where(k == 0, MISS, np.where(hole, HOLE_HIT, APPROX_HIT))
        rec["gpu_steps"][:] = rec["num_steps"] - k
