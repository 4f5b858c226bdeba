"""The one canonical cosine: every similarity a cache decision depends on is computed here, bit for bit.

Inputs are float32 unit vectors, C-contiguous. A cosine is ``numpy.einsum("ij,j->i")`` in float32:
einsum's sum-of-products loop reduces each row on its own, in an order fixed by the dimension alone,
so a pair's cosine has the same bits whichever matrix it sits in, at whatever row or alignment (a
BLAS matrix-vector product does not: OpenBLAS gives rows different kernels by their position, and
~0.1% of results change in the last bit). Results widen to float64 only afterwards. Tie rule of every
top-1: the largest cosine, ties to the smallest entry id (the oldest admission).

Bulk scans may screen with a BLAS product first, then rescore the survivors here: ``screen_margin``
bounds the difference between any two float32 summation orders, so screening at ``floor - margin``
(or ``best - margin``) never drops a pair the canonical routine would keep.
"""

from __future__ import annotations

import numpy as np

DTYPE = np.float32


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=DTYPE)


def cosines(mat: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Canonical float32 cosine of each row of ``mat`` [n, d] with ``vector`` [d]."""
    return np.einsum("ij,j->i", _f32(mat), _f32(vector))


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Canonical float32 cosine of every row of ``a`` [m, d] with every row of ``b`` [n, d] ([m, n]; the same
    bits as ``cosines``: einsum reduces each pair on its own, never through BLAS). Memory-bound: for bulk
    scans screen with a BLAS product first (``screen_margin``)."""
    return np.einsum("ij,kj->ik", _f32(a), _f32(b))


def pair_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Canonical float32 cosine of row i of ``a`` with row i of ``b`` (same bits as ``cosines``)."""
    return np.einsum("ij,ij->i", _f32(a), _f32(b))


def screen_margin(dim: int) -> float:
    """Bound on |two float32 summation orders of one d-term dot product| for unit vectors.

    Each order errs by at most gamma_d * sum|a_i b_i| <= d * 2^-24 (Higham, recursive and pairwise
    sums alike); two orders differ by at most twice that, plus slack for norms of 1 +- 1e-6."""
    return 2.5 * dim * 2.0**-24


def best_of(sims: np.ndarray, ids: np.ndarray) -> int:
    """Position of the top-1: the largest cosine, ties to the smallest id. ``sims`` must be non-empty;
    positions to ignore carry -inf."""
    best = sims.max()
    at = np.flatnonzero(sims == best)
    return int(at[0]) if len(at) == 1 else int(at[np.argmin(ids[at])])


def nearest(mat: np.ndarray, ids: np.ndarray, vector: np.ndarray) -> tuple[int, float] | None:
    """Canonical exact top-1 over the rows of ``mat`` whose id is >= 0: (id, cosine) or None."""
    if len(mat) == 0:
        return None
    sims = cosines(mat, vector)
    sims[ids < 0] = -np.inf
    pos = best_of(sims, ids)
    if ids[pos] < 0:
        return None
    return int(ids[pos]), float(sims[pos])


def top1_rows(
    queries: np.ndarray,
    pool: np.ndarray,
    *,
    exclude: np.ndarray | None = None,
    limit: np.ndarray | None = None,
    chunk: int = 1024,
    pool_block: int = 65_536,
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical top-1 of each query row over the pool rows: (pool index int64, cosine float64).

    ``exclude[q]`` is a pool row query q may not match (-1: none); ``limit[q]`` restricts query q to
    pool rows ``< limit[q]``. Ties go to the smallest pool index. A query with no eligible row gets
    index -1 and cosine -inf. A float32 BLAS product screens; rows within ``screen_margin`` of each
    query's screened best are rescored with the canonical routine, so the answer is the canonical one.
    """
    queries, pool = _f32(queries), _f32(pool)
    n = len(queries)
    margin = screen_margin(pool.shape[1])
    out_idx = np.full(n, -1, dtype=np.int64)
    out_sim = np.full(n, -np.inf, dtype=np.float64)
    for a in range(0, n, chunk):
        q = queries[a:a + chunk]
        lim = np.full(len(q), len(pool), np.int64) if limit is None else np.asarray(limit[a:a + chunk], np.int64)
        exc = None if exclude is None else np.asarray(exclude[a:a + chunk], np.int64)
        top = int(lim.max(initial=0))
        # The running screened best of each query; pairs within the margin of it are rescored.
        best = np.full(len(q), -np.inf, dtype=np.float32)
        found_rows, found_cols = [], []
        for c0 in range(0, top, pool_block):
            c1 = min(c0 + pool_block, top)
            sims = q @ pool[c0:c1].T
            cols = np.arange(c0, c1)
            bad = cols[None, :] >= lim[:, None]
            if exc is not None:
                bad |= cols[None, :] == exc[:, None]
            sims[bad] = -np.inf
            best = np.maximum(best, sims.max(axis=1))
            rows, hit = np.nonzero((sims >= (best - margin)[:, None]) & ~bad)
            found_rows.append(rows)
            found_cols.append(hit + c0)
        if not found_rows:
            continue
        rows, cols = np.concatenate(found_rows), np.concatenate(found_cols)
        if len(rows) == 0:
            continue
        exact = pair_cosines(q[rows], pool[cols]).astype(np.float64)
        order = np.lexsort((cols, -exact, rows))  # per query: largest cosine, then smallest index
        first = order[np.r_[True, rows[order][1:] != rows[order][:-1]]]
        out_idx[a + rows[first]] = cols[first]
        out_sim[a + rows[first]] = exact[first]
    return out_idx, out_sim
