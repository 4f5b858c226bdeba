"""Generated fuzz suite (tests/fuzz_cases.py): bad input gives exit code 2, one line naming the file or key,
no traceback, and nothing at the output location; valid controls mixed in give exit code 0."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fuzz_cases import Case, Ctx, all_cases, small_trace

Cli = Callable[..., tuple[int, str, str]]
CASES = all_cases()

@pytest.fixture(scope="module")
def base_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_trace(tmp_path_factory.mktemp("fuzz-base"))


def run_case(case: Case, tmp_path: Path, base_trace: Path, cli: Cli) -> tuple[Ctx, str]:
    ctx = Ctx(tmp_path / "case", base_trace)
    ctx.tmp.mkdir()
    code, _, err = cli(*case.make(ctx))
    assert "Traceback" not in err
    assert code == case.code, err
    if case.code == 0:
        assert case.out(ctx).exists()
        return ctx, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and not lines[0].startswith("error: unexpected"), lines[0]
    names = case.names(ctx) if callable(case.names) else case.names
    assert names in lines[0], lines[0]
    return ctx, err


def nothing_left(case: Case, ctx: Ctx) -> None:
    out = case.out(ctx)
    assert not out.exists(), f"{out} was left behind"
    assert not [p for p in out.parent.glob("*.partial")] if out.parent.exists() else True


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fuzz(case: Case, tmp_path: Path, base_trace: Path, cli: Cli) -> None:
    ctx, _ = run_case(case, tmp_path, base_trace, cli)
    if case.code != 0:
        nothing_left(case, ctx)


def test_fuzz_suite_size_and_classes() -> None:
    counts = Counter(c.cls for c in CASES)
    assert len(CASES) >= 300, counts
    assert sum(c.code == 0 for c in CASES) >= 5
    for cls in ("experiment-yaml", "set-values", "trace", "embeddings", "profile-latency", "profile-storage",
                "profile-frontend", "profile-cost", "profile-quality", "similarity-map", "synth", "diffusiondb",
                "cli-flags"):
        assert counts[cls] >= 5, cls
