"""Quality model: per-K relative quality, refined per (K, similarity bin) where a profiler measured it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.errors import InputError
from sim.quality import load_quality

PROV = {"type": "measured", "command": "c", "date": "d", "hardware": "h", "versions": {"x": "1"}}
BY_K = {0: 1.0, 5: 0.97, 10: 0.95}


def _write(tmp_path: Path, **fields: Any) -> str:
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump({"kind": "quality", "provenance": PROV, "by_k": BY_K, **fields}))
    return str(path)


def test_published_profile_gives_per_k_quality() -> None:
    q = load_quality("profiles/quality/nirvana-relative-published.yaml", (5, 10, 15, 20, 25))
    assert [q.estimate(k, 0.9) for k in (0, 5, 25)] == [1.0, 0.97, 0.915]


def test_binned_cells_override_per_k_where_measured(tmp_path: Path) -> None:
    rows = [
        {"k": 5, "similarity": [0.65, 0.8], "relative": {"clip_score": 0.9}},
        {"k": 5, "similarity": [0.8, 1.0], "relative": {"clip_score": 0.99}},
        {"k": 10, "similarity": [0.8, 1.0], "relative": {"clip_score": None}},  # no pair there
    ]
    q = load_quality(_write(tmp_path, metric="relative_clip_score", bins=[0.65, 0.8, 1.0], by_k_bin=rows), (5, 10))
    assert q.estimate(5, 0.7) == 0.9
    assert q.estimate(5, 0.85) == 0.99
    assert q.estimate(5, 1.0) == 0.99  # the top edge belongs to the last bin
    assert q.estimate(10, 0.9) == 0.95  # unmeasured cell: per-K figure
    assert q.estimate(5, 0.5) == 0.97  # below the bins: per-K figure
    assert q.estimate(0, 0.9) == 1.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"by_k": {0: 1.0, 5: 0.97}}, r"field 'by_k': no value for K=10"),
        ({"by_k": {0: 1.0, 5: -0.1, 10: 0.9}}, r"field 'by_k\.5': expected a non-negative number"),
        ({"bins": [0.8, 0.7], "by_k_bin": []}, r"field 'bins': expected at least two strictly increasing"),
        ({"bins": [0.7, 0.8], "by_k_bin": [{"k": 5, "similarity": [0.75, 0.8], "relative": {}}]},
         r"by_k_bin\[0\]\.similarity': its lower edge 0\.75 is not one of 'bins'"),
    ],
)
def test_bad_quality_profile(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_quality(_write(tmp_path, **fields), (5, 10))
