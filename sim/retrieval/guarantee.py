"""Checking a trace's partition guarantee against its vectors, before retrieval relies on it.

A trace that guarantees no two prompts of different topics reach a similarity floor (sim.trace's
PartitionGuarantee) lets retrieval stay within topics. The guarantee comes from how the trace was made;
this check makes sure the vectors are that trace's: it searches exactly, for a deterministic sample of
prompts (all of them in a small trace), the most similar prompt of any *other* topic, and refuses the trace,
naming the pair, when one reaches the floor. Its cost is bounded (about CHECK_MACS multiply-adds).
"""

from __future__ import annotations

import numpy as np

from sim.errors import InputError
from sim.retrieval import cosine

#: multiply-adds one check may spend (~2 s on two cores): every prompt is checked when that covers them all
CHECK_MACS = 1.5e11
#: prompts checked at least
MIN_SAMPLE = 256


def sample_size(num_prompts: int, dim: int) -> int:
    """How many prompts a check searches: all of a small trace, else as many as CHECK_MACS allows."""
    return min(num_prompts, max(MIN_SAMPLE, int(CHECK_MACS // max(num_prompts * dim, 1))))


def check_partitions(vectors: np.ndarray, topic: np.ndarray, floor: float, source: str) -> int:
    """Raise InputError naming the first sampled pair of prompts of different topics at canonical cosine >=
    ``floor``; returns how many prompts were checked. ``topic`` gives each row of ``vectors`` its topic."""
    n = len(vectors)
    k = sample_size(n, vectors.shape[1])
    rows = np.unique(np.linspace(0, n - 1, k).round().astype(np.int64)) if n else np.zeros(0, np.int64)
    margin = cosine.screen_margin(vectors.shape[1])
    block = 1 << 16
    for a in range(0, len(rows), 256):
        q = rows[a:a + 256]
        for c0 in range(0, n, block):
            s = vectors[q] @ vectors[c0:c0 + block].T  # a BLAS screen; what passes it is rescored exactly
            s[topic[q][:, None] == topic[c0:c0 + block][None, :]] = -np.inf  # a query's own topic is allowed
            for r, c in zip(*np.nonzero(s >= floor - margin), strict=True):
                i, j = int(q[r]), c0 + int(c)
                exact = float(cosine.pair_cosines(vectors[i:i + 1], vectors[j:j + 1])[0])
                if exact >= floor:
                    raise InputError(f"{source}: the trace guarantees that prompts of different topics stay below "
                                     f"cosine {floor:.4g}, but prompts {i} (topic {int(topic[i])}) and {j} (topic "
                                     f"{int(topic[j])}) have {exact:.6f}; its topic column or vectors are not the "
                                     "generator's")
    return len(rows)
