"""Final-image retrieval (GPTCache-style): serve the nearest cached prompt's finished image, no GPU work."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.cache.spec import CacheSpec, LiveCache
from sim.requests import Requests
from sim.scenario.modes import MODES
from sim.scenario.modes.base import Decision, ServingMode
from sim.scenario.records import IMAGE_HIT, MISS

if TYPE_CHECKING:
    from sim.build import BuildParts

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

    def __init__(self, requests: Requests, spec: CacheSpec) -> None:
        if spec.ks != (IMAGE_UNIT,) or spec.capped:
            raise ValueError(f"an image cache holds one uncapped unit per prompt (ks = ({IMAGE_UNIT},)), got {spec.ks}")
        self._req = requests
        self.cache_spec = spec

    @classmethod
    def from_config(cls, parts: BuildParts) -> FinalImage:
        return cls(parts.requests, parts.cache_spec(images=True))

    def decide(self, cache: LiveCache | None, i: int, now: float) -> Decision:
        assert cache is not None and self.cache_spec is not None
        req = self._req
        found = cache.lookup(i, now)
        size = int(self.cache_spec.unit_bytes[i])
        if found.k_used:
            return Decision(IMAGE_HIT, 0, int(req.latency_class[i]), fetch_bytes=size,
                            similarity=found.similarity, similarity_raw=found.similarity_raw,
                            matched_entry=found.entry_id)
        return Decision(MISS, int(req.num_steps[i]), int(req.latency_class[i]), admit_bytes=size,
                        similarity=found.similarity, similarity_raw=found.similarity_raw,
                        matched_entry=found.entry_id)
