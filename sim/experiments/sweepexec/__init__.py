"""Sweep executors, one file each (registry key = file name = `--sweep-executor` value): where sweep points run."""

from __future__ import annotations

from collections.abc import Callable

from sim.errors import ConfigError
from sim.experiments.sweepexec.base import SweepExecutor
from sim.registry import Registry

SWEEP_EXECUTORS: Registry[Callable[[int, str | None], SweepExecutor]] = Registry("sweep executor")

from sim.experiments.sweepexec import dask, pool, serial  # noqa: E402,F401


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


__all__ = ["SWEEP_EXECUTORS", "SweepExecutor", "make_executor"]
