"""Docs run: README's commands parse with the real CLI, and the default experiment runs end to end."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from sim.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
Cli = Callable[..., tuple[int, str, str]]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```console\n(.*?)```", text, flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("python -m sim ")]


def test_readme_shows_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make run" in text and "make test" in text
    assert len(readme_commands()) >= 8


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command: str) -> None:
    args = build_parser().parse_args(shlex.split(command)[3:])
    assert callable(args.func)


@pytest.mark.slow
def test_default_experiment_runs_on_a_generated_synthetic_trace(cli: Cli, tmp_path: Path) -> None:
    """What `make run` does, shrunk: generate the synthetic trace (hash embedder), run the default YAML."""
    trace = tmp_path / "synth.parquet"
    code, _, err = cli("trace", "synth", "--requests", "1500", "--seed", "0", "--config",
                       str(ROOT / "experiments/synth/default.yaml"), "--out", str(trace), "--embedder", "hash",
                       "--cache-dir", "")
    assert code == 0, err
    out = tmp_path / "results"
    code, _, err = cli("run", str(ROOT / "experiments/default.yaml"), "--out", str(out), "--quiet",
                       "--set", f"trace.path={trace}", "--set", "sweep.cache.capacity_noises=[1500, 15000]")
    assert code == 0, err
    table = (out / "results.csv").read_text().splitlines()
    assert len(table) == 1 + 8  # header + 4 policies x 2 capacities
    assert (out / "compare.png").is_file()
