"""Integration: CLI run -> records, summary, config, tables, figures; errors exit 2 with one line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sim.experiments.rundir import DOCUMENTED
from sim.scenario.records import OUTCOMES, RECORD_COLUMNS

Cli = Callable[..., tuple[int, str, str]]
SMALL = ["--set", "trace.limit=400", "--quiet"]


def _experiment(tmp_path: Path, text: str = "name: t\ncache: {capacity_noises: 200}\n") -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)


def test_run_writes_documented_files(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _, err = cli("run", _experiment(tmp_path), "--out", str(out), *SMALL)
    assert code == 0, err
    run = out / "run"
    for name in DOCUMENTED:
        assert (run / name).is_file(), name
    for name in ("experiment.yaml", "results.md", "results.csv", "compare.png"):
        assert (out / name).is_file(), name
    requests = pd.read_parquet(run / "requests.parquet")
    assert list(requests.columns) == ["request_id", "user", *RECORD_COLUMNS, "mode"]
    assert set(requests["outcome"]) <= set(OUTCOMES) and set(requests["mode"]) == {"nirvana"}
    assert len(requests) == 400
    summary = json.loads((run / "summary.json").read_text())
    assert summary["requests"] == 400
    assert summary["hits"] == int((requests["k_used"] > 0).sum())
    assert sum(summary["k_histogram"].values()) == 400
    assert "wall_s" not in json.dumps(summary)  # wall-clock timings live in timings.json only
    assert yaml.safe_load((run / "config.yaml").read_text())["cache"]["capacity_noises"] == 200


def test_same_seed_byte_identical_summary(cli: Cli, tmp_path: Path) -> None:
    exp = _experiment(tmp_path, "name: t\nseed: 3\nhardware: {step_jitter_cv: 0.3}\n")
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert cli("run", exp, "--out", str(out), *SMALL)[0] == 0
    for name in ("summary.json", "config.yaml", "summary.md", "requests.parquet"):
        assert (outs[0] / "run" / name).read_bytes() == (outs[1] / "run" / name).read_bytes(), name
    other = tmp_path / "c"
    assert cli("run", exp, "--out", str(other), "--set", "seed=4", *SMALL)[0] == 0
    assert (other / "run" / "summary.json").read_bytes() != (outs[0] / "run" / "summary.json").read_bytes()


def test_existing_output_needs_overwrite(cli: Cli, tmp_path: Path) -> None:
    exp, out = _experiment(tmp_path), tmp_path / "out"
    assert cli("run", exp, "--out", str(out), *SMALL)[0] == 0
    before = (out / "run" / "summary.json").read_bytes()
    code, _, err = cli("run", exp, "--out", str(out), *SMALL)
    assert code == 2 and "output folder exists" in err and err.count("\n") == 1
    assert (out / "run" / "summary.json").read_bytes() == before
    assert cli("run", exp, "--out", str(out), "--overwrite", *SMALL)[0] == 0


def test_overwrite_refuses_foreign_folder(cli: Cli, tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    code, _, err = cli("run", _experiment(tmp_path), "--out", str(foreign), "--overwrite", *SMALL)
    assert code == 2 and "not a nirvana-sim results folder" in err
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_overwrite_refuses_a_results_folder_holding_an_input(cli: Cli, tmp_path: Path) -> None:
    """A results folder that holds the experiment YAML or the trace it reads is never deleted by --overwrite."""
    from tests.conftest import TINY_TRACE

    out = tmp_path / "out"
    assert cli("run", _experiment(tmp_path), "--out", str(out), *SMALL)[0] == 0
    inner = out / "exp.yaml"
    inner.write_text("name: t\ncache: {capacity_noises: 200}\n")
    code, _, err = cli("run", str(inner), "--out", str(out), "--overwrite", *SMALL)
    assert code == 2 and "holds an input" in err and str(inner) in err and inner.is_file()
    inner.unlink()
    for name in ("trace.parquet", "trace.embeddings.parquet"):
        shutil.copy(TINY_TRACE.with_name(name), out / name)
    code, _, err = cli("run", _experiment(tmp_path), "--out", str(out), "--overwrite",
                       "--set", f"trace.path={out / 'trace.parquet'}", *SMALL)
    assert code == 2 and "holds an input" in err and (out / "trace.parquet").is_file() and (out / "run").is_dir()


def test_resume_keeps_finished_runs(cli: Cli, tmp_path: Path) -> None:
    exp = _experiment(tmp_path, "name: t\nsweep:\n  cache.capacity_noises: [100, 300]\n")
    out = tmp_path / "out"
    assert cli("run", exp, "--out", str(out), *SMALL)[0] == 0
    kept = out / "cache.capacity_noises=100" / "timings.json"
    stamp = kept.read_bytes()
    redo = out / "cache.capacity_noises=300"
    for f in redo.rglob("*"):
        if f.is_file():
            f.unlink()
    assert cli("run", exp, "--out", str(out), "--resume", *SMALL)[0] == 0
    assert kept.read_bytes() == stamp  # not re-run
    assert (redo / "summary.json").is_file()
    table = pd.read_csv(out / "results.csv")
    assert table["cache.capacity_noises"].tolist() == [100, 300]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "cache.capacity_noises=0"], "cache.capacity_noises: expected a positive integer"),
        (["--set", "hardware.pools=[{count: 0}]"], "hardware.pools[0].count: expected an integer >= 1"),
        (["--set", "cache.bogus=1"], "cache.bogus: unknown key"),
        (["--set", "trace.path=/nonexistent/t.parquet"], "trace file not found"),
        (["--set", "hardware.pools=[{gpu: h100}]"], "no entry for model sdxl on GPU h100"),
        (["--set", "hardware.max_batch=4"], "batch 4 is outside the measured range 1..1 for sdxl/a10g/1024x1024"),
        (["--set", "hardware.cost_profile=profiles/latency/sdxl-1024-a10g-published.yaml"],
         "field 'kind': expected 'cost'"),
        (["--set", "storage.latent_tier=tape"], "no tier 'tape'; known: host_ram, local_disk"),
    ],
)
def test_bad_input_exits_2_with_one_line(cli: Cli, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    code, _, err = cli("run", _experiment(tmp_path), "--out", str(out), *args, *SMALL)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (out / "run").exists()  # never a half-written result


def test_report_rebuilds_from_files(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli("run", _experiment(tmp_path), "--out", str(out), *SMALL)[0] == 0
    (out / "results.md").unlink()
    shutil.rmtree(out / "run" / "plots")
    assert cli("report", str(out))[0] == 0
    assert (out / "results.md").is_file() and (out / "run" / "plots" / "latency_cdf.png").is_file()
    code, _, err = cli("report", str(tmp_path))
    assert code == 2 and "not a results folder" in err


@pytest.mark.parametrize("command", [[], ["run"], ["report"], ["trace"], ["trace", "build-tiny"], ["profile"],
                                     ["profile", "host"]])
def test_help_on_every_subcommand(cli: Cli, command: list[str]) -> None:
    code, out, _ = cli(*command, "--help")
    assert code == 0 and "usage: python -m sim" in out
