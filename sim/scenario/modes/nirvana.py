"""NIRVANA (NSDI 2024): reuse the cached latent of the nearest similar prompt and skip its first K steps."""

from __future__ import annotations

from sim.cache.store import CacheStore
from sim.scenario.modes import MODES
from sim.scenario.modes.base import Admitted, Decision, ServingMode, store_capacity_bytes
from sim.scenario.records import APPROX_HIT, HOLE_HIT, MISS
from sim.scenario.requests import Requests


@MODES.register("nirvana")
class Nirvana(ServingMode):
    """A miss runs all N steps and stores a latent at every cached K; a hit with similarity s loads the
    matched prompt's latent at K(s) (a hole: the largest cached K' <= K) and runs the remaining N - K
    steps conditioned on its own prompt. Only misses insert; a hit counts a use of the noise it read."""

    name = "nirvana"
    caches = "latents"
    searches = True

    def __init__(self, requests: Requests, store: CacheStore) -> None:
        self._req = requests
        self.store = store
        self._num_ks = len(store.ks)

    def capacity_bytes(self) -> int | None:
        return store_capacity_bytes(self.store, int(self._req.noise_bytes.max()))

    def search_size(self, i: int) -> int:
        return self.store.partition_size(int(self._req.partition[i]))

    def decide(self, i: int, now: float) -> Decision:
        req = self._req
        num_steps = int(req.num_steps[i])
        cls = int(req.latency_class[i])
        key = int(req.prompt_index[i])
        result = self.store.access(int(req.partition[i]), req.vectors[key], key, now, i, max_k=num_steps - 1)
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

    def admit(self, i: int, now: float) -> Admitted:
        req = self._req
        key = int(req.prompt_index[i])
        done = self.store.admit(int(req.partition[i]), req.vectors[key], key, int(req.noise_bytes[i]), now, i)
        return Admitted(done.entry_id, done.num_evicted_noises)
