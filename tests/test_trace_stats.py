"""Trace statistics: exact numbers on a hand-made trace with hand-placed embeddings, and the CLI on tiny."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sim.errors import InputError
from sim.trace import embeddings_path, write_embeddings, write_trace
from sim.workload import stats as stats_mod
from sim.workload.stats import nearest_earlier, sessions, trace_stats
from tests.conftest import TINY_TRACE

Cli = Callable[..., tuple[int, str, str]]

# Unit vectors with known cosines: A·B = 0.97, A·C = 0.62, B·C = 0.6014, C·D = sqrt(1 - 0.62²) = 0.7846,
# A·D = B·D = 0.
VECTORS = {
    "A": [1.0, 0.0, 0.0],
    "B": [0.97, math.sqrt(1 - 0.97**2), 0.0],
    "C": [0.62, 0.0, math.sqrt(1 - 0.62**2)],
    "D": [0.0, 0.0, 1.0],
}
# (arrival_s, prompt, user). Nearest earlier *other* prompt: -, A→B .97, B→A .97, A,B→C .62, A,B→C .62,
# A,B,C→D .7846, B,C,D→A .97. Exact repeats: requests 2, 4, 6 (3 of 7).
REQUESTS = [(0.0, "A", "u1"), (60.0, "B", "u1"), (120.0, "A", "u2"), (4000.0, "C", "u1"),
            (4100.0, "C", None), (90000.0, "D", "u2"), (90100.0, "A", "u2")]


def make_trace(folder: Path, embeddings: bool = True) -> Path:
    path = folder / "hand.parquet"
    write_trace(pa.table({
        "request_id": [f"r{i}" for i in range(len(REQUESTS))],
        "arrival_s": [t for t, _, _ in REQUESTS],
        "prompt": [p for _, p, _ in REQUESTS],
        "user": pa.array([u for _, _, u in REQUESTS], pa.string()),
    }), path)
    if embeddings:
        write_embeddings(list(VECTORS), np.array(list(VECTORS.values())), "hand-3d", embeddings_path(path))
    return path


def test_counts_repeats_sessions_and_top_prompts(tmp_path: Path) -> None:
    s = trace_stats(make_trace(tmp_path), tmp_path / "out", top=2, plots=False)
    assert (s["requests"], s["unique_prompts"], s["exact_repeat_share"]) == (7, 4, round(3 / 7, 6))
    assert s["requests_per_day"] == [5, 2]
    assert s["requests_per_hour_of_day"][:3] == [3, 4, 0] and sum(s["requests_per_hour_of_day"]) == 7
    # u1: {0, 60} and {4000} (gap 3880 s > 30 min); u2: {120} and {90000, 90100}; the null user is never sessionised.
    assert (s["users"], s["unknown_user_requests"]) == (2, 1)
    assert s["sessions"]["total"] == 4 and s["sessions"]["per_user_histogram"] == {"2": 2}
    assert s["sessions"]["requests_per_session_mean"] == 1.5
    assert [(p["prompt"], p["requests"], p["per_day"]) for p in s["top_prompts"]] == [("A", 3, [2, 1]),
                                                                                        ("C", 2, [2, 0])]
    assert s["daily_top_overlap_mean"] == 0.5  # day 0 top-2 {A, C}, day 1 {A, D}
    top3 = trace_stats(make_trace(tmp_path), tmp_path / "out", top=3, plots=False)["top_prompts"]
    assert [p["prompt"] for p in top3] == ["A", "C", "B"]  # B and D tie at 1: B appeared first
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["requests"] == 7


def test_session_gap_is_a_parameter(tmp_path: Path) -> None:
    """Sensitivity partner: with a 5000 s gap, u1's requests form one session."""
    s = trace_stats(make_trace(tmp_path), tmp_path / "out", session_gap_s=5000, plots=False)
    assert s["sessions"]["total"] == 3 and s["sessions"]["per_user_histogram"] == {"1": 1, "2": 1}


def test_similarity_histogram_exact_counts(tmp_path: Path) -> None:
    sim = trace_stats(make_trace(tmp_path), tmp_path / "out", plots=False)["similarity"]
    expected = [0] * 40
    expected[39], expected[35], expected[32] = 3, 1, 2  # 0.97 (×3), 0.7846, 0.62 (×2)
    assert sim["counts"] == expected and sim["bin_edges"][32] == 0.6
    assert (sim["queries"], sim["no_earlier_prompt"], sim["sampled"], sim["embedder"]) == (7, 1, False, "hand-3d")
    assert sim["share_above"] == {"0.65": 0.666667, "0.75": 0.666667, "0.85": 0.5, "0.9": 0.5, "0.95": 0.5}
    assert sim["share_above_counting_exact_repeats_as_1"] == {
        "0.65": 0.833333, "0.75": 0.833333, "0.85": 0.666667, "0.9": 0.666667, "0.95": 0.666667}


