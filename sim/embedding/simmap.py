"""Similarity scale maps: put an embedder's cosine on the CLIP text-cosine scale of NIRVANA's thresholds.

NIRVANA's K table (0.65 ... 0.95) is in CLIP text cosine. Another embedder's cosines have another
distribution, so its raw values would choose K wrongly. A map is fitted on the production retrieval
log in ../shared/data/clip_pairs_calibration.csv (each query's CLIP top-1 score against that cache):

* quantile map on top-1 scores: each query's top-1 cosine under the embedder, searched over what
  the cache could hold before it in the log (time-consistent, sim/embedding/simeval.py; the
  production cache itself is not published), is mapped to the CLIP top-1 score at the same
  quantile of the log's score distribution;
* the map is monotone piecewise linear between knots; outside the fitted range it is clamped.

The fitted map is a small versioned YAML artefact under profiles/similarity/ (kind:
similarity_map) with its provenance and fit statistics; `cache.similarity_map: auto` applies the
map whose `embedder` tag equals the trace's embedder tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import InputError
from sim.fileio import read_yaml_mapping
from sim.paths import resolve
from sim.profile_io import PROFILE_FIELDS, check_fields, check_provenance
from sim.retrieval.cosine import top1_rows

MAP_DIR = "profiles/similarity"
MAP_VERSION = 1


@dataclass(frozen=True)
class SimilarityMap:
    """Monotone piecewise-linear map from an embedder's cosine to the CLIP text-cosine scale."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    embedder: str
    source: str

    def apply(self, similarity: float) -> float:
        return float(np.interp(similarity, self.x, self.y))

    def apply_array(self, similarity: np.ndarray) -> np.ndarray:
        return np.interp(similarity, self.x, self.y)


def fit_quantile_map(
    raw_top1: np.ndarray, clip_top1: np.ndarray, num_knots: int = 101
) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x, y): the q-quantile of the raw scores maps to the q-quantile of the CLIP scores."""
    q = np.linspace(0.0, 1.0, num_knots)
    # Knots are stored with 5 decimals: round before merging so the stored map stays strictly increasing.
    x = np.round(np.quantile(raw_top1, q), 5)
    y = np.round(np.quantile(clip_top1, q), 5)
    # np.interp needs increasing x: merge knots that tie, keeping the last (highest) y of each run.
    # Ties come mostly from exact repeats (raw cosine 1.0), whose CLIP cosine is 1.0 too: keeping the
    # first knot of that run would cap the map below CLIP's K=20/25 thresholds.
    keep = np.concatenate([np.diff(x) > 1e-9, [True]])
    x, y = x[keep], y[keep]
    return np.maximum.accumulate(x), np.maximum.accumulate(y)


def _knots(file: Path, data: dict[str, Any], key: str) -> np.ndarray:
    values = data[key]
    if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise InputError(f"{file}: field '{key}': expected a list of numbers")
    arr = np.asarray(values, dtype=float)
    if not np.isfinite(arr).all():
        raise InputError(f"{file}: field '{key}': NaN or infinite knot")
    if len(arr) and not (-1.0 <= arr.min() and arr.max() <= 1.0):
        bad = arr[(arr < -1) | (arr > 1)][0]
        raise InputError(f"{file}: field '{key}': knot {bad} is outside [-1, 1] (cosine similarities)")
    return arr


def load_map(path: str | Path) -> SimilarityMap:
    if not str(path).strip():
        raise InputError("cache.similarity_map: empty path (auto, none or a map file)")
    file = resolve(path)
    data = read_yaml_mapping(file, "similarity map", InputError, shown=path)
    if data.get("kind") != "similarity_map":
        raise InputError(f"{file}: field 'kind': expected 'similarity_map'")
    check_fields(file, "", data, PROFILE_FIELDS["similarity_map"])
    for key in ("embedder", "x", "y", "provenance"):
        if key not in data:
            raise InputError(f"{file}: field '{key}': required")
    check_provenance(file, data["provenance"])
    if not isinstance(data["embedder"], str) or not data["embedder"]:
        raise InputError(f"{file}: field 'embedder': expected the embedder tag the map was fitted for")
    x, y = _knots(file, data, "x"), _knots(file, data, "y")
    if x.shape != y.shape or len(x) < 2:
        raise InputError(f"{file}: fields 'x' and 'y': expected two lists of equal length >= 2")
    if np.any(np.diff(x) <= 0) or np.any(np.diff(y) < 0):
        raise InputError(f"{file}: fields 'x'/'y': expected strictly increasing x and non-decreasing y")
    return SimilarityMap(tuple(x.tolist()), tuple(y.tolist()), data["embedder"], str(file))


def find_map(embedder_tag: str, folder: str = MAP_DIR) -> SimilarityMap | None:
    """The shipped map fitted for exactly this embedder tag, if any."""
    root = resolve(folder)
    if not root.is_dir():
        return None
    for file in sorted(root.glob("*.yaml")):
        data = read_yaml_mapping(file, "similarity map", InputError)
        if isinstance(data, dict) and data.get("embedder") == embedder_tag:
            return load_map(file)
    return None


def top1_over(
    queries: np.ndarray, pool: np.ndarray, exclude: np.ndarray | None = None, chunk: int = 2048
) -> np.ndarray:
    """Exact (canonical) top-1 cosine of each query row over the pool rows, chunked to bound memory.

    ``exclude[i]`` is a pool row query i may not match (-1: none).
    """
    return top1_rows(queries, pool, exclude=exclude, chunk=chunk)[1]
