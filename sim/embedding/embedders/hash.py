"""Deterministic pseudo-embeddings from a hash of the text: for tests only (no semantics)."""

from __future__ import annotations

import hashlib

import numpy as np

from sim.embedding.embedders import EMBEDDERS
from sim.embedding.embedders.base import Embedder


@EMBEDDERS.register("hash")
class HashEmbedder(Embedder):
    name = "hash"

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim

    def embed(self, prompts: list[str]) -> np.ndarray:
        out = np.empty((len(prompts), self.dim), dtype=np.float32)
        for i, p in enumerate(prompts):
            seed = int.from_bytes(hashlib.sha256(p.encode("utf-8")).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim)
            out[i] = v / np.linalg.norm(v)
        return out

    @property
    def tag(self) -> str:
        return f"hash-{self.dim}"
