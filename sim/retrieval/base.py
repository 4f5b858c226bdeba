"""Nearest-cached-prompt lookup interface: exact reference now, faster implementations later."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np


class Retriever(ABC):
    """Top-1 nearest cached prompt within one partition (compatibility key x cache scope).

    ``text_key`` identifies the prompt text (equal text, equal key); ``vector`` is its unit-norm
    embedding. Ties in similarity go to the smallest entry id (the oldest admission), so every
    implementation returns the same answer.
    """

    name: ClassVar[str]

    def __init__(self, dim: int) -> None:
        self.dim = dim

    @abstractmethod
    def add(self, entry_id: int, vector: np.ndarray, text_key: int) -> None: ...

    @abstractmethod
    def remove(self, entry_id: int) -> None: ...

    @abstractmethod
    def nearest(self, vector: np.ndarray, text_key: int, request: int = -1) -> tuple[int, float] | None:
        """(entry id, cosine similarity) of the best cached prompt, or None when empty.

        ``request`` is the index of the request asking (-1: not a trace request); retrievers that
        precompute per-request candidates use it, exact ones ignore it."""

    @abstractmethod
    def __len__(self) -> int: ...
