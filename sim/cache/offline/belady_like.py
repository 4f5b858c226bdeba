"""Belady-like: evict the cached noise whose next use lies furthest in the future (a heuristic here)."""

from __future__ import annotations

import numpy as np

from sim.cache.offline import OFFLINE
from sim.cache.offline.base import OfflineReference
from sim.cache.policies.base import NO_REQUEST, WHOLE_PROMPT, Item, RequestContext, Unit
from sim.errors import ConfigError

#: future requests x cached prompts one victim computation may touch (brute force on small traces)
MAX_FUTURE = 50_000


@OFFLINE.register("belady_like")
class BeladyLike(OfflineReference):
    """Reference, and a heuristic, not an optimum. Belady's MIN (1966) is optimal for exact hits; with
    approximate hits the offline problem is NP-hard (Neglia, Garetto, Leonardi, IEEE/ACM ToN 2022), and
    this rule is only its natural analogue. At each eviction (request i), for every later request j it
    finds the nearest prompt of the cache as it is now, the K that j would ask of it (capped at N - 1)
    and the largest cached K' <= K: that noise is j's next use. The victim is the noise whose next use
    is furthest (never used again first); ties go to the oldest admission, then the smaller K. The
    cache is assumed frozen from i on (later admissions and evictions are ignored). O(future x cache)
    per eviction, by brute force: for traces of up to MAX_FUTURE requests."""

    name = "belady_like"

    def __init__(self, unit: Unit, *args, **kwargs) -> None:
        super().__init__(unit, *args, **kwargs)
        self._ks: dict[int, set[int]] = {}  # entry -> cached K (or {WHOLE_PROMPT})
        self._key: dict[int, int] = {}  # entry -> prompt key (-1: unknown, never used again)
        self._part: dict[int, int] = {}
        self._seq: dict[int, int] = {}  # entry -> admission order
        self._next_seq = 0
        self._now = -1  # index of the request being served
        self._memo: tuple[tuple[int, int], tuple[list[int], np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._version = 0  # bumps when the set of cached entries (not their K) changes
        if self.future is not None and len(self.future) > MAX_FUTURE:
            raise ConfigError(f"cache.policy: belady_like is brute force: at most {MAX_FUTURE:,} requests "
                              f"(trace.limit), got {len(self.future):,}")

    def on_access(self, ctx: RequestContext) -> None:
        self._now = ctx.request

    def on_insert(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        entry = item[0]
        if entry not in self._ks:
            self._ks[entry] = set()
            self._key[entry] = ctx.key
            known = self.future is not None and ctx.request >= 0
            self._part[entry] = int(self.future.partition[ctx.request]) if known else 0  # type: ignore[union-attr]
            self._seq[entry] = self._next_seq
            self._next_seq += 1
            self._version += 1
        self._ks[entry].add(item[1])

    def on_hit(self, item: Item, now: float, ctx: RequestContext = NO_REQUEST) -> None:
        pass

    def on_remove(self, item: Item) -> None:
        entry = item[0]
        ks = self._ks[entry]
        ks.remove(item[1])
        if not ks:
            for d in (self._ks, self._key, self._part, self._seq):
                del d[entry]
            self._version += 1

    def _nearest(self) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
        """For every later request: its nearest cached entry (column) and the K it would ask of it."""
        state = (self._now, self._version)
        if self._memo is not None and self._memo[0] == state:
            return self._memo[1]
        fut = self._need_future()
        entries = [e for e in sorted(self._ks) if self._key[e] >= 0]
        rows = np.arange(self._now + 1, len(fut))
        if not entries or not len(rows):
            found: tuple[list[int], np.ndarray, np.ndarray, np.ndarray] = ([], rows[:0], rows[:0], rows[:0])
        else:
            keys = np.array([self._key[e] for e in entries])
            sim = fut.similarity(rows, keys, np.array([self._part[e] for e in entries]))
            col = np.argmax(sim, axis=1)  # ties to the lowest entry id, as the exact retriever breaks them
            k_asked = fut.k_of(sim[np.arange(len(rows)), col][:, None], rows)[:, 0]
            hit = k_asked > 0
            found = (entries, rows[hit], col[hit], k_asked[hit])
        self._memo = (state, found)
        return found

    def _next_uses(self) -> dict[Item, int]:
        """Request index of each cached noise's next use (absent: never), for the cache as it is now."""
        if self.future is None:
            return {}  # no trace given (a policy driven by hand): every noise is "never used again"
        entries, rows, col, k_asked = self._nearest()
        if not entries or not len(rows):
            return {}
        if self.unit == "prompt":
            codes, first = np.unique(col, return_index=True)
            return {(entries[c], WHOLE_PROMPT): int(rows[f]) for c, f in zip(codes, first, strict=True)}
        ks = np.asarray(self._need_future().ks)
        has = np.array([[k in self._ks[e] for k in ks] for e in entries])
        allowed = has[col] & (ks[None, :] <= k_asked[:, None])
        any_k = allowed.any(axis=1)
        pos = len(ks) - 1 - np.argmax(allowed[:, ::-1], axis=1)  # largest cached K' <= K asked (a hole)
        codes, first = np.unique((col * len(ks) + pos)[any_k], return_index=True)
        used_rows = rows[any_k]
        return {(entries[c // len(ks)], int(ks[c % len(ks)])): int(used_rows[f])
                for c, f in zip(codes, first, strict=True)}

    def victim(self) -> Item:
        uses = self._next_uses()
        never = len(self.future) + 1 if self.future is not None else 1
        return min(self.items(), key=lambda it: (-uses.get(it, never), self._seq[it[0]], it[1]))

    def __len__(self) -> int:
        return sum(len(v) for v in self._ks.values())

    def __contains__(self, item: object) -> bool:
        return isinstance(item, tuple) and len(item) == 2 and item[1] in self._ks.get(item[0], ())

    def items(self) -> list[Item]:
        return [(e, k) for e, ks in self._ks.items() for k in sorted(ks)]


