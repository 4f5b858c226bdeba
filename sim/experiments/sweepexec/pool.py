"""Pool: a local pool of spawned processes (`--jobs N`), BLAS pinned to one thread each, ending if the driver dies."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any

from sim.errors import ConfigError
from sim.experiments.sweepexec import SWEEP_EXECUTORS
from sim.experiments.sweepexec.base import ONE_THREAD_ENV, WATCHDOG_PERIOD_S, Closing, Point, R, SweepExecutor


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(WATCHDOG_PERIOD_S)
        if os.getppid() != parent_pid:  # re-parented: the driver died (killed, not a clean exit)
            os._exit(1)


def _init_pool_worker(parent_pid: int) -> None:
    os.environ.update(ONE_THREAD_ENV)  # before the worker's first numpy import (the pool spawns fresh interpreters)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="parent-watchdog").start()


class PoolExecutor(Closing):
    """A local pool of ``jobs`` spawned processes, each with one-thread BLAS, each ending if the driver dies."""

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ConfigError(f"--jobs: expected an integer >= 1, got {jobs}")
        self.jobs = jobs

    def execute(self, points: list[Point], fn: Callable[[Any], R]) -> Iterator[tuple[str, R]]:
        saved = {k: os.environ.get(k) for k in ONE_THREAD_ENV}
        os.environ.update(ONE_THREAD_ENV)  # spawned workers inherit it before they import anything
        pool = ProcessPoolExecutor(max_workers=min(self.jobs, max(len(points), 1)), mp_context=get_context("spawn"),
                                   initializer=_init_pool_worker, initargs=(os.getpid(),))
        try:
            pending: dict[Future[R], str] = {pool.submit(fn, value): name for name, value in points}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: pending[f]):
                    yield pending.pop(fut), fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # an error or an abandoned loop cancels what is left
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@SWEEP_EXECUTORS.register("pool")
def _pool(jobs: int, cluster: str | None) -> SweepExecutor:
    return PoolExecutor(jobs)
