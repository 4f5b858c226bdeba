"""The runner: nothing is written until every input of every run is valid; resume trusts only whole runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

Cli = Callable[..., tuple[int, str, str]]
SMALL = ("--set", "trace.limit=200", "--quiet")


def _experiment(tmp_path: Path, sweep: dict | None = None, **top: object) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"name": "t", **top, **({"sweep": sweep} if sweep else {})}))
    return str(path)


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("sweep.hardware.cost_profile=[null,missing-cost.yaml]", "missing-cost.yaml"),
        ("sweep.quality.profile=[profiles/quality/nirvana-relative-published.yaml,nope.yaml]", "nope.yaml"),
        ("sweep.storage.latent_tier=[local_disk,tape]", "no tier 'tape'"),
        ("sweep.serving.small_model.latency_profile=[nope-lat.yaml]", None),  # unused unless small_model
        ("serving.mode=small_model", None),
        ("sweep.cache.similarity_map=[none,missing-map.yaml]", "missing-map.yaml"),
        ("sweep.model.width=[1024,512]", "no entry for model sdxl on GPU a10g at 512x1024"),
        ("sweep.metrics.warmup_requests=[0,200]", "covers all 200 requests"),
    ],
)
def test_a_bad_sweep_point_leaves_nothing_behind(cli: Cli, tmp_path: Path, override: str, names: str | None) -> None:
    out = tmp_path / "out"
    code, _, err = cli("run", _experiment(tmp_path), "--out", str(out), "--set", override, *SMALL)
    if names is None:
        assert code == 0, err
        return
    assert code == 2, err
    assert names in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_resume_overwrite_and_empty_out_are_refused(cli: Cli, tmp_path: Path) -> None:
    exp = _experiment(tmp_path)
    code, _, err = cli("run", exp, "--out", str(tmp_path / "o"), "--resume", "--overwrite", *SMALL)
    assert code == 2 and "--resume and --overwrite" in err and not (tmp_path / "o").exists()
    code, _, err = cli("run", exp, "--out", "", *SMALL)
    assert code == 2 and "--out" in err
    (tmp_path / "file").write_text("x")
    code, _, err = cli("run", exp, "--out", str(tmp_path / "file" / "sub"), *SMALL)
    assert code == 2 and "is a file, not a folder" in err


def _sweep(cli: Cli, tmp_path: Path, out: Path, *extra: str) -> tuple[int, str]:
    exp = _experiment(tmp_path, sweep={"cache.capacity_noises": [300, 600]})
    code, _, err = cli("run", exp, "--out", str(out), *SMALL, *extra)
    return code, err


def test_resume_recomputes_torn_runs_and_keeps_whole_ones(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _sweep(cli, tmp_path, out)[0] == 0
    a, b = out / "cache.capacity_noises=300", out / "cache.capacity_noises=600"
    want = {p: (p / "summary.json").read_bytes() for p in (a, b)}
    (a / "summary.json").write_text('{"hit_rate": 0.')  # torn by a crash
    (b / "requests.parquet").unlink()
    stamp = os.stat(b / "config.yaml").st_mtime_ns
    assert _sweep(cli, tmp_path, out, "--resume")[0] == 0
    for p in (a, b):
        assert (p / "summary.json").read_bytes() == want[p]
        assert (p / "requests.parquet").is_file()
    assert os.stat(b / "config.yaml").st_mtime_ns != stamp  # b was recomputed too
    keep = os.stat(a / "config.yaml").st_mtime_ns
    assert _sweep(cli, tmp_path, out, "--resume")[0] == 0
    assert os.stat(a / "config.yaml").st_mtime_ns == keep  # whole runs are kept


def _untimed(implementation: str) -> tuple[str, ...]:
    return ("--set", "run.executor=sequential", "--set", f"run.implementation={implementation}",
            "--set", "cache.retrieval=exact_key")


@pytest.mark.parametrize("executor", ["reference", "compiled"])
def test_resume_keeps_finished_untimed_runs(cli: Cli, tmp_path: Path, executor: str) -> None:
    """An untimed run has no latency CDF; its documented files follow from its summary, so --resume keeps it."""
    out = tmp_path / "out"
    assert _sweep(cli, tmp_path, out, *_untimed(executor))[0] == 0
    a = out / "cache.capacity_noises=300"
    assert not (a / "plots" / "latency_cdf.png").exists() and (a / "plots" / "k_histogram.png").is_file()
    stamps = {p: os.stat(p / "config.yaml").st_mtime_ns for p in out.glob("cache.capacity_noises=*")}
    assert _sweep(cli, tmp_path, out, *_untimed(executor), "--resume")[0] == 0
    assert {p: os.stat(p / "config.yaml").st_mtime_ns for p in stamps} == stamps  # nothing recomputed
    (a / "plots" / "k_histogram.png").unlink()  # a plot the run does have, missing: torn, recomputed
    assert _sweep(cli, tmp_path, out, *_untimed(executor), "--resume")[0] == 0
    assert os.stat(a / "config.yaml").st_mtime_ns != stamps[a]
    assert (a / "plots" / "k_histogram.png").is_file()


def test_resume_refuses_runs_whose_inputs_changed(cli: Cli, tmp_path: Path) -> None:
    profile = tmp_path / "lat.yaml"
    profile.write_text((ROOT / "profiles/latency/sdxl-1024-a10g-published.yaml").read_text())
    pools = f"hardware.pools=[{{gpu: a10g, count: 4, latency_profile: {profile}}}]"
    out = tmp_path / "out"
    assert _sweep(cli, tmp_path, out, "--set", pools)[0] == 0
    profile.write_text(profile.read_text().replace("step_s: 0.30", "step_s: 0.60"))
    code, err = _sweep(cli, tmp_path, out, "--set", pools, "--resume")
    assert code == 2 and str(profile) in err and "--recompute-changed" in err
    code, err = _sweep(cli, tmp_path, out, "--set", pools, "--resume", "--recompute-changed")
    assert code == 0, err
    summary = json.loads((out / "cache.capacity_noises=300" / "summary.json").read_text())
    assert summary["service_s"]["p99"] == pytest.approx(2 * 50 * 0.30)


def test_report_redraws_missing_plots(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _sweep(cli, tmp_path, out)[0] == 0
    plot = out / "cache.capacity_noises=300" / "plots" / "k_histogram.png"
    plot.unlink()
    assert cli("report", str(out))[0] == 0
    assert plot.is_file()


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the pool workers")
@pytest.mark.parametrize("executor", ["engine", "sequential"])
def test_kill_9_parent_of_a_parallel_sweep_then_resume(tmp_path: Path, executor: str) -> None:
    """kill -9 the driver of a --jobs 2 sweep at several moments: its workers die with it, and --resume
    keeps every run that was published (untimed runs included: they have no latency CDF), and finishes the
    sweep with summaries byte-identical to an uninterrupted one."""
    exp = _experiment(tmp_path, trace={"limit": 1500}, run={"executor": executor},
                      cache={"retrieval": "candidates" if executor == "sequential" else "exact_cosine"},
                      sweep={"cache.capacity_noises": [300, 600, 1200, 2400]})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "sim", "run", exp, "--jobs", "2", "--quiet"]
    ref = tmp_path / "ref"
    subprocess.run([*cmd, "--out", str(ref)], check=True, env=env, cwd=tmp_path, timeout=600)
    runs = sorted(p.name for p in ref.iterdir() if p.name.startswith("cache.capacity_noises="))
    assert len(runs) == 4
    for delay in (1.5, 4.0, 7.0):
        out = tmp_path / f"killed-{delay}"
        proc = subprocess.Popen([*cmd, "--out", str(out)], env=env, cwd=tmp_path)
        time.sleep(delay)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), f"pool workers outlived their killed parent ({delay} s)"
        if not out.exists():
            continue  # killed while validating: nothing was written
        published = {}
        for run in out.iterdir():  # whatever was published is whole
            if run.name.startswith("cache.capacity_noises="):
                assert (run / "plots" / "hit_rate_over_time.png").is_file()
                published[run.name] = os.stat(run / "requests.parquet").st_mtime_ns
        subprocess.run([*cmd, "--out", str(out), "--resume"], check=True, env=env, cwd=tmp_path, timeout=600)
        for name, stamp in published.items():  # kept, not recomputed
            assert os.stat(out / name / "requests.parquet").st_mtime_ns == stamp, name
        for name in runs:
            assert (out / name / "summary.json").read_bytes() == (ref / name / "summary.json").read_bytes()
            assert (out / name / "requests.parquet").read_bytes() == (ref / name / "requests.parquet").read_bytes()
