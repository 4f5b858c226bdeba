"""Sweep files: base + grid + zip + seeds, the older sweep: unchanged, one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sim.cli import main
from sim.errors import ConfigError
from sim.experiments.sweep import experiment_from_data, load_experiment, parse_overrides

ROOT = Path(__file__).resolve().parent.parent


def test_legacy_sweep_names_and_order_unchanged() -> None:
    exp = experiment_from_data({"sweep": {"cache.policy": ["lru", "fifo"], "cache.capacity_noises": [10, 20]}})
    assert [n for n, _ in exp.runs()] == [
        "cache.policy=lru,cache.capacity_noises=10", "cache.policy=lru,cache.capacity_noises=20",
        "cache.policy=fifo,cache.capacity_noises=10", "cache.policy=fifo,cache.capacity_noises=20"]
    assert exp.spec()["sweep"] == {"cache.policy": ["lru", "fifo"], "cache.capacity_noises": [10, 20]}


def test_base_grid_zip_seeds() -> None:
    exp = experiment_from_data({
        "base": {"name": "b", "cache": {"policy": "lru"}},
        "grid": {"cache.capacity_noises": [10, 20]},
        "zip": {"trace.time_scale": [1.0, 0.5], "hardware.max_batch": [1, 2]},
        "seeds": 2,
    })
    runs = exp.runs()
    assert exp.num_points() == len(runs) == 8
    assert runs[0][0] == "cache.capacity_noises=10,trace.time_scale=1.0,hardware.max_batch=1,seed=0"
    assert runs[3][0] == "cache.capacity_noises=10,trace.time_scale=0.5,hardware.max_batch=2,seed=1"
    cfg = runs[3][1]
    assert (cfg.name, cfg.cache.policy, cfg.seed) == ("b", "lru", 1)
    assert (cfg.trace.time_scale, cfg.hardware.max_batch) == (0.5, 2)
    assert runs[-1][1].cache.capacity_noises == 20
    assert exp.swept_keys() == ["cache.capacity_noises", "trace.time_scale", "hardware.max_batch", "seed"]


def test_seed_list_and_overrides() -> None:
    axis = "sweep.cache.ks=[[5, 10, 15, 20, 25], [5, 10, 15, 20, 25, 30]]"
    exp = experiment_from_data({"grid": {"cache.capacity_noises": [10]}, "seeds": [7, 3]},
                               parse_overrides(["cache.policy=fifo", axis]))
    ks, c = "cache.ks=[5, 10, 15, 20, 25", "cache.capacity_noises=10"
    assert [n for n, _ in exp.runs()] == [f"{c},{ks}],seed=7", f"{c},{ks}],seed=3",
                                          f"{c},{ks}, 30],seed=7", f"{c},{ks}, 30],seed=3"]
    assert {cfg.cache.policy for _, cfg in exp.runs()} == {"fifo"}


BAD: list[tuple[dict[str, Any], str]] = [
    ({"grid": {"cache.nope": [1]}}, r"grid\.cache\.nope: unknown key"),
    ({"sweep": {"cahce.policy": ["lru"]}}, r"sweep\.cahce\.policy: unknown key"),
    ({"zip": {"trace.nope": [1]}}, r"zip\.trace\.nope: unknown key"),
    ({"grid": {"cache.policy": []}}, r"grid\.cache\.policy: expected a non-empty list"),
    ({"zip": {"cache.policy": ["lru", "fifo"], "cache.capacity_noises": [1]}},
     r"zip: lists must have equal lengths, got cache\.policy: 2, cache\.capacity_noises: 1"),
    ({"grid": {"seed": [1, 2]}, "seeds": 2}, r"seed: swept twice"),
    ({"seeds": 0}, r"seeds: expected a count >= 1"),
    ({"seeds": [1, 1]}, r"seeds: expected a count >= 1 or a non-empty list of distinct integers"),
    ({"seeds": [-1]}, r"seeds: expected a count >= 1 or a non-empty list of distinct integers in 0\.\.2\*\*63"),
    ({"seeds": 10**12}, r"seeds: 1,000,000,000,000 replicas exceed 10,000$"),
    ({"seeds": 20_000}, r"seeds: 20,000 replicas exceed 10,000; pass --yes to run more"),
    ({"base": {}, "name": "x"}, r"name: unknown key beside base"),
    ({"grid": {"cache.policy": ["lru"]}, "sweep": {"cache.capacity_noises": [1]}}, r"sweep: give the grid"),
    ({"grid": {"cache.capacity_noises": list(range(1, 102)), "seed": list(range(100))}},
     r"grid: 10,100 sweep points exceed 10,000; pass --yes"),
    ({"grid": {"trace.path": ["a/b", "a_b"]}},
     r"sweep: the points trace\.path=\"a/b\" and trace\.path=\"a_b\" would both write run folder 'trace\.path=a_b'"),
    ({"grid": {"cache.capacity_noises": [10, 20, 10]}}, r"sweep: the points .* would both write run folder"),
    ({"grid": {"name": ["x" * 300]}}, r"sweep point name=\"x+\": its run folder name is 305 bytes"),
]


@pytest.mark.parametrize(("data", "pattern"), BAD, ids=[p.split(":")[0].replace("\\", "") for _, p in BAD])
def test_bad_sweep_names_the_key(data: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as info:
        experiment_from_data(data, source="exp.yaml")
    assert str(info.value).startswith("exp.yaml: ")
    assert "\n" not in str(info.value)


def test_max_points_can_be_lifted() -> None:
    data = {"grid": {"cache.capacity_noises": [1, 2, 3], "seed": [1, 2]}}
    with pytest.raises(ConfigError, match="6 sweep points exceed 5"):
        experiment_from_data(data, max_points=5)
    assert experiment_from_data(data, max_points=None).num_points() == 6


def test_cli_refuses_a_huge_grid_without_yes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "big.yaml"
    exp.write_text("grid:\n  cache.capacity_noises: [" + ", ".join(map(str, range(1, 102))) + "]\n"
                   "  seed: [" + ", ".join(map(str, range(100))) + "]\n")
    assert main(["run", str(exp), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pass --yes" in err
    assert not (tmp_path / "out").exists()


def test_small_sweep_example_is_about_a_dozen_points() -> None:
    exp = load_experiment(ROOT / "experiments" / "examples" / "small_sweep.yaml")
    assert 8 <= exp.num_points() <= 16
    assert all(cfg.trace.path.startswith("traces/tiny") for _, cfg in exp.runs())
