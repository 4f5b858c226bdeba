"""Config loading: strict schema, one-line errors naming the dotted key, overrides, sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.config import RunConfig, dump_run_config
from sim.errors import ConfigError
from sim.experiments.sweep import experiment_from_data, load_experiment, parse_overrides

BAD: list[tuple[dict[str, Any], str]] = [
    ({"cache": {"polcy": "lru"}}, r"cache\.polcy: unknown key"),
    ({"nme": "x"}, r"nme: unknown key"),
    ({"cache": {"capacity_noises": "big"}}, r"cache\.capacity_noises: expected an integer or null, got 'big'"),
    ({"cache": {"capacity_noises": 0}}, r"cache\.capacity_noises: expected a positive integer"),
    ({"cache": {"capacity_noises": None}}, r"cache\.capacity_noises: expected capacity_noises or capacity_bytes"),
    ({"cache": {"capacity_bytes": -5}}, r"cache\.capacity_bytes: expected a positive integer"),
    ({"cache": {"write_delay": "yes"}}, r"cache\.write_delay: expected true or false"),
    ({"cache": {"enabled": False}}, r"cache\.enabled: removed; use serving\.mode: vanilla for no cache"),
    ({"hardware": {"step_events": True}}, r"hardware\.step_events: removed"),
    ({"serving": {"mode": "gptcache"}}, r"serving\.mode: expected one of final_image, nirvana, small_model, vanilla"),
    ({"run": {"executor": "ray"}}, r"run\.executor: expected one of 'engine', 'sequential'"),
    ({"run": {"implementation": "gpu"}}, r"run\.implementation: expected one of 'auto', 'reference', 'compiled'"),
    ({"serving": {"final_image": {"threshold": 1.5}}}, r"serving\.final_image\.threshold: expected a cosine"),
    ({"metrics": {"warmup_requests": -1}}, r"metrics\.warmup_requests: expected an integer >= 0"),
    ({"cache": {"policy": "arc"}}, r"cache\.policy: expected one of fifo, lcbfu, lcbfu_da, lcbfu_window, lfu, lru, "
     r"qlru_dc, rnd_lru, sim_lru, or an offline reference \(belady_like, infinite, static_greedy\), got 'arc'"),
    ({"cache": {"policy": "lcbfu", "eviction_unit": "prompt"}}, r"cache\.eviction_unit: expected one of \['noise'\]"),
    ({"cache": {"eviction_unit": "page"}}, r"cache\.eviction_unit: expected one of 'auto', 'noise', 'prompt'"),
    ({"cache": {"policy_params": {"lcbfu_initial_uses": 2}}}, r"cache\.policy_params\.lcbfu_initial_uses: expected 0"),
    ({"cache": {"retrieval": "faiss"}}, r"cache\.retrieval: expected one of auto, candidates, exact_cosine, exact_key"),
    ({"cache": {"thresholds": [{"above": 0.7, "k": 5}, {"above": 0.9, "k": 25}]}},
     r"cache\.thresholds: expected strictly descending similarities"),
    ({"cache": {"thresholds": [{"above": 0.9, "k": 30}]}}, r"cache\.thresholds: expected entry 0: K in the cached set"),
    ({"cache": {"thresholds": [{"above": 0.9}]}}, r"cache\.thresholds\[0\]\.k: required key is missing"),
    ({"cache": {"ks": [5, 5]}}, r"cache\.ks: expected distinct positive integers"),
    ({"hardware": {"pools": [{"count": 0}]}}, r"hardware\.pools\[0\]\.count: expected an integer >= 1, got 0"),
    ({"hardware": {"pools": [{"count": 1.5}]}}, r"hardware\.pools\[0\]\.count: expected an integer, got 1.5"),
    ({"hardware": {"pools": [{"count": True}]}}, r"hardware\.pools\[0\]\.count: expected an integer, got True"),
    ({"hardware": {"pools": []}}, r"hardware\.pools: expected at least one GPU pool"),
    ({"hardware": {"routing": "random"}}, r"hardware\.routing: expected one of central, least_loaded, round_robin"),
    ({"hardware": {"max_batch": 0}}, r"hardware\.max_batch: expected an integer >= 1"),
    ({"hardware": {"batch_window_s": -1}}, r"hardware\.batch_window_s: expected a number in 0\.\.3600 s"),
    ({"hardware": {"batch_window_s": 1e308}}, r"hardware\.batch_window_s: expected a number in 0\.\.3600 s"),
    ({"hardware": {"step_jitter_cv": 1e6}}, r"hardware\.step_jitter_cv: expected a number in 0\.\.10, got"),
    ({"trace": {"time_scale": 0}}, r"trace\.time_scale: expected a number in 1e-06\.\.1e\+06"),
    ({"trace": {"time_scale": 1e-300}}, r"trace\.time_scale: expected a number in 1e-06\.\.1e\+06"),
    ({"trace": {"time_scale": 1e308}}, r"trace\.time_scale: expected a number in 1e-06\.\.1e\+06"),
    ({"model": {"num_steps": 0}}, r"model\.num_steps: expected an integer in 1\.\.10000"),
    ({"model": {"width": 2**40}}, r"model\.width: expected an integer in 1\.\.16384"),
    ({"model": {"num_steps": 20}}, r"cache\.ks: expected every K below model\.num_steps = 20, got 20"),
    ({"hardware": {"step_jitter_cv": float("inf")}}, r"hardware\.step_jitter_cv: expected a finite number, got inf"),
    ({"trace": {"time_scale": float("nan")}}, r"trace\.time_scale: expected a finite number, got nan"),
    ({"hardware": {"pools": [{"count": 10**9}]}}, r"hardware\.pools\[0\]\.count: expected at most 100000"),
    ({"trace": {"limit": 10**30}}, r"trace\.limit: expected an integer of at most 2\*\*63 - 1"),
    ({"seed": -1}, r"seed: expected an integer >= 0, got -1"),
    ({"cache": {"capacity_noises": 2**41}}, r"cache\.capacity_noises: expected at most 1099511627776"),
    ({"sweep": {"cache.capacity_noises": [100, -1]}}, r"sweep point cache\.capacity_noises=-1: cache\.capacity_noises"),
    ({"sweep": {"cache.capacity_noises": 100}}, r"sweep\.cache\.capacity_noises: expected a non-empty list"),
    ({"sweep": {"cache.nope": [1]}}, r"cache\.nope: unknown key"),
]


@pytest.mark.parametrize(("data", "pattern"), BAD, ids=[p.split(":")[0].replace("\\", "") for _, p in BAD])
def test_bad_config_names_the_key(data: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as info:
        experiment_from_data(data, source="exp.yaml")
    message = str(info.value)
    assert message.startswith("exp.yaml: ")
    assert "\n" not in message


def test_defaults_are_nirvana() -> None:
    cfg = experiment_from_data({}).base
    assert cfg.model.num_steps == 50
    assert cfg.cache.ks == (5, 10, 15, 20, 25)
    assert [(t.above, t.k) for t in cfg.cache.thresholds] == [(0.95, 25), (0.9, 20), (0.85, 15), (0.75, 10), (0.65, 5)]


def test_config_is_frozen() -> None:
    cfg = experiment_from_data({}).base
    with pytest.raises(AttributeError):
        cfg.cache.policy = "lru"  # type: ignore[misc]


def test_resolved_config_round_trips() -> None:
    cfg = experiment_from_data({"cache": {"policy": "lru", "capacity_bytes": 1 << 20}}).base
    again = experiment_from_data(yaml.safe_load(dump_run_config(cfg))).base
    assert again == cfg


def test_overrides_parse_yaml_values() -> None:
    pairs = parse_overrides(["cache.capacity_noises=300", "cache.ks=[5, 10]", "cache.capacity_bytes=null"])
    assert pairs == [("cache.capacity_noises", 300), ("cache.ks", [5, 10]), ("cache.capacity_bytes", None)]
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["novalue"])


def test_override_and_sweep_axis(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text("name: e\ncache: {policy: lru}\n")
    exp = load_experiment(path, parse_overrides(["cache.policy=fifo", "sweep.cache.capacity_noises=[10, 20]"]))
    runs = exp.runs()
    assert [name for name, _ in runs] == ["cache.capacity_noises=10", "cache.capacity_noises=20"]
    assert all(cfg.cache.policy == "fifo" for _, cfg in runs)
    assert [cfg.cache.capacity_noises for _, cfg in runs] == [10, 20]


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="experiment file not found"):
        load_experiment(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cache: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_experiment(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_experiment(top)


def test_executor_refuses_what_its_semantics_cannot_give() -> None:
    """Checked when a run is planned (before anything is written): the executor says what it supports."""
    from sim.build import build_scenario, plan
    from sim.trace import load_trace

    for data, pattern in (
            ({"run": {"executor": "sequential"}, "hardware": {"batch_window_s": 1.0}},
             r"hardware\.batch_window_s: expected 0 with run\.executor sequential"),
            ({"run": {"executor": "engine"}, "cache": {"policy": "infinite"}},
             r"cache\.policy: infinite \(an offline reference\) runs only with run\.executor: sequential")):
        cfg = experiment_from_data({"trace": {"limit": 50}, **data}).base
        with pytest.raises(ConfigError, match=pattern):
            plan(cfg, build_scenario(cfg, load_trace(cfg.trace.path, cfg.trace.limit))[0])


def test_config_semantics_are_the_executor_registry() -> None:
    """run.executor names exactly the registered executors (the config lists them without importing them)."""
    from typing import get_args, get_type_hints

    from sim.config import ExecutionConfig
    from sim.executors import EXECUTORS

    assert set(get_args(get_type_hints(ExecutionConfig)["executor"])) == set(EXECUTORS.names())


def test_loading_a_config_imports_no_engine() -> None:
    import subprocess
    import sys

    code = ("import sys; from sim.experiments.sweep import load_experiment; "
            "load_experiment('experiments/default.yaml');"
            "bad = [m for m in ('simpy', 'numba', 'torch', 'diffusers', 'sim.executors') if m in sys.modules];"
            "print(bad); assert not bad")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_example_and_default_experiment_loads() -> None:
    root = Path(__file__).resolve().parent.parent / "experiments"
    files = sorted(p for p in root.rglob("*.yaml") if "synth" not in p.relative_to(root).parts)  # generator configs
    assert files
    for file in files:
        assert isinstance(load_experiment(file).base, RunConfig)
