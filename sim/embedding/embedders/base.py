"""The embedder interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np


class Embedder(ABC):
    name: ClassVar[str]
    dim: int
    # Encoders read at most this many tokens (special tokens included); None: no window.
    window_tokens: int | None = None
    # Prompts cut to the window by this instance's embed() calls so far (instances assign their own).
    num_truncated: int = 0

    @abstractmethod
    def embed(self, prompts: list[str]) -> np.ndarray:
        """float32 [len(prompts), dim], every row unit-norm; prompts over the window are truncated."""

    def count_truncated(self, prompts: list[str]) -> int:
        """How many of ``prompts`` exceed the window (tokenizes only; embeds nothing)."""
        return 0

    @property
    def tag(self) -> str:
        """What goes in an embeddings file's metadata to say which model made the vectors."""
        return self.name
