"""The sweep-executor interface: run a function over named points, yield each result as it finishes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

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


class Closing:
    """close() and a ``with`` block for executors that hold nothing (or override close)."""

    def close(self) -> None:
        pass

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
