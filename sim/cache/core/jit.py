"""The core's compiler: numba's njit (cached on disk), or plain Python when numba is absent or disabled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import numba

    jit: Callable[[Any], Any] = numba.njit(cache=True, nogil=True)
    COMPILED = not getattr(numba.config, "DISABLE_JIT", False)
except ImportError:  # pragma: no cover - numba is pinned in requirements.txt
    def jit(fn: Any) -> Any:
        return fn

    COMPILED = False
