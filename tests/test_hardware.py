"""Hardware model: latency tables (batch interpolation), batching, routing, cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sim.errors import InputError
from sim.experiments.runner import simulate
from sim.experiments.sweep import experiment_from_data
from sim.hardware.profiles import LatencyTable, StepLatency, load_cost, load_latency_table
from sim.hardware.routing import ROUTERS
from sim.metrics import summarize
from sim.scenario import Gpu, Requests
from tests.helpers import run_engine, scenario

PUBLISHED = {"type": "published", "source": "test", "says": "test"}


def _table(step_by_batch: dict[int, float], enc: float = 0.0, vae: float = 0.0) -> LatencyTable:
    batches = tuple(sorted(step_by_batch))
    return LatencyTable("t.yaml", "m/g/1x1", batches, tuple(StepLatency(step_by_batch[b], enc, vae) for b in batches))


def _requests(arrivals: list[float], steps: int = 10) -> Requests:
    n = len(arrivals)
    return Requests(
        arrival_s=np.asarray(arrivals, dtype=float), vectors=np.ones((1, 2), np.float32) / np.sqrt(2),
        prompt_index=np.zeros(n, np.int64), partition=np.zeros(n, np.int64), noise_bytes=np.full(n, 32768),
        num_steps=np.full(n, steps), latency_class=np.zeros(n, np.int64), step_factor=np.ones(n),
    )


def _run(arrivals: list[float], gpus: list[Gpu], routing: str = "central", **kw: Any) -> dict[str, np.ndarray]:
    return run_engine(scenario(_requests(arrivals, kw.pop("steps", 10)), gpus, routing=routing, **kw))


def test_latency_table_interpolates_and_refuses_extrapolation() -> None:
    table = _table({1: 1.0, 4: 2.5})
    assert table.at(2).step_s == pytest.approx(1.5)
    assert table.at(4).step_s == 2.5
    with pytest.raises(InputError, match=r"t\.yaml: batch 8 is outside the measured range 1\.\.4 for m/g/1x1"):
        table.at(8)


def _profile(tmp_path: Path, entries: list[dict[str, Any]], **top: Any) -> str:
    path = tmp_path / "lat.yaml"
    path.write_text(yaml.safe_dump({"kind": "latency", "provenance": PUBLISHED, "entries": entries, **top}))
    return str(path)


ROW = {"model": "m", "gpu": "g", "width": 64, "height": 64, "batch": 1, "step_s": 0.1, "text_encoder_s": 0.0,
       "vae_decode_s": 0.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"step_s": -0.1}, r"entries\[0\]\.step_s': expected a positive number"),
        ({"step_s": float("nan")}, r"entries\[0\]\.step_s': expected a finite number, got nan"),
        ({"vae_decode_s": "fast"}, r"entries\[0\]\.vae_decode_s': expected a finite number, got 'fast'"),
        ({"text_encoder_s": None}, r"entries\[0\]\.text_encoder_s': expected a finite number, got None"),
        ({"batch": 0}, r"entries\[0\]\.batch': expected an integer in 1..4096"),
        ({"step_p99_s": -1}, r"entries\[0\]\.step_p99_s': expected a non-negative number"),
        ({"gpu": "h100"}, r"no entry for model m on GPU g at 64x64; known: m/h100/64x64"),
        ({"step_ms": 100}, r"entries\[0\]\.step_ms': unknown field \(units are part of the names"),
    ],
)
def test_bad_latency_profile_names_file_and_field(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = _profile(tmp_path, [{**ROW, **change}])
    with pytest.raises(InputError, match=message):
        load_latency_table(path, "m", "g", 64, 64)


def test_profile_without_provenance_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lat.yaml"
    path.write_text(yaml.safe_dump({"kind": "latency", "provenance": {"type": "published"}, "entries": [ROW]}))
    with pytest.raises(InputError, match=r"provenance\.source': required for published profiles"):
        load_latency_table(str(path), "m", "g", 64, 64)
    path.write_text(yaml.safe_dump({"kind": "latency", "provenance": {"type": "guess"}, "entries": [ROW]}))
    with pytest.raises(InputError, match=r"provenance\.type': expected one of"):
        load_latency_table(str(path), "m", "g", 64, 64)


def test_duplicate_batch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="batch 1 of m/g/64x64 twice"):
        load_latency_table(_profile(tmp_path, [ROW, ROW]), "m", "g", 64, 64)


def test_static_batch_members_leave_after_their_own_steps() -> None:
    gpu = Gpu("g", (_table({1: 1.0, 4: 2.0}, enc=0.5, vae=0.25),), max_batch=4)
    requests = _requests([0.0, 0.0, 0.0])
    requests.num_steps[:] = [10, 4, 7]
    rec = run_engine(scenario(requests, [gpu]))
    step_at_3 = 1.0 + (2.0 - 1.0) * 2 / 3  # interpolated between the measured batches 1 and 4
    assert rec["batch_size"].tolist() == [3, 3, 3] and len(set(rec["batch_id"])) == 1
    assert rec["finish_s"] == pytest.approx([0.5 + s * step_at_3 + 0.25 for s in (10, 4, 7)])
    summary = summarize(rec, ks=(5,), gpu_kinds=["g"])
    assert summary["gpu_seconds"] == pytest.approx(0.5 + 10 * step_at_3 + 0.25)  # the longest member
    assert summary["batches"] == 1 and summary["mean_batch_size"] == 3


def test_batch_window_waits_for_a_partner() -> None:
    gpus = [Gpu("g", (_table({1: 1.0, 2: 1.5}),), max_batch=2)]
    alone = _run([0.0, 0.5], gpus)
    assert alone["batch_size"].tolist() == [1, 1]
    assert alone["finish_s"].tolist() == pytest.approx([10.0, 20.0])
    together = _run([0.0, 0.5], gpus, batch_window_s=1.0)
    assert together["batch_size"].tolist() == [2, 2]
    assert together["finish_s"].tolist() == pytest.approx([16.0, 16.0])  # 1 s window + 10 x 1.5 s


def test_batches_only_group_one_shape() -> None:
    gpus = [Gpu("g", (_table({1: 1.0, 2: 1.5}), _table({1: 2.0, 2: 3.0})), max_batch=2)]
    requests = _requests([0.0, 0.0, 0.0])
    requests.latency_class[:] = [0, 1, 0]
    rec = run_engine(scenario(requests, gpus))
    assert rec["batch_id"].tolist() == [0, 1, 0]  # request 2 jumps the queue to join its shape's batch
    assert rec["finish_s"].tolist() == pytest.approx([15.0, 35.0, 15.0])


def _fast_slow() -> list[Gpu]:
    return [Gpu("slow", (_table({1: 3.0}),)), Gpu("fast", (_table({1: 1.0}),))]


@pytest.mark.parametrize(
    ("routing", "expected_gpus"),
    [
        ("round_robin", [0, 1, 0, 1, 0, 1]),
        # counts only, blind to speed: alternates because ties go to the lowest index
        ("least_loaded", [0, 1, 0, 1, 0, 1]),
        # counts speed: the fast GPU (10 s a request) wins until its backlog exceeds the slow one's 30 s
        ("shortest_expected_wait", [1, 1, 1, 0, 1, 1]),
        # the fastest idle GPU starts first; then whichever GPU frees up takes the queue head
        # (fast frees at 10, 20, 30; slow at 30.1)
        ("central", [1, 0, 1, 1, 1, 0]),
    ],
)
def test_routing_on_a_mixed_pool(routing: str, expected_gpus: list[int]) -> None:
    rec = _run([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], _fast_slow(), routing)
    assert rec["gpu"].tolist() == expected_gpus


def test_every_router_serves_everything_fcfs_per_gpu() -> None:
    for name in ROUTERS.names():
        rec = _run(list(np.arange(40) * 0.7), _fast_slow(), name)
        assert np.isfinite(rec["finish_s"]).all(), name
        for g in (0, 1):
            starts = rec["start_s"][rec["gpu"] == g]
            assert (np.diff(starts) >= 0).all(), name  # each GPU serves its requests in arrival order


def test_cost_in_summary(tmp_path: Path) -> None:
    cfg = experiment_from_data({"trace": {"limit": 500}}).base
    summary = simulate(cfg)[2]
    cost = load_cost("profiles/cost/aws-on-demand-published.yaml")
    hours = summary["makespan_s"] / 3600
    storage = cost.storage_gb_month_usd["local_disk"] * 1500 * 131072 / 1e9 * hours / 730
    assert summary["cost"]["storage_usd"] == pytest.approx(storage, rel=1e-6)
    fleet = summary["cost"]["fleet"]  # the 4 GPUs for the run's span, busy or not
    assert fleet["gpu_usd"] == pytest.approx(4 * cost.gpu("a10g") * hours, rel=1e-6)
    assert fleet["usd_per_1000_images"] == pytest.approx(1000 * fleet["total_usd"] / 500)
    used = summary["cost"]["on_demand_consumed"]  # only the GPU seconds the requests used
    assert used["gpu_usd"] == pytest.approx(summary["gpu_seconds"] * cost.gpu("a10g") / 3600, rel=1e-6)
    serverless = summary["cost"]["serverless_consumed"]
    assert serverless["gpu_usd"] == pytest.approx(summary["gpu_seconds"] * 0.000306, rel=1e-6)
    assert used["total_usd"] == pytest.approx(used["gpu_usd"] + summary["cost"]["storage_usd"], rel=1e-6)
    assert summary["cost"]["slo_fleet"] is None  # filled by an SLO search, not by a run
    with pytest.raises(InputError, match="no price for GPU 'h100'; known: a10g"):
        cost.gpu("h100")


def test_cost_profile_needs_sources(tmp_path: Path) -> None:
    path = tmp_path / "cost.yaml"
    path.write_text(yaml.safe_dump({"kind": "cost", "provenance": PUBLISHED, "gpu_hour_usd": {"a10g": {"usd": 1.0}},
                                    "storage_gb_month_usd": {}}))
    with pytest.raises(InputError, match=r"gpu_hour_usd\.a10g\.source': required"):
        load_cost(str(path))


def test_mixed_pools_from_config() -> None:
    data = {"trace": {"limit": 400}, "hardware": {"cost_profile": None, "routing": "shortest_expected_wait", "pools": [
        {"gpu": "a10g", "count": 2},
        {"gpu": "a100", "count": 1, "latency_profile": "profiles/latency/sdxl-1024-a100-published.yaml"}]}}
    summary = simulate(experiment_from_data(data).base)[2]
    assert summary["gpus"]["a10g"]["gpus"] == 2 and summary["gpus"]["a100"]["gpus"] == 1
    assert summary["gpus"]["a10g"]["requests"] + summary["gpus"]["a100"]["requests"] == 400
    assert "cost" not in summary


def test_each_pool_batches_up_to_its_own_limit() -> None:
    big = Gpu("big", (_table({1: 1.0, 2: 1.2, 4: 1.6}),), max_batch=4)
    small = Gpu("small", (_table({1: 1.0}),), max_batch=1)
    rec = _run([0.0] * 7, [big, small])
    # t=0: big starts 4 at once, small 1; small frees at 10 (one more), big at 16 takes the last
    assert rec["gpu"].tolist() == [0, 0, 0, 0, 1, 1, 0]
    assert rec["batch_size"].tolist() == [4, 4, 4, 4, 1, 1, 1]
    assert rec["start_s"].tolist() == pytest.approx([0, 0, 0, 0, 0, 10, 16])
