"""Sweep executors (serial, local process pool, Dask cluster): run a function over named points, yield results."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any, Protocol, TypeVar

from sim.errors import ConfigError, InputError
from sim.registry import Registry

R = TypeVar("R")
Point = tuple[str, Any]

#: BLAS and OpenMP pools of one thread per worker: N workers on N cores, not N x cores threads
ONE_THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                         "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}
#: how long a cluster address may take to answer before the sweep is refused
CONNECT_TIMEOUT_S = 3.0
#: how often a pool worker checks that its parent is still alive
WATCHDOG_PERIOD_S = 1.0


class SweepExecutor(Protocol):
    """Runs ``fn(value)`` for every ``(name, value)`` point and yields ``(name, result)`` as each finishes.

    ``fn`` must be a picklable top-level function; workers only compute, the caller writes files.
    An executor holds its workers until ``close()`` (or the end of a ``with`` block)."""

    def execute(self, points: list[Point], fn: Callable[[Any], R]) -> Iterator[tuple[str, R]]: ...

    def close(self) -> None: ...

    def __enter__(self) -> SweepExecutor: ...

    def __exit__(self, *exc: object) -> None: ...


SWEEP_EXECUTORS: Registry[Callable[[int, str | None], SweepExecutor]] = Registry("sweep executor")


class _Closing:
    def close(self) -> None:
        pass

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialExecutor(_Closing):
    """Every point in this process, in the given order."""

    def execute(self, points: list[Point], fn: Callable[[Any], R]) -> Iterator[tuple[str, R]]:
        for name, value in points:
            yield name, fn(value)


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(WATCHDOG_PERIOD_S)
        if os.getppid() != parent_pid:  # re-parented: the driver died (killed, not a clean exit)
            os._exit(1)


def _init_pool_worker(parent_pid: int) -> None:
    os.environ.update(ONE_THREAD_ENV)  # before the worker's first numpy import (the pool spawns fresh interpreters)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="parent-watchdog").start()


class PoolExecutor(_Closing):
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


def _probe(address: str) -> None:
    """Open and close a TCP connection to a tcp:// or tls:// scheduler address (other schemes: Dask's own check)."""
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme in ("tcp", "tls"):
        host, port = parse_host_port(location)
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()


class DaskExecutor(_Closing):
    """Points as tasks on Dask distributed: ``local:N`` starts a LocalCluster of N one-thread worker processes
    (Dask's nanny pins BLAS to one thread in each); any other value is the address of a running scheduler,
    which must answer within CONNECT_TIMEOUT_S. Workers need this checkout's ``sim`` importable."""

    def __init__(self, cluster: str) -> None:
        from distributed import Client, LocalCluster

        self.cluster_spec = cluster
        self._cluster: Any = None
        if cluster.startswith("local:"):
            count = cluster[len("local:"):]
            if not count.isdigit() or int(count) < 1:
                raise ConfigError(f"--cluster {cluster}: expected local:N with N >= 1 workers")
            self._cluster = LocalCluster(n_workers=int(count), threads_per_worker=1, processes=True,
                                         dashboard_address=None)
            self.client = Client(self._cluster)
            return
        try:
            _probe(cluster)  # a plain socket first: a refused or unroutable address fails fast and quietly
            self.client = Client(cluster, timeout=CONNECT_TIMEOUT_S)
        except Exception as exc:  # whatever a wrong address raises (refused, timeout, not a scheduler, bad syntax)
            why = " ".join(str(exc).split()) or type(exc).__name__
            raise InputError(f"--cluster {cluster}: no Dask scheduler answered there within "
                             f"{CONNECT_TIMEOUT_S:g} s ({why[:160]})") from None

    def execute(self, points: list[Point], fn: Callable[[Any], R]) -> Iterator[tuple[str, R]]:
        from distributed import as_completed

        futures = [self.client.submit(fn, value, pure=False) for _, value in points]
        names = {fut.key: name for fut, (name, _) in zip(futures, points, strict=True)}
        try:
            for fut in as_completed(futures):
                yield names[fut.key], fut.result()
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


@SWEEP_EXECUTORS.register("serial")
def _serial(jobs: int, cluster: str | None) -> SweepExecutor:
    return SerialExecutor()


@SWEEP_EXECUTORS.register("pool")
def _pool(jobs: int, cluster: str | None) -> SweepExecutor:
    return PoolExecutor(jobs)


@SWEEP_EXECUTORS.register("dask")
def _dask(jobs: int, cluster: str | None) -> SweepExecutor:
    return DaskExecutor(cluster or f"local:{jobs}")


def make_executor(name: str | None = None, *, jobs: int = 1, cluster: str | None = None) -> SweepExecutor:
    """The executor a sweep runs on: named, or by the flags (--cluster -> dask, --jobs N > 1 -> pool, else serial).
    Connects to a cluster now, so a dead address fails before any output exists."""
    if name is None:
        name = "dask" if cluster is not None else "pool" if jobs > 1 else "serial"
    if name not in SWEEP_EXECUTORS:
        raise ConfigError(f"--executor: expected one of {', '.join(SWEEP_EXECUTORS.names())}, got {name!r}")
    if cluster is not None and name != "dask":
        raise ConfigError(f"--cluster {cluster}: only the dask executor uses a cluster (got --executor {name})")
    return SWEEP_EXECUTORS.get(name)(jobs, cluster)