def test_similarity_queries_are_an_evenly_spaced_subset(tmp_path: Path) -> None:
    sim = trace_stats(make_trace(tmp_path), tmp_path / "out", max_queries=4, plots=False)["similarity"]
    # Requests floor(j * 7 / 4) = 0, 1, 3, 5: none, 0.97, 0.62, 0.7846.
    assert (sim["queries"], sim["sampled"], sim["no_earlier_prompt"]) == (4, True, 1)
    assert (sim["counts"][39], sim["counts"][35], sim["counts"][32], sum(sim["counts"])) == (1, 1, 1, 3)


def test_session_ends_only_after_a_gap_longer_than_the_parameter() -> None:
    arrival = np.array([0.0, 1800.0, 3601.0, 10.0])
    assert sessions(arrival, np.array([0, 0, 0, -1]), 1800.0).tolist() == [2]  # 1800 s stays, 1801 s splits
    assert sessions(arrival, np.array([1, 1, 0, 1]), 1800.0).tolist() == [1, 1]


def test_blocked_similarity_equals_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((60, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    prompt_id = np.r_[np.arange(10), rng.integers(0, 10, 5), np.arange(10, 60), rng.integers(0, 60, 35)]
    monkeypatch.setattr(stats_mod, "_QUERY_BLOCK", 7)
    monkeypatch.setattr(stats_mod, "_PROMPT_BLOCK", 5)
    got = nearest_earlier(vectors, prompt_id, np.arange(len(prompt_id)))
    for i, p in enumerate(prompt_id):
        others = [q for q in set(prompt_id[:i].tolist()) if q != p]
        want = max(float(vectors[p] @ vectors[q]) for q in others) if others else math.nan
        assert (math.isnan(want) and math.isnan(got[i])) or abs(got[i] - want) < 1e-6, i


def test_calendar_days_from_import_report(tmp_path: Path) -> None:
    path = make_trace(tmp_path)
    (tmp_path / "hand.import.json").write_text(json.dumps({"origin_utc": "2022-08-10T23:00:00+00:00"}))
    s = trace_stats(path, tmp_path / "out", plots=False)
    assert s["requests_per_day"] == [3, 2, 2]  # 23:00 + 4000 s is the next day; + 90000 s the day after
    assert s["requests_per_hour_of_day"][23] == 3 and s["requests_per_hour_of_day"][0] == 4


def test_without_embeddings_no_similarity(tmp_path: Path) -> None:
    s = trace_stats(make_trace(tmp_path, embeddings=False), tmp_path / "out", plots=False)
    assert "similarity" not in s and s["exact_repeat_share"] == round(3 / 7, 6)


@pytest.mark.slow
def test_plots_without_embeddings_skip_the_similarity_plot(tmp_path: Path) -> None:
    trace_stats(make_trace(tmp_path, embeddings=False), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "requests_per_day.png", "requests_per_hour.png", "sessions_per_user.png", "stats.json",
        "top_prompts_by_day.png"]


def test_unsorted_trace_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    write_trace(pa.table({"request_id": ["a", "b"], "arrival_s": [5.0, 1.0], "prompt": ["x", "y"],
                          "user": pa.array([None, None], pa.string())}), path)
    with pytest.raises(InputError, match="row 1 is earlier than row 0"):
        trace_stats(path, tmp_path / "out")


def test_cli_bad_input_exits_2_with_one_line(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("trace", "stats", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "o"))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "trace file not found" in err


@pytest.mark.slow
def test_cli_on_tiny_trace_writes_files(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "stats"
    code, stdout, err = cli("trace", "stats", str(TINY_TRACE), "--out", str(out))
    assert code == 0, err
    assert "unique prompts 3,000; exact repeats 25.0%" in stdout
    for name in ("stats.json", "requests_per_day.png", "requests_per_hour.png", "sessions_per_user.png",
                 "top_prompts_by_day.png", "similarity_nearest_earlier.png"):
        assert (out / name).is_file(), name
    s = json.loads((out / "stats.json").read_text())
    assert (s["requests"], s["unique_prompts"], s["exact_repeat_share"]) == (4000, 3000, 0.25)
    assert s["similarity"]["queries"] == 4000 and sum(s["similarity"]["counts"]) == 4000 - 1
    # minilm vectors have a shipped map: the histogram is on NIRVANA's CLIP scale, the raw shares kept too
    assert s["similarity"]["scale"] == "CLIP text cosine via minilm-to-clip.yaml"
    assert s["similarity"]["share_above"]["0.65"] > s["similarity"]["share_above_raw"]["0.65"]
