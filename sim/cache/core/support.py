"""Which cache specs the compiled core carries out (no numba here: build and executors ask it cheaply)."""

from __future__ import annotations

from sim.cache.spec import CacheSpec

#: the policies whose keys the core has (sim/cache/core/keys.py), by code; each has a reference file in
#: sim/cache/policies/ and a differential test against it (tests/test_core.py)
POLICY_CODES = {"fifo": 0, "lru": 1, "lfu": 2, "lcbfu": 3, "lcbfu_da": 4}
#: retrievals the core answers: precomputed candidate lists, or identical prompts only
RETRIEVALS = ("candidates", "exact_key")
#: the most cached K values per prompt (a prompt's cached K are a bit mask in one int64)
MAX_KS = 62


def compiled_support(spec: CacheSpec) -> str | None:
    """None when the compiled core gives this spec's records exactly, else why not (one line)."""
    if spec.policy not in POLICY_CODES:
        return (f"cache.policy {spec.policy} has no compiled version (compiled: "
                f"{', '.join(POLICY_CODES)})")
    if spec.admission != "always":
        return f"cache.admission {spec.admission} has no compiled version (compiled: always)"
    if spec.retrieval not in RETRIEVALS:
        return f"cache.retrieval {spec.retrieval} has no compiled version (compiled: {', '.join(RETRIEVALS)})"
    if spec.retrieval == "candidates" and spec.candidates is None:
        return "cache.retrieval candidates without candidate lists"
    if min(spec.ks) < 1:  # LFU/LCBFU order never-hit items first: a hit's key must be above theirs
        return "cache.ks: the compiled core needs every K >= 1"
    if len(spec.ks) > MAX_KS:
        return f"cache.ks: the compiled core holds at most {MAX_KS} K values"
    return None
