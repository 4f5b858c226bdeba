"""Time-consistent similarity evaluation: pool rule, exact top-1, metrics, CV split, stochastic map, bad input."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sim.cache.kselect import KTable
from sim.embedding.simeval import (
    compare_k,
    cross_validate,
    fit_stochastic,
    fold_of,
    joint_tv,
    look_up,
    plan_pool,
    read_pairs,
    time_consistent_top1,
)
from sim.embedding.simmap import load_map
from sim.errors import InputError

Cli = Callable[..., tuple[int, str, str]]
KS = (0, 5, 10, 15, 20, 25)


def _pairs(path: Path, rows: list[tuple[object, ...]], header: str = "clip_score,query_prompt,cached_prompt") -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        fh.write(header + "\n")
        csv.writer(fh).writerows(rows)
    return path


def _unit(*v: float) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def _fake(vectors: dict[str, np.ndarray]) -> Callable[[list[str]], tuple[np.ndarray, str]]:
    return lambda prompts: (np.stack([vectors[p] for p in prompts]), "fake")


# --- the time-consistency rule -------------------------------------------------------------------

def test_query_never_matches_a_prompt_seen_only_later(tmp_path: Path) -> None:
    # "late" is the exact direction of "early-twin" but appears only after it: its top-1 must not be 1.
    log = read_pairs(_pairs(tmp_path / "p.csv", [
        (0.30, "a", ""), (0.40, "early-twin", ""), (0.99, "late", "late"),
    ]))
    vec = {"a": _unit(1, 0, 0), "early-twin": _unit(0, 0, 1), "late": _unit(0, 0, 1)}
    raw = look_up(log, "x", vectors=_fake(vec)).raw
    assert np.isnan(raw[0])  # nothing cached before the first query: a miss
    assert raw[1] == pytest.approx(0.0, abs=1e-6)  # only "a" is in its pool, "late" comes later
    assert raw[2] == pytest.approx(1.0, abs=1e-6)  # its own matched prompt (and the earlier twin) are allowed


def test_only_misses_insert_in_the_default_pool(tmp_path: Path) -> None:
    rows = [(0.30, "m", ""), (0.80, "h", "m"), (0.70, "h", "m")]
    log = read_pairs(_pairs(tmp_path / "p.csv", rows))
    vec = {"m": _unit(1, 0), "h": _unit(0, 1)}
    inserted = look_up(log, "x", vectors=_fake(vec)).raw
    everything = look_up(log, "x", pool="all-queries", vectors=_fake(vec)).raw
    # Row 3 repeats row 2's query. Row 2 was a CLIP hit, so it did not insert: only "m" is cached.
    assert inserted[2] == pytest.approx(0.0, abs=1e-6)
    assert everything[2] == pytest.approx(1.0, abs=1e-6)
    plan = plan_pool(log)
    assert plan.pool_size.tolist() == [0, 1, 1]


def test_pool_prefix_top1_equals_brute_force() -> None:
    from sim.embedding.simeval import PoolPlan

    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((700, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    sizes = np.sort(rng.integers(0, 600, 600))
    query = rng.integers(0, 700, 600)
    got = time_consistent_top1(PoolPlan(tuple(map(str, range(700))), query, sizes), vecs)
    for j in range(600):
        want = (vecs[:sizes[j]] @ vecs[query[j]]).max() if sizes[j] else np.nan
        np.testing.assert_allclose(got[j], want, rtol=1e-5, atol=1e-6)


# --- metrics -------------------------------------------------------------------------------------

def test_metrics_on_a_hand_made_case() -> None:
    m = compare_k(np.array([0, 0, 5, 10, 25]), np.array([0, 5, 5, 5, 25]), KS)
    assert m["hit_miss_accuracy"] == pytest.approx(0.8)
    assert m["false_hit_rate"] == pytest.approx(0.5)  # one of the two CLIP misses became a hit
    assert m["hit_recall"] == pytest.approx(1.0)
    assert m["exact_k_agreement"] == pytest.approx(0.6)
    assert m["hit_rate"] == {"clip": pytest.approx(0.6), "embedder": pytest.approx(0.8)}
    assert m["mean_k"] == {"clip": pytest.approx(8.0), "embedder": pytest.approx(8.0)}
    assert m["k_mix_tv_distance"] == pytest.approx(0.4)
    counts = m["confusion"]["counts"]
    assert counts[0][:2] == [1, 1] and counts[2][1] == 1 and counts[5][5] == 1 and sum(map(sum, counts)) == 5


def test_joint_tv_sees_what_the_k_mix_misses() -> None:
    raw = np.linspace(0, 1, 100)
    k_clip = np.where(raw > 0.5, 5, 0)
    swapped = np.where(raw > 0.5, 0, 5)  # same K mix, opposite dependence on the score
    assert compare_k(k_clip, swapped, KS)["k_mix_tv_distance"] == 0.0
    assert joint_tv(raw, k_clip, k_clip, KS) == 0.0
    assert joint_tv(raw, k_clip, swapped, KS) == pytest.approx(1.0)


# --- cross-validation and the stochastic map -----------------------------------------------------

def test_cross_validation_never_fits_on_the_fold_it_scores() -> None:
    queries = [f"q{i % 40}" for i in range(200)]
    folds = fold_of(queries, 5)
    assert all(len({f for q2, f in zip(queries, folds, strict=True) if q2 == q}) == 1 for q in set(queries))
    raw = np.arange(200, dtype=float)
    seen: list[set[float]] = []

    def fit(r: np.ndarray, c: np.ndarray) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
        seen.append(set(r.tolist()))
        return lambda rr, _rng: rr * 0 + len(seen)

    out = cross_validate(raw, raw, folds, fit)
    for f, trained in zip(np.unique(folds), seen, strict=True):
        assert not trained & set(raw[folds == f].tolist())
        assert np.all(out[folds == f] == len(seen[: list(np.unique(folds)).index(f) + 1]))


def test_stochastic_map_is_seeded_and_follows_the_conditional_distribution() -> None:
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 1, 20_000)
    clip = np.where(rng.random(20_000) < raw, 0.9, 0.5)  # P(high | raw) = raw
    draw = fit_stochastic(raw, clip)
    a = draw(raw, np.random.default_rng(7))
    assert np.array_equal(a, draw(raw, np.random.default_rng(7)))
    assert not np.array_equal(a, draw(raw, np.random.default_rng(8)))
    for lo, hi in ((0.0, 0.2), (0.4, 0.6), (0.8, 1.0)):
        rows = (raw >= lo) & (raw < hi)
        assert (a[rows] > 0.7).mean() == pytest.approx((lo + hi) / 2, abs=0.06)


# --- bad input and the command line --------------------------------------------------------------

@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        ("clip_score,query_prompt", [(0.5, "a")], "missing column(s) cached_prompt"),
        (None, [(0.5, "a", ""), ("x", "b", "")], "row 2: clip_score 'x' is not a number"),
        (None, [(1.5, "a", "")], "row 1: clip_score '1.5' is outside [-1, 1]"),
        (None, [(0.5, "a", ""), ("nan", "b", "")], "row 2: clip_score 'nan' is outside [-1, 1]"),
        (None, [(0.5, " ", "")], "no row with a non-blank query_prompt"),
    ],
)
def test_bad_pairs_file_is_one_line_naming_file_and_row(cli: Cli, tmp_path: Path, header: str | None,
                                                        rows: list[tuple[object, ...]], message: str) -> None:
    path = _pairs(tmp_path / "bad.csv", rows, *([header] if header else []))
    code, out, err = cli("embed", "evaluate", "--pairs", str(path), "--embedder", "hash", "--cache-dir", "")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and str(path) in err and message in err


def test_rounding_above_one_is_accepted_and_blank_queries_are_named(tmp_path: Path) -> None:
    log = read_pairs(_pairs(tmp_path / "p.csv", [(0.3, "a", ""), (1.0000005, "a", "a"), (0.7, " ", "a")]))
    assert log.clip[1] == 1.0
    assert log.blank_rows == (3,) and log.evaluated.tolist() == [0, 1]
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "p.csv").read_bytes())
    assert read_pairs(bom).queries == log.queries
    with pytest.raises(InputError, match="pairs file not found"):
        read_pairs(tmp_path / "missing.csv")


def test_cli_reports_figures_and_json(cli: Cli, tmp_path: Path) -> None:
    rows = [(0.3, "red cat", ""), (0.97, "red cat", "red cat"), (0.5, "blue dog", ""), (0.8, "green", "blue dog")]
    path = _pairs(tmp_path / "p.csv", rows)
    code, out, err = cli("embed", "evaluate", "--pairs", str(path), "--embedder", "hash", "--map", "none",
                         "--json", "--cache-dir", "")
    assert code == 0, err
    result = json.loads(out)
    assert result["queries"] == 4 and result["scale"] == "raw cosine" and result["embedder"] == "hash-32"
    assert result["hit_rate"]["clip"] == pytest.approx(0.5)
    # Row 2 repeats row 1's missed query: cosine 1 on any embedder, so CLIP's K=25 is matched.
    assert result["confusion"]["counts"][5][5] == 1
    code, out, _ = cli("embed", "evaluate", "--pairs", str(path), "--embedder", "hash", "--map", "auto",
                       "--cache-dir", "")
    assert code == 0 and "hit/miss accuracy" in out and "raw cosine (no map for this embedder)" in out


def test_cli_refuses_a_map_for_another_embedder(cli: Cli, tmp_path: Path) -> None:
    path = _pairs(tmp_path / "p.csv", [(0.3, "a", ""), (0.9, "b", "a")])
    code, _, err = cli("embed", "evaluate", "--pairs", str(path), "--embedder", "hash", "--map",
                       "profiles/similarity/minilm-to-clip.yaml", "--cache-dir", "")
    assert code == 2 and "fitted for embedder" in err and "hash-32" in err


def test_calibrate_writes_a_loadable_map_with_held_out_figures(cli: Cli, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows: list[tuple[float, str, str]] = []
    for i in range(120):
        score = float(rng.uniform(0.3, 1.0))
        rows.append((round(score, 4), f"prompt {i % 70}", f"prompt {(i * 7) % 50}" if score > 0.65 else ""))
    path = _pairs(tmp_path / "p.csv", rows)
    out = tmp_path / "map.yaml"
    code, stdout, err = cli("trace", "calibrate-similarity", "--embedder", "hash", "--calibration", str(path),
                            "--out", str(out), "--folds", "2", "--cache-dir", "")
    assert code == 0, err
    smap = load_map(out)
    assert smap.embedder == "hash-32"
    assert "held_out" in stdout and "stochastic" in stdout
    table = KTable()
    assert table.select(smap.apply(1.0)) == table.select(max(r[0] for r in rows))
