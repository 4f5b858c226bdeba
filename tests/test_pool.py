"""The committed prompt pool: same trace as from the log CSV, link_above mismatch named, a fresh copy runs alone."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sim.errors import ConfigError, InputError
from sim.synth.config import load_synth_config, synth_config_from_data
from sim.synth.generator import write_synth_trace
from sim.synth.pool import clusters_from_calibration, read_pool

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = ROOT.parent / "shared" / "data" / "clip_pairs_calibration.csv"
DEFAULT = ROOT / "experiments" / "synth" / "default.yaml"
needs_csv = pytest.mark.skipif(not CALIBRATION.is_file(), reason="needs ../shared/data/clip_pairs_calibration.csv")


@needs_csv
def test_default_trace_from_the_pool_is_byte_identical_to_the_one_from_the_csv(tmp_path: Path) -> None:
    from_pool = load_synth_config(DEFAULT)
    assert from_pool.calibration is None
    from_csv = dataclasses.replace(from_pool, calibration=str(CALIBRATION))
    a, b = tmp_path / "pool.parquet", tmp_path / "csv.parquet"
    write_synth_trace(from_pool, 400, 0, a, embedder=None)
    write_synth_trace(from_csv, 400, 0, b, embedder=None)
    assert a.read_bytes() == b.read_bytes()
    # the comparison can fail: another seed gives other bytes
    write_synth_trace(from_pool, 400, 1, a, embedder=None)
    assert a.read_bytes() != b.read_bytes()


@needs_csv
def test_committed_pool_equals_a_rebuild_from_the_csv_and_holds_no_scores() -> None:
    prompts, clusters, link_above = read_pool(ROOT / "traces" / "pool" / "prompts.parquet")
    assert (prompts, clusters) == clusters_from_calibration(CALIBRATION, link_above)
    assert pq.read_schema(ROOT / "traces" / "pool" / "prompts.parquet").names == ["prompt", "cluster"]


def test_link_above_other_than_the_pools_is_an_error_naming_the_key() -> None:
    from sim.synth.generator import generate

    cfg = synth_config_from_data({"popularity": {"link_above": 0.8}})
    with pytest.raises(ConfigError, match=r"popularity\.link_above: the prompt pool .* clustered at 0\.65, got 0\.8"):
        generate(cfg, 50, 0, "text")


def test_missing_or_foreign_pool_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"gone\.parquet: prompt pool not found \(synth config key 'pool'"):
        read_pool(tmp_path / "gone.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match=r"bad\.parquet: not a readable prompt-pool parquet"):
        read_pool(bad)


@pytest.mark.slow
def test_a_copy_of_the_tracked_files_without_shared_builds_the_default_style_trace(tmp_path: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    copy = tmp_path / "nirvana-sim"
    for rel in filter(None, files.decode().split("\0")):
        if rel.startswith(".venv/") or not (ROOT / rel).is_file():
            continue
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, copy / rel)
    assert not (tmp_path / "shared").exists()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = copy / "traces" / "synth" / "small.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "sim", "trace", "synth", "--requests", "300", "--seed", "0",
         "--config", "experiments/synth/default.yaml", "--out", str(out), "--embedder", "hash", "--cache-dir", ""],
        cwd=copy, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert pq.read_table(out).num_rows == 300
    assert "sim" in sys.modules and Path(sys.modules["sim"].__file__).resolve().is_relative_to(ROOT)
