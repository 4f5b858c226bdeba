"""`trace stats A --vs B`: reuse figures on a hand-made trace, the side-by-side table, the embedder check."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sim.synth.config import synth_config_from_data
from sim.synth.generator import write_synth_trace
from sim.workload.stats import reuse, trace_stats
from tests.conftest import TINY_TRACE
from tests.test_trace_stats import make_trace

Cli = Callable[..., tuple[int, str, str]]


def test_reuse_on_the_hand_made_trace(tmp_path: Path) -> None:
    # Repeats: request 2 (A after request 0: u2 after u1, cross-user, distance 2, 120 s), request 4 (C after
    # request 3: the null user is unknown, so not cross-user), request 6 (A after request 2 by u2 itself, on
    # day 1 while A first came on day 0: cross-day, distance 4).
    r = trace_stats(make_trace(tmp_path), tmp_path / "out", plots=False)["reuse"]
    assert r["repeats"] == 3
    assert (r["distance_p50"], r["gap_h_p50"]) == (2.0, round(120 / 3600, 3))
    assert r["cross_user_share"] == round(1 / 7, 6) and r["cross_day_share"] == round(1 / 7, 6)


def test_reuse_sees_no_repeat_in_distinct_prompts() -> None:
    r = reuse(np.arange(5.0), np.arange(5), np.zeros(5, np.int64), np.zeros(5, np.int64))
    assert r["repeats"] == 0 and r["distance_p50"] is None and r["cross_user_share"] == 0.0


def _synthetic(tmp_path: Path) -> Path:
    out = tmp_path / "syn.parquet"
    write_synth_trace(synth_config_from_data({"vectors": {"dim": 8, "num_clusters": 50}}), 600, 1, out, "vectors")
    return out


@pytest.mark.slow
def test_tiny_vs_synthetic_side_by_side(cli: Cli, tmp_path: Path) -> None:
    syn = _synthetic(tmp_path)
    (tmp_path / "syn.embeddings.parquet").unlink()  # no embeddings: similarity is shown for A only
    code, out, err = cli("trace", "stats", str(TINY_TRACE), "--vs", str(syn), "--out", str(tmp_path / "cmp"))
    assert code == 0, err
    table = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    rows = {r["statistic"]: r for r in table["rows"]}
    assert rows["requests"]["a"] == f"{pq.read_metadata(TINY_TRACE).num_rows:,}" and rows["requests"]["b"] == "600"
    assert rows["requests"]["diffusiondb_2m"] == "2,000,000" and rows["exact_repeat_share"]["diffusiondb_2m"] == "~25%"
    assert rows["nearest earlier > 0.65 / 0.85 / 0.95"]["b"] == "- (no embeddings)"
    assert "%" in rows["nearest earlier > 0.65 / 0.85 / 0.95"]["a"]
    assert "DiffusionDB 2M (published)" in out and "cross-user repeats" in out
    assert (tmp_path / "cmp" / "vs" / "stats.json").is_file()


def test_vs_trace_with_another_embedder_is_one_line(cli: Cli, tmp_path: Path) -> None:
    syn = _synthetic(tmp_path)
    code, out, err = cli("trace", "stats", str(TINY_TRACE), "--vs", str(syn), "--out", str(tmp_path / "cmp"))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert str(syn) in err and "embedded with" in err and "minilm" in err
    assert not (tmp_path / "cmp").exists()  # refused before any work
