"""Similarity maps: monotone quantile fit, strict loading, selection by embedder tag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from sim.embedding.simmap import MAP_DIR, find_map, fit_quantile_map, load_map, top1_over
from sim.errors import InputError
from sim.experiments.runner import similarity_map, simulate
from sim.experiments.sweep import experiment_from_data
from sim.trace import load_trace
from tests.conftest import TINY_TRACE


def test_quantile_map_matches_distributions() -> None:
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.2, 0.8, 5000)
    clip = 0.5 + 0.5 * rng.beta(2, 2, 5000)
    x, y = fit_quantile_map(raw, clip)
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0)
    mapped = np.interp(raw, x, y)
    for t in (0.6, 0.75, 0.9):  # the share above each threshold is preserved
        assert abs((mapped > t).mean() - (clip > t).mean()) < 0.02


def test_quantile_map_merges_tied_knots_keeping_the_top() -> None:
    raw = np.concatenate([np.full(500, 1.0), np.linspace(0, 0.9, 500)])
    x, y = fit_quantile_map(raw, np.linspace(0, 1, 1000))
    assert np.all(np.diff(x) > 0)
    assert x[-1] == 1.0 and y[-1] == 1.0  # identical prompts stay identical on the target scale


def test_top1_over_is_exact_and_honours_exclusions() -> None:
    rng = np.random.default_rng(1)
    q, p = rng.standard_normal((37, 8)), rng.standard_normal((53, 8))
    sims = q @ p.T
    assert np.allclose(top1_over(q, p, chunk=5), sims.max(axis=1))
    best = sims.argmax(axis=1)
    exclude = np.where(np.arange(37) % 2 == 0, best, -1)
    expected = sims.copy()
    expected[np.arange(37)[::2], best[::2]] = -np.inf
    assert np.allclose(top1_over(q, p, exclude, chunk=5), expected.max(axis=1))


def _write(path: Path, **fields: object) -> Path:
    prov = {"type": "measured", "command": "fit", "date": "2026-12-01", "hardware": "cpu", "versions": {"numpy": "2"}}
    doc = {"kind": "similarity_map", "embedder": "e", "provenance": prov, "x": [0.0, 1.0], "y": [0.5, 1.0], **fields}
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "latency"}, "field 'kind': expected 'similarity_map'"),
        ({"x": [0.0, 0.0], "y": [0.1, 0.2]}, "strictly increasing x"),
        ({"x": [0.0, 1.0], "y": [0.5]}, "equal length"),
        ({"y": [0.5, float("nan")]}, "NaN or infinite"),
        ({"y": [0.5, float("inf")]}, "NaN or infinite"),
        ({"x": [0.0, 1.5]}, r"field 'x': knot 1\.5 is outside \[-1, 1\]"),
        ({"x": [0.0, "high"]}, r"field 'x': expected a list of numbers"),
        ({"provenance": {"type": "measured"}}, r"field 'provenance\.command': required"),
        ({"provenance": None}, r"field 'provenance\.type': expected one of"),
        ({"knots": 3}, r"field 'knots': unknown field"),
    ],
)
def test_bad_map_names_the_field(tmp_path: Path, fields: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_map(_write(tmp_path / "m.yaml", **fields))


def test_shipped_map_is_found_by_the_tiny_trace_embedder() -> None:
    trace = load_trace(TINY_TRACE)
    smap = find_map(trace.embedder)
    assert smap is not None and Path(smap.source).parent.name == Path(MAP_DIR).name
    assert find_map("some-other-embedder") is None
    # monotone and on the CLIP scale: every threshold of the paper's table is reachable
    assert smap.apply(0.0) <= 0.65 and smap.apply(1.0) > 0.95


def test_map_for_another_embedder_is_refused(tmp_path: Path) -> None:
    cfg = experiment_from_data({"cache": {"similarity_map": str(_write(tmp_path / "m.yaml"))}}).base
    with pytest.raises(InputError, match="fitted for embedder 'e', but the trace was embedded with 'minilm"):
        similarity_map(cfg, load_trace(TINY_TRACE).embedder)


def test_summary_names_the_scale_and_records_both_similarities() -> None:
    cfg = experiment_from_data({"trace": {"limit": 300}}).base
    _, rec, summary = simulate(cfg)
    assert summary["similarity_map"] == "minilm-to-clip.yaml"
    seen = ~np.isnan(rec["similarity_raw"])
    smap = find_map(load_trace(TINY_TRACE).embedder)
    assert smap is not None
    assert np.allclose(rec["similarity"][seen], smap.apply_array(rec["similarity_raw"][seen]))
    raw_cfg = experiment_from_data({"trace": {"limit": 300}, "cache": {"similarity_map": "none"}}).base
    assert simulate(raw_cfg)[2]["similarity_map"] == "none (raw cosine)"
