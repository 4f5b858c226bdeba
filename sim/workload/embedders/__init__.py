"""Prompt embedders behind a registry; each returns unit-norm float32 vectors."""

from sim.registry import Registry
from sim.workload.embedders.base import Embedder

EMBEDDERS: Registry[type[Embedder]] = Registry("embedder")

from sim.workload.embedders import clip, hash, minilm  # noqa: E402,F401

__all__ = ["EMBEDDERS", "Embedder"]
