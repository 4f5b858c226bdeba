"""The embedder interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np


class Embedder(ABC):
    name: ClassVar[str]
    dim: int

    @abstractmethod
    def embed(self, prompts: list[str]) -> np.ndarray:
        """float32 [len(prompts), dim], every row unit-norm."""

    @property
    def tag(self) -> str:
        """What goes in an embeddings file's metadata to say which model made the vectors."""
        return self.name
