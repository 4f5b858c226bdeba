"""Dask: sweep points as tasks on Dask distributed (`--cluster ADDRESS`, or local:N workers)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

from sim.errors import ConfigError, InputError
from sim.experiments.sweepexec import SWEEP_EXECUTORS
from sim.experiments.sweepexec.base import CONNECT_TIMEOUT_S, Closing, Point, R, SweepExecutor


def _probe(address: str) -> None:
    """Open and close a TCP connection to a tcp:// or tls:// scheduler address (other schemes: Dask's own check)."""
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme in ("tcp", "tls"):
        host, port = parse_host_port(location)
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()


class DaskExecutor(Closing):
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


@SWEEP_EXECUTORS.register("dask")
def _dask(jobs: int, cluster: str | None) -> SweepExecutor:
    return DaskExecutor(cluster or f"local:{jobs}")
