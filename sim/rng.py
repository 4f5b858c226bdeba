"""Named random streams: one seed, split by name, so adding a stream never shifts another's draws."""

from __future__ import annotations

import zlib

import numpy as np


def rng_stream(seed: int, name: str) -> np.random.Generator:
    """An independent, named random stream: adding a stream never shifts another's draws."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()),)))
