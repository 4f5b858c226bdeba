"""Regression: exact integer counts per policy x capacity on the committed tiny trace (`make golden`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sim.experiments.runner import simulate
from sim.experiments.sweep import experiment_from_data
from tests.golden_gen import CAPACITIES, GOLDEN, PAPER_CI, PAPER_CI_GOLDEN, cases, counts

GOLDEN_COUNTS: dict[str, Any] = json.loads(GOLDEN.read_text())
CASES = dict(cases())


def test_golden_covers_every_registered_policy_and_unit() -> None:
    assert sorted(GOLDEN_COUNTS) == sorted(CASES), "registry changed: run `make golden` and review the diff"


#: brute-force offline references take tens of seconds per case on the tiny trace
SLOW_CASES = ("belady_like/",)
COUNT_CASES = [pytest.param(n, marks=pytest.mark.slow) if n.startswith(SLOW_CASES) else n for n in sorted(CASES)]


@pytest.mark.parametrize("name", COUNT_CASES)
def test_golden_counts(name: str) -> None:
    assert counts(CASES[name]) == GOLDEN_COUNTS[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_partner_capacity_matters(name: str) -> None:
    """Sensitivity partner: the same case with another capacity must give other counts."""
    policy, unit, cap = name.split("/")
    if policy == "infinite":
        pytest.skip("infinite ignores the capacity by design (it holds every miss)")
    other = CAPACITIES[(CAPACITIES.index(int(cap)) + 1) % len(CAPACITIES)]
    assert GOLDEN_COUNTS[f"{policy}/{unit}/{other}"] != GOLDEN_COUNTS[name]


def test_golden_counts_are_consistent() -> None:
    for name, c in GOLDEN_COUNTS.items():
        assert c["hits"] + c["misses"] == 4000, name
        assert sum(c["k_histogram"].values()) == 4000, name
        assert c["steps_skipped"] == sum(int(k) * n for k, n in c["k_histogram"].items()), name
        assert c["hits"] > 0, name


# Sensitivity: every config knob that should move results does (catches keys accepted and ignored).
BASE: dict[str, Any] = {"name": "sens", "trace": {"limit": 1500}, "cache": {"capacity_noises": 500}}
KNOBS: list[tuple[Any, ...]] = [
    ("cache.policy", "fifo"),
    ("cache.eviction_unit", "noise"),  # LRU's default (auto) is prompt: noise must change the result
    ("cache.policy_params.lcbfu_initial_uses", 1),
    ("cache.capacity_noises", 2000),
    ("cache.capacity_bytes", 30 * 131072),
    ("cache.ks", [5, 10, 15, 20, 25, 30]),
    ("cache.thresholds", [{"above": 0.9, "k": 25}, {"above": 0.6, "k": 10}]),
    ("cache.retrieval", "exact_key"),
    ("cache.similarity_map", "none"),
    ("cache.scope", "user"),
    ("serving.mode", "vanilla"),
    ("serving.mode", "final_image"),
    ("serving.mode", "small_model"),
    ("run.executor", "sequential"),
    ("model.num_steps", 30),
    ("model.width", 512),
    ("hardware.pools", [{"gpu": "a10g", "count": 2}]),
    ("hardware.routing", "round_robin"),
    ("hardware.step_jitter_cv", 0.2),
    ("trace.time_scale", 0.5),
    ("trace.limit", 1000),
    ("storage.latent_tier", "host_ram"),
    ("cache.admission", "second_hit"),
    ("cache.admission_params.q", 0.3, [("cache.admission", "probabilistic")]),
    ("cache.admission_params.window_requests", 50, [("cache.admission", "second_hit")]),
    ("seed", 7, [("cache.admission", "probabilistic")]),
    ("cache.policy_params.window_requests", 50, [("cache.policy", "lcbfu_window")]),
    ("cache.policy_params.decline_exponent", 1.0, [("cache.policy", "rnd_lru")]),
    ("cache.policy_params.q", 0.5, [("cache.policy", "qlru_dc")]),
    ("seed", 7, [("cache.policy", "rnd_lru")]),
]


def _summary(overrides: list[tuple[str, Any]], policy: str = "lcbfu") -> dict[str, Any]:
    data = json.loads(json.dumps(BASE))
    data["cache"]["policy"] = policy
    exp = experiment_from_data(data, overrides)
    summary = simulate(exp.base)[2]
    summary.pop("name")
    return summary


@pytest.fixture(scope="module")
def base_summary() -> dict[str, Any]:
    return _summary([])


@pytest.mark.parametrize("knob", KNOBS, ids=[f"{k[0]}={k[1]}" for k in KNOBS])
def test_knob_changes_result(knob: tuple[Any, ...], base_summary: dict[str, Any]) -> None:
    key, value, context = (*knob, [])[:3]
    if key == "model.width":
        # No latency profile at 512 wide: the change must surface as a clear error, not be ignored.
        from sim.errors import InputError

        with pytest.raises(InputError, match="no entry for model sdxl on GPU a10g at 512x1024"):
            _summary([(key, value)])
        return
    policy = "lru" if key == "cache.eviction_unit" else "lcbfu"  # LCBFU is defined per noise only
    base = base_summary if policy == "lcbfu" and not context else _summary(context, policy)
    assert _summary([*context, (key, value)], policy) != base


def test_seed_matters_only_with_randomness(base_summary: dict[str, Any]) -> None:
    assert _summary([("seed", 7)]) == base_summary
    jitter = [("hardware.step_jitter_cv", 0.2)]
    assert _summary([*jitter, ("seed", 7)]) != _summary(jitter)


def test_write_delay_defers_admission() -> None:
    """With a slow storage write, latents become usable later: fewer hits than with instant admission.

    The shipped tiers write a latent in ~1 ms, far below inter-arrival gaps, so this partner uses an
    engine-level tier (a test value, not a profile) of 2 hours per write.
    """
    from sim.build import BuildParts, build_gpus, build_requests
    from sim.hardware.profiles import StorageTier
    from sim.scenario.modes.nirvana import Nirvana
    from sim.trace import load_trace
    from tests.helpers import run_engine, scenario

    cfg = experiment_from_data(BASE).base
    trace = load_trace(cfg.trace.path, cfg.trace.limit)
    requests, classes = build_requests(cfg, trace)
    slow = StorageTier(read_latency_s=0.0, read_bytes_per_s=1e9, write_latency_s=7200.0, write_bytes_per_s=1e9)

    def hits(write_delay: bool) -> int:
        mode = Nirvana(requests, BuildParts(cfg, requests, classes, None).cache_spec())
        sc = scenario(requests, build_gpus(cfg, classes), mode=mode, tier=slow, write_delay=write_delay)
        return int((run_engine(sc)["k_used"] > 0).sum())

    assert hits(True) < hits(False)


# The paper's capacity experiment (a), reduced to the bundled trace, under both executors (`make golden`).
PAPER_CI_COUNTS: dict[str, Any] = json.loads(PAPER_CI_GOLDEN.read_text())


def test_paper_ci_counts_match_golden() -> None:
    from sim.experiments.sweep import load_experiment

    runs = dict(load_experiment(PAPER_CI).runs())
    assert sorted(runs) == sorted(PAPER_CI_COUNTS), "experiment changed: run `make golden` and review the diff"
    got = {name: counts(cfg) for name, cfg in runs.items()}
    assert got == PAPER_CI_COUNTS


def test_paper_ci_partner_admission_timing_matters() -> None:
    """Sensitivity partner: the same point under the other executor (admission timing) gives other counts."""
    import dataclasses

    from sim.experiments.sweep import load_experiment

    name = "cache.policy=lcbfu,cache.capacity_noises=30,run.executor=engine"
    cfg = dict(load_experiment(PAPER_CI).runs())[name]
    other = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, executor="sequential"))
    assert counts(other) != PAPER_CI_COUNTS[name]
    assert counts(other) == PAPER_CI_COUNTS[name.replace("engine", "sequential")]
