"""Serving model: modes on hand-made traces, the two executors' admission timings, cost that follows the cache."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from sim.cache.kselect import KTable
from sim.cache.policies import POLICIES
from sim.cache.spec import CacheSpec
from sim.executors import EXECUTORS
from sim.experiments.runner import simulate
from sim.experiments.sweep import experiment_from_data
from sim.hardware.profiles import StepLatency
from sim.metrics import summarize
from sim.scenario import Requests
from sim.scenario.modes import MODES
from sim.scenario.modes.final_image import IMAGE_UNIT, FinalImage
from sim.scenario.modes.nirvana import Nirvana
from sim.scenario.modes.small_model import SmallModel
from sim.scenario.modes.vanilla import Vanilla
from sim.scenario.records import IMAGE_HIT, OUTCOMES
from tests.helpers import cache_spec, scenario, uniform_gpus

N = 50
STEP = StepLatency(step_s=0.1, text_encoder_s=0.0, vae_decode_s=0.0)  # 5 s for 50 steps


def _unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


# Three prompts: p1 is cosine 0.92 from p0 (K=20 by NIRVANA's table), p2 is orthogonal to both.
VECTORS = np.stack([_unit(1, 0, 0), _unit(0.92, np.sqrt(1 - 0.92**2), 0), _unit(0, 0, 1)])


def _requests(prompts: list[int], arrivals: list[float]) -> Requests:
    n = len(prompts)
    return Requests(arrival_s=np.asarray(arrivals, float), vectors=VECTORS, prompt_index=np.asarray(prompts),
                    partition=np.zeros(n, np.int64), noise_bytes=np.full(n, 32768, np.int64),
                    num_steps=np.full(n, N, np.int64), latency_class=np.zeros(n, np.int64),
                    step_factor=np.ones(n))


def _store(req: Requests, policy: str = "lru", capacity: int = 100, ks: tuple[int, ...] = (5, 10, 15, 20, 25),
           table: KTable | None = None) -> CacheSpec:
    return cache_spec(req, policy, "noise", ks=ks, table=table, capacity_noises=capacity)


def _run(executor: str, requests: Requests, mode: Any) -> dict[str, np.ndarray]:
    return EXECUTORS.get(executor)().run(scenario(requests, uniform_gpus(STEP, 1), mode=mode))


def _outcomes(rec: dict[str, np.ndarray]) -> list[str]:
    return [OUTCOMES[o] for o in rec["outcome"]]


SPACED = [0.0, 100.0, 200.0, 300.0]
PROMPTS = [0, 0, 1, 2]


def test_nirvana_outcomes_and_k() -> None:
    req = _requests(PROMPTS, SPACED)
    rec = _run("sequential", req, Nirvana(req, _store(req)))
    assert _outcomes(rec) == ["miss", "approx_hit", "approx_hit", "miss"]
    assert rec["k_used"].tolist() == [0, 25, 20, 0]
    assert rec["gpu_steps"].tolist() == [50, 25, 30, 50]
    assert rec["admitted_entry"].tolist() == [0, -1, -1, 1]


def test_hole_hit_after_eviction() -> None:
    # FIFO with room for six noises: admitting p2's five evicts p0's K=5, 10, 15, 20 (oldest first, smaller
    # K first), leaving p0 only K=25. p1 (0.92 from p0) asks K=20: no cached K' <= 20, a hole miss.
    req = _requests([0, 2, 1], [0.0, 100.0, 200.0])
    rec = _run("sequential", req, Nirvana(req, _store(req, "fifo", capacity=6)))
    assert _outcomes(rec) == ["miss", "miss", "miss"] and bool(rec["hole"][2])
    req = _requests([0, 2, 0], [0.0, 100.0, 200.0])
    rec = _run("sequential", req, Nirvana(req, _store(req, "fifo", capacity=6)))
    assert _outcomes(rec)[2] == "approx_hit" and rec["k_used"][2] == 25  # K=25 survived


def test_vanilla_and_small_model_outcomes() -> None:
    req = _requests(PROMPTS, SPACED)
    assert _outcomes(_run("sequential", req, Vanilla(req))) == ["no_cache"] * 4
    small = np.zeros(4, np.int64)  # the small model's latency class (one table serves both here)
    rec = _run("sequential", req, SmallModel(req, small, "all"))
    assert _outcomes(rec) == ["small_model"] * 4 and rec["gpu_steps"].tolist() == [50] * 4
    rec = _run("sequential", req, SmallModel(req, small, "misses", _store(req)))
    assert _outcomes(rec) == ["small_model", "approx_hit", "approx_hit", "small_model"]
    assert rec["admitted_entry"].tolist() == [0, -1, -1, 1]  # its misses still fill the latent cache


def _image_mode(req: Requests, threshold: float) -> FinalImage:
    table = KTable(((float(np.nextafter(threshold, -np.inf)), IMAGE_UNIT),))
    spec = replace(_store(req, ks=(IMAGE_UNIT,), table=table), unit_bytes=np.full(len(req), 3 << 20, np.int64),
                   capped=False)
    return FinalImage(req, spec)


def test_final_image_serves_only_above_its_threshold_with_no_gpu() -> None:
    req = _requests(PROMPTS, SPACED)
    rec = _run("engine", req, _image_mode(req, 0.95))
    assert _outcomes(rec) == ["miss", "image_hit", "miss", "miss"]  # p1 (0.92) is below 0.95
    hit = rec["outcome"] == IMAGE_HIT
    assert (rec["service_s"][hit] == 0).all() and (rec["gpu"][hit] == -1).all() and (rec["gpu_steps"][hit] == 0).all()
    assert (rec["fetch_s"][hit] > 0).all()  # the image is read from the storage tier
    summary = summarize(rec, ks=(5,), gpu_kinds=["test"])
    assert summary["gpu_seconds"] == pytest.approx(3 * 5.0)  # the three misses only
    assert summary["steps_skipped"] == 50 and summary["hit_rate"] == 0.25
    rec = _run("sequential", req, _image_mode(req, 0.9))  # >= threshold: 0.92 now serves an image
    assert _outcomes(rec) == ["miss", "image_hit", "image_hit", "miss"]


def test_sequential_admits_before_the_next_lookup_engine_when_generated() -> None:
    # Two requests for one prompt 1 s apart: the first is still generating (5 s) when the second looks up.
    req = _requests([0, 0, 0], [0.0, 1.0, 100.0])
    seq = _run("sequential", req, Nirvana(req, _store(req)))
    eng = _run("engine", req, Nirvana(req, _store(req)))
    assert _outcomes(seq) == ["miss", "approx_hit", "approx_hit"]
    assert _outcomes(eng) == ["miss", "miss", "approx_hit"]
    assert np.isnan(seq["latency_s"]).all() and np.isfinite(eng["latency_s"]).all()
    assert seq["service_s"].tolist() == [5.0, 2.5, 2.5]  # batch-1 GPU time, though no GPU is assigned


@pytest.mark.parametrize("policy", POLICIES.names())
def test_executors_agree_when_arrivals_are_far_apart(policy: str) -> None:
    from sim.build import build_scenario
    from sim.trace import load_trace

    unit = POLICIES.get(policy).units[0]
    cfg = experiment_from_data({"trace": {"limit": 800},
                                "cache": {"policy": policy, "eviction_unit": unit, "capacity_noises": 300}}).base
    trace = load_trace(cfg.trace.path, cfg.trace.limit)
    out = {}
    for name in ("engine", "sequential"):
        sc, _ = build_scenario(cfg, trace)
        sc.requests.arrival_s[:] = np.arange(len(trace)) * 1e4  # every admission lands before the next arrival
        out[name] = EXECUTORS.get(name)().run(sc)
    for col in ("outcome", "k_used", "k_selected", "matched_entry", "admitted_entry", "num_evicted", "hole"):
        assert (out["engine"][col] == out["sequential"][col]).all(), col
    assert (out["engine"]["k_used"] > 0).sum() > 50  # the comparison covers real hits


SMALL_RUN = {"trace": {"limit": 400}}


@pytest.mark.parametrize("implementation", ["reference", "compiled"])
@pytest.mark.parametrize("executor", EXECUTORS.names())
@pytest.mark.parametrize("mode", MODES.names())
def test_mode_contract(mode: str, executor: str, implementation: str) -> None:
    """Every registered mode under every registered executor and implementation (skipped with the executor's
    or the core's own reason where it does not apply): records consistent with the outcome they name."""
    from sim.build import build_scenario, plan
    from sim.trace import load_trace

    retrieval = {"retrieval": "exact_key"} if implementation == "compiled" else {}
    cfg = experiment_from_data({**SMALL_RUN, "serving": {"mode": mode}, "cache": retrieval,
                                "run": {"executor": executor, "implementation": implementation}}).base
    sc = build_scenario(cfg, load_trace(cfg.trace.path, cfg.trace.limit))[0]
    why = EXECUTORS.get(executor)().supports(sc)
    if why is not None:
        pytest.skip(why)
    if implementation != plan(cfg, sc).implementation:
        pytest.skip(f"serving mode {mode} keeps no cache: nothing to compile")
    _, rec, summary = simulate(cfg)
    n = len(rec["outcome"])
    names = {OUTCOMES[o] for o in rec["outcome"]}
    assert summary["mode"] == mode and summary["executor"] == executor
    assert summary["implementation"] == implementation
    assert sum(summary["outcomes"].values()) == n == summary["hits"] + summary["misses"]
    assert ((rec["gpu_steps"] == 0) == (rec["outcome"] == IMAGE_HIT)).all()
    assert (rec["gpu_steps"] <= rec["num_steps"]).all() and (rec["k_used"] < rec["num_steps"]).all()
    assert ((rec["quality"] > 0) & (rec["quality"] <= 1)).all()
    assert ((rec["admitted_entry"] >= 0) <= np.isfinite(rec["admit_s"])).all()
    expected = {"vanilla": {"no_cache"}, "nirvana": {"miss", "approx_hit", "hole_hit"},
                "final_image": {"miss", "image_hit"}, "small_model": {"small_model"}}[mode]
    assert names <= expected and len(names) >= min(2, len(expected)) - (mode == "nirvana" and len(names) == 2)
    if not EXECUTORS.get(executor).timed:
        assert summary["latency_s"] is None and np.isnan(rec["latency_s"]).all()
    else:
        assert summary["latency_s"]["p99"] > 0


def _summary(**sections: Any) -> dict[str, Any]:
    return simulate(experiment_from_data({"name": "t", **sections}).base)[2]


def test_consumed_cost_follows_compute_saved_and_fleet_cost_does_not() -> None:
    vanilla = _summary(serving={"mode": "vanilla"})
    nirvana = _summary()
    saved = nirvana["compute_saved"]
    assert saved > 0.05
    used = nirvana["cost"]["on_demand_consumed"]["gpu_usd"] / vanilla["cost"]["on_demand_consumed"]["gpu_usd"]
    # the published A10G profile folds encoder and decoder into the step time: GPU time is proportional to steps
    assert used == pytest.approx(1 - saved, rel=1e-6)
    fleet = nirvana["cost"]["fleet"]["gpu_usd"] / vanilla["cost"]["fleet"]["gpu_usd"]
    assert fleet == pytest.approx(1.0, abs=0.01)  # a fixed fleet for the trace's span barely moves


def test_warmup_is_excluded_from_statistics_but_kept_in_records() -> None:
    base = _summary(trace={"limit": 600})
    warm = _summary(trace={"limit": 600}, metrics={"warmup_requests": 200})
    assert warm["requests"] == 400 and warm["warmup_requests"] == 200 and base["warmup_requests"] == 0
    assert warm["hit_rate"] != base["hit_rate"]
    _, rec, _ = simulate(experiment_from_data({"trace": {"limit": 600}, "metrics": {"warmup_requests": 200}}).base)
    assert rec["warmup"][:200].all() and not rec["warmup"][200:].any()


def test_k_is_capped_below_a_requests_own_step_count(tmp_path: Any) -> None:
    """Trace rows with N = 20 under NIRVANA's table: K=20/25 would leave no step to run, so those hits are
    capped at the largest cached K' < N (15) and counted; rows with N = 50 are untouched."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.conftest import TINY_TRACE

    table = pq.read_table(TINY_TRACE)
    steps = pa.array([20 if i % 2 else None for i in range(table.num_rows)], pa.int32())
    path = tmp_path / "steps.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("steps"), "steps", steps), path)
    shutil.copy(TINY_TRACE.with_name("trace.embeddings.parquet"), tmp_path / "steps.embeddings.parquet")
    _, rec, summary = simulate(experiment_from_data({"trace": {"path": str(path), "limit": 1500},
                                                     "run": {"executor": "sequential"}}).base)
    short = rec["num_steps"] == 20
    assert summary["k_clamped"] == int((rec["k_selected"][short] >= 20).sum()) > 0
    assert rec["k_used"][short].max() == 15 and rec["k_used"][~short].max() == 25
    assert (rec["gpu_steps"][short] >= 5).all()
