"""Retrieval: nearest cached prompt by embedding (or by exact text), one implementation per file."""

from sim.registry import Registry
from sim.retrieval.base import Retriever

RETRIEVERS: Registry[type[Retriever]] = Registry("retrieval method")

from sim.retrieval import candidates, exact_cosine, exact_key  # noqa: E402,F401

__all__ = ["RETRIEVERS", "Retriever"]
