"""Reports from result files only: summaries table, notebook API, figures (PNG+PDF), tables, index.html in a browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import sim.results
from sim.errors import InputError
from sim.experiments import figures
from sim.experiments.report import report_experiment
from sim.experiments.sweep import load_experiment

SWEEP = """\
base:
  name: rep
  trace: {limit: 300}
grid:
  cache.policy: [lru, lcbfu]
  cache.capacity_noises: [40, 400]
zip:
  trace.time_scale: [1.0, 0.4]
"""
FIGURES = ("capacity", "miss_ratio_curve", "latency_cdf", "p99_vs_load", "k_histogram", "quality_vs_saved",
           "hit_rate_over_time")


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 8-run sweep on the tiny trace, simulated once for this module."""
    from sim.cli import main

    tmp = tmp_path_factory.mktemp("rep")
    (tmp / "exp.yaml").write_text(SWEEP)
    out = tmp / "out"
    assert main(["run", str(tmp / "exp.yaml"), "--out", str(out), "--quiet"]) == 0
    # The whole sweep as the folder's experiment.yaml (zip and seeds included), as the runner records it.
    (out / "experiment.yaml").write_text(yaml.safe_dump(load_experiment(tmp / "exp.yaml").spec(), sort_keys=False))
    report_experiment(out)
    return out


@pytest.mark.slow
def test_summaries_table_and_api(swept: Path) -> None:
    table = pd.read_parquet(swept / "summaries.parquet")
    assert table.columns[:4].tolist() == ["run", "cache.policy", "cache.capacity_noises", "trace.time_scale"]
    assert table["cache.policy"].tolist() == ["lru"] * 4 + ["lcbfu"] * 4  # the sweep's order, not folder names
    assert table["cache.capacity_noises"].tolist() == [40, 40, 400, 400] * 2
    assert {"latency_s.p99", "k_histogram.0", "hit_rate"} <= set(table.columns)
    assert pd.read_csv(swept / "summaries.csv")["hit_rate"].tolist() == pytest.approx(table["hit_rate"].tolist())
    results = sim.results.load(swept)
    assert results.swept == ("cache.policy", "cache.capacity_noises", "trace.time_scale")
    run = results.runs[3]
    assert run == "cache.policy=lru,cache.capacity_noises=400,trace.time_scale=0.4"
    assert len(results.requests(run)) == 300
    assert results.config(run)["cache"]["capacity_noises"] == 400
    assert results.summary(run)["hit_rate"] == table["hit_rate"][3]
    with pytest.raises(InputError, match="no finished run 'nope'"):
        results.requests("nope")


@pytest.mark.slow
def test_report_writes_figures_tables_and_page(swept: Path) -> None:
    for stem in FIGURES:
        for fmt in ("png", "pdf"):
            assert (swept / "figures" / f"{stem}.{fmt}").stat().st_size > 1000, (stem, fmt)
    tex = (swept / "tables" / "summary.tex").read_text()
    assert r"\toprule" in tex and r"cache.capacity\_noises" in tex and tex.count(r"\\") == 9
    assert (swept / "tables" / "summary.csv").read_text().count("\n") == 9
    page = (swept / "index.html").read_text()
    assert sorted(re.findall(r"<img src='figures/([a-z_0-9]+)\.png'", page)) == sorted(FIGURES)
    assert "Not drawn" not in page and "capacity_noises: 400" not in page  # the base config, not a point's
    assert "trace.time_scale" in page and "<h2>Resolved configuration</h2>" in page


