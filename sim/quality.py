"""Quality model: relative image quality of a request from the K it used (and its similarity, when measured).

Reads a quality profile (profiles/README.md): ``by_k`` always (relative quality, 1.0 = generated from
scratch), and ``by_k_bin`` when a profiler measured quality per (K, similarity bin). A hit's estimate
is the (K, bin) figure when that cell was measured, else the per-K figure; a miss is 1.0 by definition.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sim.errors import InputError
from sim.profile_io import check_fields, profile_number, read_profile
from sim.scenario.records import OUTCOMES

#: relative quality is a ratio to generating from scratch: above 0, and a cached start that beats
#: scratch by more than half is a measurement or typing error (1.5 = 150%)
MAX_RELATIVE = 1.5
CELL_FIELDS = ("k", "similarity", "pairs", "mean", "relative")


def relative_quality(file: Any, where: str, value: Any) -> float:
    q = profile_number(file, where, value)
    if not 0 < q <= MAX_RELATIVE:
        raise InputError(f"{file}: field '{where}': expected a relative quality in (0, {MAX_RELATIVE}], got {q}")
    return q


@dataclass(frozen=True)
class QualityModel:
    source: str
    metric: str
    by_k: dict[int, float]
    #: bin edges (ascending) and {(k, bin index): relative quality} for the measured cells
    bins: tuple[float, ...] = ()
    by_k_bin: dict[tuple[int, int], float] = field(default_factory=dict)
    #: relative quality of whole outcomes that reuse no latent (e.g. image_hit, small_model), by outcome name
    by_outcome: dict[str, float] = field(default_factory=dict)

    def with_outcomes(self, other: QualityModel) -> QualityModel:
        """This model, with ``other``'s per-outcome figures added (a serving mode's own profile)."""
        return replace(self, source=f"{self.source} + {other.source}", by_outcome={**self.by_outcome,
                                                                                 **other.by_outcome})

    def estimate_outcome(self, outcome: str, k: int, similarity: float) -> float:
        value = self.by_outcome.get(outcome)
        return value if value is not None else self.estimate(k, similarity)

    def estimate(self, k: int, similarity: float) -> float:
        if k and self.by_k_bin and not math.isnan(similarity):
            b = bisect.bisect_right(self.bins, similarity) - 1
            value = self.by_k_bin.get((k, min(b, len(self.bins) - 2)))
            if value is not None:
                return value
        return self.by_k[k]


def load_quality(path: str, ks: Sequence[int]) -> QualityModel:
    """The model for the K values a hit can use (``ks``); every one needs a per-K figure.

    ``by_outcome`` (optional): relative quality of outcomes that reuse no latent, by outcome name
    (sim/scenario/records.py OUTCOMES), e.g. ``image_hit`` for final-image retrieval."""
    file, data = read_profile(path, "quality")
    by_outcome: dict[str, float] = {}
    raw_outcomes = data.get("by_outcome") or {}
    if not isinstance(raw_outcomes, dict):
        raise InputError(f"{file}: field 'by_outcome': expected a mapping of outcome -> relative quality")
    for name, value in raw_outcomes.items():
        if name not in OUTCOMES:
            raise InputError(f"{file}: field 'by_outcome.{name}': unknown outcome; known: {', '.join(OUTCOMES)}")
        by_outcome[str(name)] = relative_quality(file, f"by_outcome.{name}", value)
    by_k_raw = data.get("by_k")
    if not isinstance(by_k_raw, dict):
        raise InputError(f"{file}: field 'by_k': expected a mapping of K -> relative quality")
    by_k = {}
    for k in (0, *ks):
        if k not in by_k_raw or by_k_raw[k] is None:
            raise InputError(f"{file}: field 'by_k': no value for K={k} (has {sorted(by_k_raw)})")
        by_k[k] = relative_quality(file, f"by_k.{k}", by_k_raw[k])
    metric = data.get("metric", "relative_quality")
    if not isinstance(metric, str) or not metric.startswith("relative_"):
        raise InputError(f"{file}: field 'metric': expected relative_<score name>, got {metric!r}")
    rows = data.get("by_k_bin")
    if rows is None:
        return QualityModel(str(file), metric, by_k, by_outcome=by_outcome)
    if not isinstance(rows, list):
        raise InputError(f"{file}: field 'by_k_bin': expected a list of cells")
    bins = data.get("bins")
    numeric = isinstance(bins, list) and all(
        isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b) for b in bins
    )
    edges = tuple(float(b) for b in bins) if numeric and isinstance(bins, list) else ()
    if len(edges) < 2 or any(hi <= lo for lo, hi in itertools.pairwise(edges)) or not -1 <= edges[0] < edges[-1] <= 1:
        raise InputError(f"{file}: field 'bins': expected at least two strictly increasing similarity edges in [-1, 1]")
    primary = metric.removeprefix("relative_")
    cells: dict[tuple[int, int], float] = {}
    for i, row in enumerate(rows):
        cell = _cell(file, i, row, edges, primary)
        if cell is not None:
            cells[cell[0]] = cell[1]
    return QualityModel(str(file), metric, by_k, edges, cells, by_outcome)


def _cell(file: Any, i: int, row: Any, edges: tuple[float, ...], primary: str) -> tuple[tuple[int, int], float] | None:
    where = f"by_k_bin[{i}]"
    if not isinstance(row, dict) or "k" not in row or "similarity" not in row:
        raise InputError(f"{file}: field '{where}': expected a mapping with k, similarity, relative")
    check_fields(file, where, row, CELL_FIELDS)
    k = row["k"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InputError(f"{file}: field '{where}.k': expected an integer >= 0, got {k!r}")
    lo = row["similarity"][0] if isinstance(row["similarity"], list) and row["similarity"] else None
    if isinstance(lo, bool) or not isinstance(lo, int | float) or lo not in edges[:-1]:
        raise InputError(f"{file}: field '{where}.similarity': its lower edge {lo!r} is not one of 'bins'")
    relative = row.get("relative") or {}
    if not isinstance(relative, dict):
        raise InputError(f"{file}: field '{where}.relative': expected a mapping of score name -> ratio")
    value = relative.get(primary)
    if value is None:  # a cell the profiler could not score (no pair in that bin)
        return None
    return (k, edges.index(lo)), relative_quality(file, f"{where}.relative.{primary}", value)
