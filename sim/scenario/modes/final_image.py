"""Final-image retrieval (GPTCache-style): serve the nearest cached prompt's finished image, no GPU work."""

from __future__ import annotations

import numpy as np

from sim.cache.store import CacheStore
from sim.scenario.modes import MODES
from sim.scenario.modes.base import Admitted, Decision, ServingMode, store_capacity_bytes
from sim.scenario.records import IMAGE_HIT, MISS
from sim.scenario.requests import Requests

#: the single "K" an image is stored under in its store (an image is one unit; K has no meaning here)
IMAGE_UNIT = 1


@MODES.register("final_image")
class FinalImage(ServingMode):
    """When the nearest cached prompt's similarity is >= ``threshold`` its stored image is returned as is
    (a read of an image-sized object from the storage tier, zero GPU seconds); otherwise the request is
    generated from scratch and its image is stored, evicting images by the cache policy. NIRVANA's
    GPT-CACHE baseline: cheap, but the image was made for another prompt (quality from its profile)."""

    name = "final_image"
    caches = "images"
    searches = True
    quality_key = "serving.final_image.quality_profile"

    def __init__(self, requests: Requests, store: CacheStore, image_bytes: np.ndarray) -> None:
        if store.ks != (IMAGE_UNIT,):
            raise ValueError(f"an image store holds one unit per prompt (ks = ({IMAGE_UNIT},)), got {store.ks}")
        self._req = requests
        self.store = store
        self._image_bytes = image_bytes

    def capacity_bytes(self) -> int | None:
        return store_capacity_bytes(self.store, int(self._image_bytes.max()))

    def search_size(self, i: int) -> int:
        return self.store.partition_size(int(self._req.partition[i]))

    def decide(self, i: int, now: float) -> Decision:
        req = self._req
        num_steps = int(req.num_steps[i])
        key = int(req.prompt_index[i])
        found = self.store.access(int(req.partition[i]), req.vectors[key], key, now, i)
        size = int(self._image_bytes[i])
        if found.k_used:
            return Decision(IMAGE_HIT, 0, int(req.latency_class[i]), fetch_bytes=size,
                            similarity=found.similarity, similarity_raw=found.similarity_raw,
                            matched_entry=found.entry_id)
        return Decision(MISS, num_steps, int(req.latency_class[i]), admit_bytes=size,
                        similarity=found.similarity, similarity_raw=found.similarity_raw,
                        matched_entry=found.entry_id)

    def admit(self, i: int, now: float) -> Admitted:
        req = self._req
        key = int(req.prompt_index[i])
        done = self.store.admit(int(req.partition[i]), req.vectors[key], key, int(self._image_bytes[i]), now)
        return Admitted(done.entry_id, done.num_evicted_noises)