@pytest.mark.slow
def test_report_always_redraws(swept: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(swept, out)
    run = next(p for p in out.iterdir() if (p / "plots").is_dir())
    (run / "plots" / "k_histogram.png").write_bytes(b"stale")
    (out / "figures" / "capacity.png").write_bytes(b"stale")
    report_experiment(out)
    assert (run / "plots" / "k_histogram.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "figures" / "capacity.png").read_bytes()[:4] == b"\x89PNG"


def _fake_run(folder: Path, config: dict[str, Any], summary: dict[str, Any], latency: float) -> None:
    """A run folder written by hand: the report must need nothing but these files."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "summary.json").write_text(json.dumps(summary))
    n = 50
    pd.DataFrame({"arrival_s": np.arange(n, dtype=float), "latency_s": np.full(n, latency),
                  "k_used": np.tile([0, 5], n // 2)}).to_parquet(folder / "requests.parquet")


@pytest.mark.slow
def test_unsupported_figures_are_skipped_with_a_note(tmp_path: Path) -> None:
    """No capacity axis, no clock (null latencies), unknown extra summary keys: notes on the page, no crash."""
    out = tmp_path / "hand"
    out.mkdir()
    (out / "experiment.yaml").write_text(yaml.safe_dump({"base": {"name": "hand"}, "sweep": {"serving.mode": [
        "vanilla", "final_image"]}}))
    for mode in ("vanilla", "final_image"):
        summary = {"name": "hand", "mode": mode, "executor": "sequential", "outcomes": {"hit": 25, "miss": 25},
                   "requests": 50, "hits": 25, "hit_rate": 0.5, "compute_saved": 0.05, "quality_mean": 0.99,
                   "k_histogram": {"0": 25, "5": 25}, "latency_s": {"mean": None, "p50": None, "p95": None,
                                                                    "p99": None}, "offered_load": None}
        config = {"name": "hand", "serving": {"mode": mode}, "cache": {"policy": "lru", "capacity_noises": 100}}
        _fake_run(out / f"serving.mode={mode}", config, summary, latency=float("nan"))
    report_experiment(out)
    page = (out / "index.html").read_text()
    for stem in ("capacity", "miss_ratio_curve", "latency_cdf", "p99_vs_load"):
        assert f"<p class='skipped' id='{stem}'>" in page, stem
        assert not (out / "figures" / f"{stem}.png").exists()
    assert "no capacity axis" in page and "latency_s is null" in page
    for stem in ("k_histogram", "quality_vs_saved", "hit_rate_over_time"):
        assert (out / "figures" / f"{stem}.pdf").is_file(), stem
    table = sim.results.load(out).summaries
    assert table["serving.mode"].tolist() == ["vanilla", "final_image"]
    assert table["mode"].tolist() == ["vanilla", "final_image"]
    assert table["outcomes.hit"].tolist() == [25, 25]
    assert not (out / "serving.mode=vanilla" / "plots" / "latency_cdf.png").exists()


def test_not_a_results_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a results folder"):
        sim.results.load(tmp_path)


def test_palette_is_fixed_and_disjoint() -> None:
    policies = [figures.colour("policy", p) for p in ("fifo", "lru", "lfu", "lcbfu")]
    modes = [figures.colour("mode", m) for m in ("vanilla", "nirvana", "final_image", "small_model")]
    assert len(set(policies + modes)) == 8
    assert figures.colour("policy", "arc") == figures.colour("policy", "arc")
    assert figures.colour("policy", "arc") not in policies + modes
    assert figures.series_label("policy", "lcbfu") == "LCBFU"


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium package)")
        pytest.skip("chromium not installed (apt-get install chromium); CI runs this test")
    return path


def _dump(browser: str, page: Path, profile: Path, *extra: str) -> str:
    done = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_page_loads_every_image_in_a_real_browser(swept: Path, tmp_path: Path) -> None:
    browser = _chromium()
    dom = _dump(browser, swept / "index.html", tmp_path / "profile", "--dump-dom")
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None
    assert f'data-images="{len(FIGURES)}"' in body.group(0) and 'data-broken-images="0"' in body.group(0), body
    widths = re.findall(r'data-natural-width="(\d+)"', dom)
    assert len(widths) == len(FIGURES) and all(int(w) > 100 for w in widths)
    shot = swept / "index-screenshot.png"
    _dump(browser, swept / "index.html", tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,2400",
          "--hide-scrollbars")
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    # Sensitivity partner: a missing figure is seen as broken.
    broken = tmp_path / "broken"
    shutil.copytree(swept / "figures", broken / "figures")
    shutil.copy(swept / "index.html", broken / "index.html")
    (broken / "figures" / "capacity.png").unlink()
    dom = _dump(browser, broken / "index.html", tmp_path / "profile", "--dump-dom")
    assert 'data-broken-images="1"' in dom


@pytest.mark.slow
def test_capacity_sweep_without_load_axis(tmp_path: Path) -> None:
    """Capacity curves drawn; p99 vs load skipped (offered loads differ only because the cache does)."""
    out = tmp_path / "cap"
    out.mkdir()
    (out / "experiment.yaml").write_text(yaml.safe_dump({"base": {"name": "cap"},
                                                         "sweep": {"cache.capacity_noises": [10, 100]}}))
    for cap, load in ((10, 0.9), (100, 0.7)):
        summary = {"requests": 50, "hit_rate": cap / 200, "compute_saved": cap / 2000, "k_histogram": {"0": 50},
                   "latency_s": {"p99": 10.0 / load}, "offered_load": load, "saturated": False}
        config = {"cache": {"policy": "lfu", "capacity_noises": cap, "enabled": True}}
        _fake_run(out / f"cache.capacity_noises={cap}", config, summary, latency=5.0)
    report_experiment(out)
    page = (out / "index.html").read_text()
    assert "<p class='skipped' id='p99_vs_load'>" in page and "no load axis" in page
    assert "<img src='figures/capacity.png'" in page and "<img src='figures/latency_cdf.png'" in page
    assert sim.results.load(out).summaries["cache.capacity_noises"].tolist() == [10, 100]


def test_summaries_table_from_hand_written_files(tmp_path: Path) -> None:
    """Order from the spec's lists (not folder names), swept columns first, extra summary keys kept."""
    out = tmp_path / "t"
    out.mkdir()
    (out / "experiment.yaml").write_text(yaml.safe_dump({"base": {"name": "t"}, "grid": {
        "cache.policy": ["lru", "fifo"]}, "zip": {"cache.capacity_noises": [900, 80]}, "seeds": [5, 2]}))
    for policy in ("fifo", "lru"):
        for cap in (80, 900):
            for seed in (2, 5):
                config = {"seed": seed, "cache": {"policy": policy, "capacity_noises": cap}}
                summary = {"hit_rate": 0.1, "seed": seed, "outcomes": {"hit": 1}}
                _fake_run(out / f"p={policy},c={cap},seed={seed}", config, summary, latency=1.0)
    (out / "stray").mkdir()  # no summary: not a run
    table = sim.results.summaries_table(out)
    assert table.columns[:4].tolist() == ["run", "cache.policy", "cache.capacity_noises", "seed"]
    assert list(zip(table["cache.policy"], table["cache.capacity_noises"], table["seed"], strict=True)) == [
        ("lru", 900, 5), ("lru", 900, 2), ("lru", 80, 5), ("lru", 80, 2),
        ("fifo", 900, 5), ("fifo", 900, 2), ("fifo", 80, 5), ("fifo", 80, 2)]
    assert table["summary.seed"].tolist() == table["seed"].tolist()  # a summary key never hides a swept one
    assert table["outcomes.hit"].tolist() == [1] * 8
    sim.results.write_summaries(out, table)
    assert pd.read_parquet(out / "summaries.parquet").equals(table)
