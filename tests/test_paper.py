"""The paper's experiments run end to end (on the bundled trace here) and tabulate beside published values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import TINY_TRACE

Cli = Callable[..., tuple[int, str, str]]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["capacity", "headline", "quality", "load"])
def test_paper_experiment_writes_its_comparison(cli: Cli, tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    code, stdout, err = cli("paper", name, "--trace", str(TINY_TRACE), "--out", str(out), "--p99", "60")
    assert code == 0, err
    text = (out / "paper.md").read_text()
    assert text == stdout
    expected = {"capacity": "| 1,500,000 | lcbfu |", "headline": "| 21.0% |", "quality": "| nirvana | 4.68 |",
                "load": "GPUs needed"}[name]
    assert expected in text or (name == "quality" and "| 4.68 |" in text), text
    assert (out / "index.html").is_file() and (out / "summaries.parquet").is_file()


def test_paper_rejects_out_with_all(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("paper", "all", "--out", str(tmp_path / "x"))
    assert code == 2 and "--out" in err and not (tmp_path / "x").exists()
