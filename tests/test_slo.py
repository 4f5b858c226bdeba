"""SLO search: the load and the fleet it reports meet the SLO, and one step further does not."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sim.config import RunConfig
from sim.experiments.runner import run_point
from sim.experiments.slo import _at_scale, _with_count, search
from sim.experiments.sweep import experiment_from_data

Cli = Callable[..., tuple[int, str, str]]
BASE = {"name": "slo", "trace": {"limit": 800}, "cache": {"capacity_noises": 1500}}


def _meets(cfg: RunConfig, slo: float) -> bool:
    """A standalone run of the probe's config (built from scratch, not the search's reused scenario)."""
    summary = run_point(cfg).summary
    return summary["latency_s"]["p99"] <= slo and not summary["saturated"]


@pytest.mark.slow
def test_search_brackets_the_slo() -> None:
    slo = 30.0
    runs = experiment_from_data(BASE).runs()
    [result] = search(runs, slo, pool=0, max_gpus=64, tolerance=0.05)
    cfg = runs[0][1]
    scale = result["max_load_scale"]
    assert _meets(_at_scale(cfg, scale), slo)
    assert not _meets(_at_scale(cfg, scale * 1.1), slo)  # beyond the 5% bracket
    n = result["gpus_needed"]
    assert n >= 1 and _meets(_with_count(cfg, 0, n), slo)
    if n > 1:
        assert not _meets(_with_count(cfg, 0, n - 1), slo)
    assert result["slo_fleet"]["gpus"] == n and result["slo_fleet"]["fleet"]["usd_per_1000_images"] > 0
    probe = next(p for p in result["probes"] if p["what"] == "gpus" and p["value"] == n)
    assert probe["p99_s"] == run_point(_with_count(cfg, 0, n)).summary["latency_s"]["p99"]  # reuse changes nothing


def test_cli_writes_tables_and_refuses_a_bad_slo(cli: Cli, tmp_path: Path) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(json.dumps({**BASE, "trace": {"limit": 200}}))
    out = tmp_path / "out"
    for flags, named in ((("--p99", "0"), "--p99"), (("--p99", "1e308"), "--p99"),
                         (("--p99", "40", "--tolerance", "1e-300"), "--tolerance"),
                         (("--p99", "40", "--max-gpus", "1000000000"), "--max-gpus")):
        code, _, err = cli("slo", str(exp), *flags, "--out", str(out))
        assert code == 2 and named in err and err.count("\n") == 1 and not out.exists(), err
    code, _, err = cli("slo", str(exp), "--p99", "40", "--pool", "3", "--out", str(out))
    assert code == 2 and "--pool 3" in err and not out.exists()
    code, stdout, err = cli("slo", str(exp), "--p99", "40", "--out", str(out))
    assert code == 0, err
    data = json.loads((out / "slo.json").read_text())
    assert data["p99_slo_s"] == 40 and data["results"][0]["gpus_needed"] >= 1
    assert "GPUs needed" in (out / "slo.md").read_text() and "SLO search" in stdout
