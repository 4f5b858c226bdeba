"""The canonical cosine: a pair's bits do not depend on the matrix around it; bulk top-1 equals it."""

from __future__ import annotations

import numpy as np
import pytest

from sim.retrieval import cosine


def unit_rows(num: int, dim: int, seed: int) -> np.ndarray:
    raw = np.random.default_rng(seed).standard_normal((num, dim))
    return (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("dim", [16, 17, 64, 384, 385])
def test_a_pairs_bits_do_not_depend_on_its_context(dim: int) -> None:
    mat = unit_rows(3001, dim, seed=dim)
    v = mat[17].copy()
    full = cosine.cosines(mat, v)
    rng = np.random.default_rng(1)
    picks = rng.integers(len(mat), size=500)
    assert np.array_equal(cosine.cosines(mat[picks], v), full[picks])  # gathered
    assert np.array_equal(cosine.cosines(mat[5:900], v), full[5:900])  # offset view
    assert all(cosine.cosines(mat[i:i + 1], v)[0] == full[i] for i in range(0, len(mat), 97))  # alone
    shifted = np.empty(mat.size + 1, np.float32)[1:].reshape(mat.shape)  # misaligned copy
    shifted[:] = mat
    assert np.array_equal(cosine.cosines(shifted, v), full)
    assert np.array_equal(cosine.pair_cosines(mat[picks], np.repeat(v[None], len(picks), 0)), full[picks])
    assert full.dtype == np.float32
    queries = mat[[17, 3, 2999]]
    grid = cosine.cosine_matrix(queries, mat[picks])  # the offline references' matrix: same bits per pair
    assert np.array_equal(grid, np.stack([cosine.cosines(mat[picks], q) for q in queries]))
    assert np.array_equal(grid[0], full[picks])


def test_nearest_ties_go_to_the_smallest_id() -> None:
    mat = unit_rows(6, 8, seed=3)
    mat[4] = mat[1]
    ids = np.array([9, 7, -1, 3, 5, 8])
    assert cosine.nearest(mat, ids, mat[1]) == (5, float(cosine.cosines(mat[[1]], mat[1])[0]))
    ids[4] = -1  # a free slot never answers
    assert cosine.nearest(mat, ids, mat[1])[0] == 7  # type: ignore[index]
    assert cosine.nearest(mat[:0], ids[:0], mat[1]) is None


def test_top1_rows_equals_the_canonical_scan() -> None:
    pool = unit_rows(700, 32, seed=4)
    pool[300:320] = pool[10]  # exact ties across pool blocks
    queries = np.concatenate([pool[[10, 5, 650]], unit_rows(60, 32, seed=5)])
    limit = np.random.default_rng(6).integers(0, len(pool), size=len(queries))
    exclude = np.random.default_rng(7).integers(-1, len(pool), size=len(queries))
    limit[0], exclude[0] = len(pool), 10  # its own row excluded: the first of the tied copies answers
    limit[3] = 0  # nothing eligible
    idx, sim = cosine.top1_rows(queries, pool, exclude=exclude, limit=limit, chunk=16, pool_block=128)
    for q in range(len(queries)):
        s = cosine.cosines(pool, queries[q]).astype(np.float64)
        s[limit[q]:] = -np.inf
        if exclude[q] >= 0:
            s[exclude[q]] = -np.inf
        want = int(np.argmax(s)) if np.isfinite(s.max()) else -1  # first maximum: smallest index
        assert (idx[q], sim[q]) == (want, s.max() if want >= 0 else -np.inf)
    assert idx[0] == 300 and idx[3] == -1
