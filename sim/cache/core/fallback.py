"""The exact search a truncated candidate list falls back to, over the core's matrix of cached prompts' rows.

The answer is ExactCosine's over the canonical cosine (sim.retrieval.cosine): the highest cosine in the
request's partition, ties to the smallest entry id. The canonical cosine of a row does not depend on its
position, so one pass over every written row gives each cached prompt's exact bits; a partition holding few
of them (per-user scopes) gathers its own rows instead. Over many rows, requests likely to fall back are
screened in batches with one BLAS product first (``FallbackScreen``), same answers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.cache.core.jit import jit
from sim.retrieval import cosine


@jit
def partition_rows(p: int, part_head: Any, part_next: Any, slot_row: Any, out: Any) -> int:
    """Fill ``out`` with the rows of the slots cached in partition ``p`` (oldest entry first); returns how
    many."""
    m = 0
    s = part_head[p]
    while s >= 0:
        out[m] = slot_row[s]
        m += 1
        s = part_next[s]
    return m


@jit
def best_slot(p: int, sims: Any, by_row: bool, part_head: Any, part_next: Any, slot_row: Any) -> tuple[int, int]:
    """The exact top-1 of partition ``p`` (which holds a slot): (its slot, its position in ``sims``) for the
    highest cosine, ties to the smallest entry id.

    ``sims`` holds a cosine per row (``by_row``) or per slot of the partition in list order
    (partition_rows's). The list is oldest entry first, so only a strictly higher cosine replaces the best."""
    best = at = -1
    top = sims[0]
    m = 0
    s = part_head[p]
    while s >= 0:
        j = slot_row[s] if by_row else m
        if best < 0 or sims[j] > top:
            best, at, top = s, j, sims[j]
        m += 1
        s = part_next[s]
    return best, at


@jit
def screen_near(p: int, query: Any, margin: float, rows: Any, screened: Any, links: Any, scratch: Any) -> int:
    """Rows of partition ``p``'s cached slots whose screened cosine is within ``margin`` of the best one.

    ``rows`` = (mat, row_stamp): the matrix and each row's last write; ``screened`` = (approx, old, written):
    a screened cosine per row for rows below ``old`` not rewritten since the screen, which ran after
    ``written`` row writes; other rows are screened here, a float32 sum in index order (one more summation
    order, so within cosine.screen_margin of the canonical value). ``links`` = (part_head, part_next,
    slot_row). Writes the rows to ``scratch[1]`` (``scratch[0]``: one value per slot of the partition) and
    returns how many (a row may repeat)."""
    mat, row_stamp = rows
    approx, old, written = screened
    part_head, part_next, slot_row = links
    vals, out = scratch
    dim = mat.shape[1]
    top = -np.inf
    m = 0
    s = part_head[p]
    while s >= 0:
        r = slot_row[s]
        if r < old and row_stamp[r] <= written:
            v = approx[r]
        else:
            acc = np.float32(0.0)
            for d in range(dim):
                acc += mat[r, d] * query[d]
            v = acc
        vals[m] = v
        if v > top:
            top = v
        m += 1
        s = part_next[s]
    k = 0
    m = 0
    s = part_head[p]
    while s >= 0:
        if vals[m] >= top - margin:
            out[k] = slot_row[s]
            k += 1
        m += 1
        s = part_next[s]
    return k


@jit
def screen_rows(high: int, query: Any, margin: float, rows: Any, row_refs: Any, screened: Any, scratch: Any) -> int:
    """screen_near for a store with one partition: its cached prompts are the rows still referenced
    (``row_refs`` > 0), so the rows [0, high) are scanned in order instead of walking the slots' list.

    The screened value is computed inline here as in screen_near, on purpose: moving it into a shared
    jitted helper (also with inline="always") made FIFO 15,000 on the 2M trace 49 s -> 104-117 s, measured."""
    mat, row_stamp = rows
    approx, old, written = screened
    vals, out = scratch
    dim = mat.shape[1]
    top = -np.inf
    for r in range(high):
        if row_refs[r] <= 0:
            continue
        if r < old and row_stamp[r] <= written:
            v = approx[r]
        else:
            acc = np.float32(0.0)
            for d in range(dim):
                acc += mat[r, d] * query[d]
            v = acc
        vals[r] = v
        if v > top:
            top = v
    k = 0
    for r in range(high):
        if row_refs[r] > 0 and vals[r] >= top - margin:
            out[k] = r
            k += 1
    return k


@jit
def best_row(rows: Any, canon: Any, row_prompt: Any, prompt_pp: Any, pp_head: Any, slot_entry: Any,
             ) -> tuple[int, Any]:
    """best_slot of a one-partition store over the canonical cosines ``canon`` of ``rows`` only: a row's
    candidate is its prompt's oldest cached entry; the highest cosine wins, ties to the smallest entry id."""
    best = -1
    top = np.float32(0.0)
    best_entry = 0
    for k in range(len(rows)):
        s = pp_head[prompt_pp[row_prompt[rows[k]]]]
        e = slot_entry[s]
        if best < 0 or canon[k] > top or (canon[k] == top and e < best_entry):
            best, top, best_entry = s, canon[k], e
    return best, top


@jit
def best_near(p: int, rows: Any, canon: Any, row_mark: Any, part_head: Any, part_next: Any,
              slot_row: Any) -> tuple[int, Any]:
    """``best_slot`` over the canonical cosines ``canon`` of ``rows`` only (every other row of the partition
    is known to be lower): (slot, cosine), ties to the oldest entry. ``row_mark`` is -1 everywhere, and is
    left so."""
    for k in range(len(rows)):
        row_mark[rows[k]] = k
    best = -1
    top = np.float32(0.0)
    s = part_head[p]
    while s >= 0:
        k = row_mark[slot_row[s]]
        if k >= 0 and (best < 0 or canon[k] > top):
            best, top = s, canon[k]
        s = part_next[s]
    for k in range(len(rows)):
        row_mark[rows[k]] = -1
    return best, top


#: fallbacks over at least this many rows are screened in batches (below, one canonical pass is cheaper).
#: Measured on the 2M calibrated trace: FIFO 1,500 (<= 300 rows) 18.3 s unscreened, 38.2 s screened; FIFO
#: 15,000 (<= 3,000 rows) 60.7 s unscreened, 50.2 s screened (benchmarks/README.md, session 4)
SCREEN_MIN_ROWS = 1024
#: requests screened together at most, and the screen's memory bound (floats)
SCREEN_BATCH = 128
SCREEN_MAX_FLOATS = 1 << 26
#: how far ahead the screen looks for requests that will likely fall back
SCREEN_WINDOW = 20_000


class FallbackScreen:
    """Exact fallbacks over many rows, screened in batches.

    A fallback scans every written row of the matrix with the canonical cosine, one memory-bound pass per
    request. Here, when request i falls back, it and the next requests likely to fall back (their list is
    truncated and none of its prompts is cached now) are screened together with one BLAS product over the rows
    written so far. When request j then falls back, the rows written since its screen (a later write stamp)
    are screened again, the best cached row's screened value ``a`` gives a threshold ``a - 2 * margin``
    (``margin`` bounds any two float32 summation orders, cosine.screen_margin), and only the cached rows at or
    above it get the canonical cosine. Every row whose canonical cosine could be the partition's best, or tie
    it, is above the threshold, so the best of those rows (highest cosine, ties to the oldest entry) is what
    best_slot over the full canonical pass would answer (tests/test_fast_fallback.py). The cached rows are
    found by walking the partition's slots (screen_near, best_near), or, with one partition, by scanning the
    referenced rows in order (screen_rows, best_row). Stamps count row writes, not requests, so the screen is
    exact under the timed engine too, where admissions trail lookups.
    """

    def __init__(self, mat: np.ndarray, vectors: np.ndarray, prompt_index: np.ndarray, offsets: np.ndarray,
                 cand_pp: np.ndarray, truncated: np.ndarray, pp_head: np.ndarray, row_stamp: np.ndarray) -> None:
        self.mat, self.vectors, self.prompt_index = mat, vectors, prompt_index
        self.offsets, self.cand_pp, self.truncated = offsets, cand_pp, truncated
        self.pp_head, self.row_stamp = pp_head, row_stamp
        self.margin = np.float32(2 * cosine.screen_margin(mat.shape[1]))
        self.pending: dict[int, tuple[np.ndarray, int]] = {}  # request -> (screened rows [0, high), writes then)
        self.vals = np.zeros(0, dtype=np.float32)  # scratch of the screen: a value per slot, or per row
        self.near = np.zeros(0, dtype=np.int64)
        self.row_mark = np.full(len(mat), -1, dtype=np.int64)  # scratch of best_near
        self.single: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.batches = self.screened = 0

    def one_partition(self, row_prompt: np.ndarray, row_refs: np.ndarray, prompt_pp: np.ndarray,
                      slot_entry: np.ndarray) -> None:
        """The store has one partition: scan the referenced rows in order (screen_rows, best_row) rather
        than walk the slots' list, whose order in memory grows random as slots are recycled."""
        self.single = (row_prompt, row_refs, prompt_pp, slot_entry)

    def _likely(self, i: int, limit: int) -> np.ndarray:
        """Requests after i (within the window) whose truncated list has no prompt cached now."""
        n = len(self.truncated)
        js = i + 1 + np.flatnonzero(self.truncated[i + 1:min(n, i + 1 + SCREEN_WINDOW)])
        if len(js) == 0 or limit <= 0:
            return js[:0]
        lo, hi = int(self.offsets[js[0]]), int(self.offsets[js[-1] + 1])
        cached = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum(self.pp_head[self.cand_pp[lo:hi]] >= 0, out=cached[1:])
        any_cached = cached[self.offsets[js + 1] - lo] > cached[self.offsets[js] - lo]
        return js[~any_cached][:limit]

    def best(self, i: int, high: int, written: int, p: int, part_head: np.ndarray, part_next: np.ndarray,
             slot_row: np.ndarray) -> tuple[int, float]:
        """Request i's fallback: (best cached slot of partition p, its canonical cosine), as best_slot over
        the canonical cosines of every row [0, high) would give; ``written``: row writes so far."""
        got = self.pending.pop(i, None)
        if got is None:
            self.pending.clear()  # one batch held at a time (those screened here not yet met are screened again)
            batch = max(1, min(SCREEN_BATCH, SCREEN_MAX_FLOATS // high))
            js = np.r_[i, self._likely(i, batch - 1)]
            screened = self.vectors[self.prompt_index[js]] @ self.mat[:high].T  # float32 BLAS, not canonical
            self.batches += 1
            self.screened += len(js)
            for k, j in enumerate(js[1:].tolist(), start=1):
                self.pending[j] = (screened[k], written)
            got = (screened[0], written)
        approx, at = got
        query = self.vectors[self.prompt_index[i]]
        size = len(self.mat) if self.single is not None else len(slot_row)  # one scratch value per row, or slot
        if len(self.vals) < size:
            self.vals = np.zeros(size, dtype=np.float32)
            self.near = np.zeros(size, dtype=np.int64)
        if self.single is not None:
            row_prompt, row_refs, prompt_pp, slot_entry = self.single
            m = screen_rows(high, query, self.margin, (self.mat, self.row_stamp), row_refs, (approx, len(approx), at),
                            (self.vals, self.near))
            near = self.near[:m]
            slot, raw = best_row(near, cosine.cosines(self.mat[near], query), row_prompt, prompt_pp, self.pp_head,
                                 slot_entry)
            return int(slot), float(raw)
        m = screen_near(p, query, self.margin, (self.mat, self.row_stamp), (approx, len(approx), at),
                        (part_head, part_next, slot_row), (self.vals, self.near))
        near = self.near[:m]
        canon = cosine.cosines(self.mat[near], query)
        slot, raw = best_near(p, near, canon, self.row_mark, part_head, part_next, slot_row)
        return int(slot), float(raw)
