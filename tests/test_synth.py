"""Synthetic trace generator: determinism, calibrated statistics, session and edit structure, config errors, CLI."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sim.errors import ConfigError, InputError
from sim.synth.config import SECONDS_PER_DAY, SynthConfig, load_synth_config, synth_config_from_data
from sim.synth.generator import SynthResult, generate, statistics, write_synth_trace
from sim.synth.skeleton import REFINE, REPEAT_CROSS, REPEAT_SESSION, START
from sim.synth.text import MODIFIER, NOUN, TextRealiser, load_pool
from sim.trace import embeddings_path, load_trace

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = ROOT.parent / "shared" / "data" / "clip_pairs_calibration.csv"
POOL = ROOT / "traces" / "pool" / "prompts.parquet"
needs_pool = pytest.mark.skipif(not POOL.is_file(), reason="needs the committed traces/pool/prompts.parquet")


def cfg_with(**sections: dict) -> SynthConfig:
    return synth_config_from_data(sections)


def small_vectors(**sections: dict) -> SynthConfig:
    return cfg_with(vectors={"dim": 8, "num_clusters": 200}, **sections)


def levenshtein(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


@pytest.fixture(scope="module")
def text20k() -> SynthResult:
    if not CALIBRATION.is_file():
        pytest.skip("needs the calibration file")
    return generate(SynthConfig(), 20_000, 3, "text")


# --- determinism ---------------------------------------------------------------------------------

@needs_pool
@pytest.mark.parametrize("mode", ["text", "vectors"])
def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path: Path, mode: str) -> None:
    cfg = small_vectors()
    outs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        out = tmp_path / f"{name}.parquet"
        write_synth_trace(cfg, 1500, seed, out, mode, embedder="hash", cache_dir=None)
        outs.append((out.read_bytes(), embeddings_path(out).read_bytes()))
    assert outs[0] == outs[1]
    assert outs[0][0] != outs[2][0] and outs[0][1] != outs[2][1]


# --- calibrated statistics -----------------------------------------------------------------------

@needs_pool
def test_exact_repeat_share_is_the_configured_target(text20k: SynthResult) -> None:
    stats = statistics(text20k)
    assert abs(stats["exact_repeat_share"] - 0.25) <= 0.02
    prompts = text20k.prompt.to_pylist()
    repeat = np.isin(text20k.skeleton.kind, (REPEAT_SESSION, REPEAT_CROSS))
    seen: set[str] = set()
    for p, r in zip(prompts, repeat, strict=True):
        assert (p in seen) == r  # repeats copy an earlier prompt; every other prompt is new
        seen.add(p)


@pytest.mark.parametrize("share", [0.1, 0.4])
def test_exact_repeat_share_follows_the_knob(share: float) -> None:
    stats = statistics(generate(small_vectors(repeats={"share": share}), 20_000, 1, "vectors"))
    assert abs(stats["exact_repeat_share"] - share) <= 0.02


@pytest.mark.parametrize("rate", [76_923.0, 20_000.0])
def test_requests_per_day_match_the_configured_rate(rate: float) -> None:
    cfg = small_vectors(arrivals={"requests_per_day": rate, "peak_to_trough": 1.0})
    stats = statistics(generate(cfg, 20_000, 2, "vectors"))
    assert stats["requests_per_day"] == pytest.approx(rate, rel=0.05)


def test_requests_per_day_over_whole_days_with_the_diurnal_profile() -> None:
    stats = statistics(generate(small_vectors(), 160_000, 4, "vectors"))
    assert stats["days"] > 2
    assert stats["requests_per_day"] == pytest.approx(76_923, rel=0.05)


@pytest.mark.parametrize("ratio", [1.5, 3.0])
def test_diurnal_peak_over_trough_matches_the_configured_ratio(ratio: float) -> None:
    cfg = small_vectors(arrivals={"peak_to_trough": ratio, "peak_hour_utc": 14.0, "requests_per_day": 100_000})
    res = generate(cfg, 300_000, 5, "vectors")
    d = statistics(res)["diurnal"]
    assert d["whole_days"] >= 2
    counts = np.asarray(d["hourly_counts"], dtype=float)
    # Hour 14 holds the peak, hour 2 the trough; an hour-wide bin averages the sinusoid a little.
    assert counts[14] / counts[2] == pytest.approx(ratio, rel=0.15)
    assert d["fitted_peak_to_trough"] == pytest.approx(ratio, rel=0.1)
    assert abs(d["fitted_peak_hour_utc"] - 14.5) < 1.0


def test_hourly_weights_replace_the_sinusoid() -> None:
    weights = [0.0] * 6 + [1.0] * 18
    res = generate(small_vectors(arrivals={"hourly_weights": weights}), 100_000, 6, "vectors")
    starts = res.skeleton.arrival_s[res.skeleton.position == 0]
    hours = (starts % SECONDS_PER_DAY) // 3600
    assert not np.any(hours < 6)  # no session starts in the silent hours


def test_popularity_drift_changes_the_daily_top_clusters() -> None:
    jaccard = {}
    for drift in (0.0, 1.0):
        cfg = small_vectors(popularity={"daily_drift": drift}, arrivals={"requests_per_day": 50_000})
        jaccard[drift] = statistics(generate(cfg, 200_000, 7, "vectors"))["popularity"]["top20_jaccard_day_to_day"]
    assert jaccard[0.0] > 0.8 and jaccard[1.0] < 0.5


# --- sessions and refinements --------------------------------------------------------------------

@needs_pool
def test_a_session_is_one_user_with_gaps_within_the_limit(text20k: SynthResult) -> None:
    sk = text20k.skeleton
    cfg = SynthConfig().sessions
    order = np.lexsort((sk.position, sk.session))
    ses, pos, t, user = sk.session[order], sk.position[order], sk.arrival_s[order], sk.user[order]
    same = ses[1:] == ses[:-1]
    assert np.all(user[1:][same] == user[:-1][same])
    assert np.all(pos[1:][same] == pos[:-1][same] + 1)
    gaps = (t[1:] - t[:-1])[same]
    assert np.all(gaps >= 0) and np.all(gaps <= cfg.max_gap_s)
    assert np.all(pos[1:][~same] == 0)
    assert np.all(np.diff(sk.arrival_s) >= 0)
    # Sources are earlier requests: the previous one of the session, or (cross-user) any earlier one.
    has_source = sk.kind != START
    assert np.all(sk.source[has_source] < np.flatnonzero(has_source))
    same_session = np.isin(sk.kind, (REFINE, REPEAT_SESSION))
    assert np.all(sk.session[sk.source[same_session]] == sk.session[same_session])
    assert 2.5 < statistics(text20k)["mean_session_length"] < 3.5


def _refinements(res: SynthResult) -> list[tuple[list[str], list[str], int, int]]:
    prompts = res.prompt.to_pylist()
    sk = res.skeleton
    return [(prompts[sk.source[i]].split(), prompts[i].split(), int(res.edits_applied[i]), int(sk.topic_step[i]))
            for i in np.flatnonzero(sk.kind == REFINE)]


@needs_pool
@pytest.mark.parametrize("num_edits", [1, 3])
def test_refinements_differ_from_their_parent_by_the_configured_edit_count(num_edits: int) -> None:
    weights = [0.0] * (num_edits - 1) + [1.0]
    res = generate(cfg_with(edits={"count_weights": weights}), 4000, 9, "text")
    refs = _refinements(res)
    assert len(refs) > 1000
    applied = np.array([a for _, _, a, _ in refs])
    dist = np.array([levenshtein(p, c) for p, c, _, _ in refs])
    assert np.mean(applied == num_edits) > 0.99  # more only when the edited prompt already existed
    assert np.all((dist >= 1) & (dist <= applied))
    assert np.mean(dist == applied) > 0.95  # rare: an added word equal to a neighbour it replaced


@needs_pool
def test_early_refinements_edit_nouns_and_later_ones_modifiers() -> None:
    res = generate(cfg_with(edits={"count_weights": [1.0], "substitute": 1.0, "add": 0.0, "delete": 0.0}),
                   6000, 10, "text")
    realiser = TextRealiser(load_pool(SynthConfig()), SynthConfig(), __import__("random").Random(0))
    by_phase: dict[bool, list[int]] = {True: [], False: []}
    for parent, child, applied, step in _refinements(res):
        if applied != 1 or len(parent) != len(child):
            continue
        i = next(k for k, (a, b) in enumerate(zip(parent, child, strict=True)) if a != b)
        has_noun = any(realiser._token(t)[0] == NOUN for t in parent)
        has_mod = any(realiser._token(t)[0] == MODIFIER for t in parent)
        early = step <= 2
        if (early and has_noun) or (not early and has_mod):
            by_phase[early].append(realiser._token(parent[i])[0])
    assert np.mean(np.array(by_phase[True]) == NOUN) > 0.95
    assert np.mean(np.array(by_phase[False]) == MODIFIER) > 0.95


# --- vectors mode ---------------------------------------------------------------------------------

def test_vectors_mode_unit_norm_dim_and_identifiable_repeats(tmp_path: Path) -> None:
    cfg = cfg_with(vectors={"dim": 24, "num_clusters": 300})
    out = tmp_path / "v.parquet"
    stats = write_synth_trace(cfg, 5000, 11, out, "vectors")
    trace = load_trace(out)
    assert trace.vectors.shape == (stats["unique_prompts"], 24)
    assert np.allclose(np.linalg.norm(trace.vectors, axis=1), 1.0, atol=1e-5)
    assert all(p.startswith("v:") and len(p.split(":")) == 3 for p in trace.prompts)
    assert len(trace) - len(trace.prompts) == round(stats["exact_repeat_share"] * len(trace))
    res = generate(cfg, 5000, 11, "vectors")
    assert res.vectors is not None and res.distinct_prompts is not None
    row = {p: i for i, p in enumerate(res.distinct_prompts)}
    ids = res.prompt.to_pylist()
    sk = res.skeleton
    refine = np.flatnonzero(sk.kind == REFINE)
    cos = [float(res.vectors[row[ids[i]]] @ res.vectors[row[ids[sk.source[i]]]]) for i in refine]
    assert np.median(cos) > 0.9  # a refinement is a small step from its parent
    same_cluster = [ids[i].split(":")[1] == ids[sk.source[i]].split(":")[1] for i in refine]
    assert all(same_cluster)


# --- configuration and bad input ------------------------------------------------------------------

def test_committed_default_yaml_lists_the_defaults() -> None:
    assert load_synth_config(ROOT / "experiments" / "synth" / "default.yaml") == SynthConfig()
    assert load_synth_config(None) == SynthConfig()


@pytest.mark.parametrize(("yaml_text", "key"), [
    ("arrivals:\n  bogus: 1\n", "arrivals.bogus: unknown key"),
    ("arrivals:\n  requests_per_day: -5\n", "arrivals.requests_per_day: expected a number > 0"),
    ("sessions:\n  topic_switch: 1.5\n", "sessions.topic_switch: expected a probability"),
    ("repeats:\n  share: high\n", "repeats.share: expected a number"),
    ("edits:\n  count_weights: []\n", "edits.count_weights"),
    ("vectors:\n  dim: 0\n", "vectors.dim: expected an integer >= 1"),
    ("repeats:\n  share: 0.9\n  cross_user_fraction: 0.9\n", "repeats.cross_user_fraction"),
])
def test_config_errors_name_the_file_and_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    file = tmp_path / "synth.yaml"
    file.write_text(yaml_text)
    with pytest.raises(ConfigError, match=f"synth.yaml: {key}"):
        load_synth_config(file)


def test_bad_yaml_and_missing_config_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("arrivals: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_synth_config(bad)
    with pytest.raises(ConfigError, match=r"nope\.yaml: generator config not found"):
        load_synth_config(tmp_path / "nope.yaml")


def test_missing_calibration_file_names_file_and_key(tmp_path: Path) -> None:
    cfg = dataclasses.replace(SynthConfig(), calibration=str(tmp_path / "gone.csv"))
    with pytest.raises(InputError, match=r"gone\.csv: calibration file not found \(synth config key 'calibration'\)"):
        generate(cfg, 100, 0, "text")


# --- CLI ------------------------------------------------------------------------------------------

@needs_pool
def test_cli_writes_a_trace_that_load_trace_accepts(tmp_path: Path, cli: Callable[..., tuple[int, str, str]]) -> None:
    out = tmp_path / "t.parquet"
    code, stdout, stderr = cli("trace", "synth", "--requests", "2000", "--seed", "1", "--out", str(out),
                               "--embedder", "hash", "--cache-dir", "")
    assert code == 0, stderr
    assert "exact_repeat_share" in stdout and "requests_per_day" in stdout
    trace = load_trace(out)
    assert len(trace) == 2000 and trace.embedder == "hash-32"
    assert pq.read_table(out).column("width").null_count == 2000
    report = json.loads(out.with_name("t.synth.json").read_text())
    assert report["requests"] == 2000 and report["seed"] == 1
    assert report["config"]["repeats"]["share"] == 0.25 and "targets" in report
    assert not list(tmp_path.glob("*partial*"))
    code, _, _ = cli("trace", "synth", "--requests", "50", "--out", str(out), "--no-embed")
    assert code == 0 and not embeddings_path(out).exists()  # no stale vectors beside a new trace


def test_cli_vectors_mode_and_bad_config(tmp_path: Path, cli: Callable[..., tuple[int, str, str]]) -> None:
    out = tmp_path / "v.parquet"
    code, _, stderr = cli("trace", "synth", "--requests", "3000", "--out", str(out), "--mode", "vectors")
    assert code == 0, stderr
    assert load_trace(out).vectors.shape[1] == 64
    bad = tmp_path / "bad.yaml"
    bad.write_text("arrivals:\n  requests_per_day: -1\n")
    code, _, stderr = cli("trace", "synth", "--requests", "10", "--out", str(tmp_path / "x.parquet"),
                          "--mode", "vectors", "--config", str(bad))
    assert code == 2 and "arrivals.requests_per_day" in stderr and "Traceback" not in stderr
    code, _, stderr = cli("trace", "synth", "--requests", "0", "--out", str(tmp_path / "x.parquet"))
    assert code == 2 and "--requests" in stderr
    assert not (tmp_path / "x.parquet").exists()
