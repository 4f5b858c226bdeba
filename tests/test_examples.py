"""Examples run: each experiments/examples/*.yaml reproduces its committed summaries exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.golden_gen import EXAMPLE_GOLDEN, EXAMPLES, example_summaries


def test_every_example_has_a_committed_summary() -> None:
    assert EXAMPLES, "experiments/examples is empty"
    assert sorted(p.stem for p in EXAMPLES) == sorted(p.stem for p in EXAMPLE_GOLDEN.glob("*.json"))


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_reproduces_summary(path: Path) -> None:
    expected = json.loads((EXAMPLE_GOLDEN / f"{path.stem}.json").read_text())
    assert json.loads(json.dumps(example_summaries(path))) == expected
