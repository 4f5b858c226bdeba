"""Prompt embedders behind a registry; each returns unit-norm float32 vectors."""

from sim.embedding.embedders.base import Embedder
from sim.registry import Registry

EMBEDDERS: Registry[type[Embedder]] = Registry("embedder")

from sim.embedding.embedders import clip, hash, minilm  # noqa: E402,F401

__all__ = ["EMBEDDERS", "Embedder"]
