"""Similarity -> K selection (NIRVANA's threshold table) and hole resolution."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# NIRVANA defaults (Adobe's code and two re-implementations agree, see DESIGN.md §1):
# s > 0.95 -> 25, > 0.90 -> 20, > 0.85 -> 15, > 0.75 -> 10, > 0.65 -> 5, otherwise a miss.
DEFAULT_THRESHOLDS: tuple[tuple[float, int], ...] = (
    (0.95, 25),
    (0.90, 20),
    (0.85, 15),
    (0.75, 10),
    (0.65, 5),
)
DEFAULT_KS: tuple[int, ...] = (5, 10, 15, 20, 25)
MISS = 0


@dataclass(frozen=True)
class KTable:
    """Strictly descending similarity thresholds; the first one exceeded gives K (0 = miss)."""

    thresholds: tuple[tuple[float, int], ...] = DEFAULT_THRESHOLDS

    def select(self, similarity: float) -> int:
        for above, k in self.thresholds:
            if similarity > above:
                return k
        return MISS

    def select_array(self, similarity: np.ndarray) -> np.ndarray:
        """``select`` of every value at once (int64, same shape): the first threshold exceeded, in table order."""
        similarity = np.asarray(similarity)
        k = np.full(similarity.shape, MISS, dtype=np.int64)
        done = np.zeros(similarity.shape, dtype=bool)
        for above, k_value in self.thresholds:
            hit = ~done & (similarity > above)
            k[hit] = k_value
            done |= hit
        return k

    @property
    def lowest(self) -> float:
        return self.thresholds[-1][0]


def resolve_hole(k_selected: int, cached_ks: Iterable[int]) -> int:
    """Largest cached K' <= k_selected, or MISS when the matched prompt holds none (a hole)."""
    best = MISS
    for k in cached_ks:
        if best < k <= k_selected:
            best = k
    return best


def check_table(thresholds: Sequence[tuple[float, int]], ks: Sequence[int]) -> str | None:
    """Return why the table is invalid for the cached K set, or None when it is valid."""
    if not thresholds:
        return "at least one threshold"
    prev = float("inf")
    for i, (above, k) in enumerate(thresholds):
        if not -1.0 <= above < 1.0:
            return f"entry {i}: similarity in [-1, 1), got {above}"
        if not above < prev:
            return f"strictly descending similarities, entry {i} ({above}) is not below {prev}"
        if k not in ks:
            return f"entry {i}: K in the cached set {list(ks)}, got {k}"
        prev = above
    return None
