"""Sweep executors: serial, process pool and a real Dask LocalCluster agree; dead cluster addresses fail fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from sim.config import RunConfig
from sim.errors import ConfigError, InputError
from sim.experiments.sweep import experiment_from_data
from sim.experiments.sweepexec import SWEEP_EXECUTORS, make_executor

ROOT = Path(__file__).resolve().parent.parent


def _toy(value: tuple[int, float]) -> dict[str, Any]:
    n, x = value
    return {"n": n, "power": x**n, "env": os.environ.get("OPENBLAS_NUM_THREADS")}


def _summary_bytes(cfg: RunConfig) -> bytes:
    from sim.experiments.runner import simulate

    return json.dumps(simulate(cfg)[2], indent=2).encode()


def _sim_points() -> list[tuple[str, Any]]:
    exp = experiment_from_data({"trace": {"limit": 300},
                                "grid": {"cache.policy": ["lru", "lcbfu"], "cache.capacity_noises": [50, 500]}})
    return exp.runs()


TOY = [(f"n={n}", (n, 1.5)) for n in range(6)]


def test_registry_names_and_choice() -> None:
    assert SWEEP_EXECUTORS.names() == ("dask", "pool", "serial")
    with make_executor() as ex:
        assert type(ex).__name__ == "SerialExecutor"
        assert dict(ex.execute(TOY, _toy)) == {name: _toy(v) for name, v in TOY}
    assert type(make_executor(jobs=2)).__name__ == "PoolExecutor"
    with pytest.raises(ConfigError, match="--executor: expected one of dask, pool, serial, got 'ray'"):
        make_executor("ray")
    with pytest.raises(ConfigError, match="--cluster local:2: only the dask executor"):
        make_executor("pool", cluster="local:2")
    with pytest.raises(ConfigError, match="--cluster local:0: expected local:N"):
        make_executor(cluster="local:0")


def test_unreachable_cluster_fails_fast_in_one_line() -> None:
    with pytest.raises(InputError) as info:
        make_executor(cluster="tcp://127.0.0.1:1")
    message = str(info.value)
    assert message.startswith("--cluster tcp://127.0.0.1:1: no Dask scheduler answered")
    assert "\n" not in message


@pytest.mark.slow
def test_pool_matches_serial_and_pins_blas() -> None:
    serial = dict(make_executor().execute(TOY, _toy))
    with make_executor("pool", jobs=2) as ex:
        pooled = dict(ex.execute(TOY, _toy))
    assert pooled == {name: {**r, "env": "1"} for name, r in serial.items()}
    points = _sim_points()
    with make_executor("pool", jobs=2) as ex:
        assert dict(ex.execute(points, _summary_bytes)) == dict(make_executor().execute(points, _summary_bytes))


@pytest.mark.slow
def test_pool_error_propagates() -> None:
    with make_executor("pool", jobs=2) as ex, pytest.raises(ZeroDivisionError):
        list(ex.execute([("a", (1, 1.0)), ("b", (-1, 0.0))], _toy))


@pytest.mark.slow
def test_dask_local_cluster_matches_serial() -> None:
    points = _sim_points()
    serial = dict(make_executor().execute(points, _summary_bytes))
    assert len(set(serial.values())) == len(points)  # the points differ, so equality below means something
    with make_executor(cluster="local:2") as ex:
        assert len(ex.client.scheduler_info()["workers"]) == 2
        toy = dict(ex.execute(TOY, _toy))
        distributed = dict(ex.execute(points, _summary_bytes))
    assert toy == {name: {**_toy(v), "env": "1"} for name, v in TOY}
    assert distributed == serial


@pytest.mark.slow
def test_pool_workers_end_when_the_driver_is_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    driver = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from sim.experiments.sweepexec import make_executor
        from tests.test_sweepexec import _sleep_and_report
        points = [(str(i), {str(pids)!r}) for i in range(2)]
        for _ in make_executor("pool", jobs=2).execute(points, _sleep_and_report):
            pass
    """)
    proc = subprocess.Popen([sys.executable, "-c", driver])
    try:
        _wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2)
        workers = [int(p) for p in pids.read_text().split()]
    finally:
        proc.kill()
        proc.wait()
    _wait_for(lambda: not any(_alive(p) for p in workers))


def _sleep_and_report(path: str) -> None:
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(600)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def _wait_for(condition: Any, limit_s: float = 120.0) -> None:
    """Poll until true; the limit only stops a hung test, the assertion is the condition itself."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.2)
