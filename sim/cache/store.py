"""Cache store: entries, capacity accounting (noises and bytes), retrieval index, evict-until-fits."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from sim.cache.admission import Admission
from sim.cache.admission.always import Always
from sim.cache.kselect import MISS, KTable, resolve_hole
from sim.cache.offline.base import OfflineReference
from sim.cache.policies import WHOLE_PROMPT, Item, Policy, RequestContext
from sim.retrieval.base import Retriever

#: lookups whose admission context is remembered (more than the requests in flight at once)
_MAX_PENDING = 1 << 14


class AccessResult(NamedTuple):
    """Outcome of one lookup (a named tuple: immutable, and built per request on the engine's hot path).
    ``k_used`` is 0 on a miss; ``hole`` marks a miss or a smaller K caused by eviction of the K the similarity
    asked for."""

    entry_id: int  # matched entry, -1 when the partition was empty
    similarity: float  # on the K table's scale (after the similarity map); NaN when the partition was empty
    similarity_raw: float  # the retriever's cosine, before the map
    k_selected: int
    k_used: int
    hole: bool


class AdmitResult(NamedTuple):
    entry_id: int  # -1 when not admitted: larger than the whole cache, or refused by admission
    num_evicted_noises: int


class _Entry:
    __slots__ = ("ks", "noise_bytes", "partition")

    def __init__(self, partition: Hashable, noise_bytes: int, ks: list[int]) -> None:
        self.partition = partition
        self.noise_bytes = noise_bytes
        self.ks = ks  # cached K values, ascending


class CacheStore:
    """Owns membership, sizes and the per-partition retrieval index; asks the policy for victims.

    Invariants (checked by ``check()``): used noises/bytes never exceed capacity; an entry is in its
    partition's index iff it holds at least one noise; the policy tracks exactly the cached items.
    Every policy hook gets the request's ``RequestContext``. A miss enters only when the admission
    policy and the eviction policy's own ``admits`` agree; a hit is served only when ``policy.serves``.
    An offline reference's ``initial_content`` is inserted before the first request.
    """

    def __init__(
        self,
        *,
        ks: Sequence[int],
        table: KTable,
        policy: Policy,
        make_retriever: Callable[[], Retriever],
        capacity_noises: int | None = None,
        capacity_bytes: int | None = None,
        similarity_scale: Callable[[float], float] | None = None,
        admission: Admission | None = None,
        scope_of: Callable[[Hashable], Hashable] | None = None,
    ) -> None:
        if capacity_noises is None and capacity_bytes is None:
            raise ValueError("a cache needs capacity_noises or capacity_bytes")
        self.ks = tuple(sorted(ks))
        self.table = table
        self.policy = policy
        self._make_retriever = make_retriever
        self.capacity_noises = capacity_noises if capacity_noises is not None else 1 << 62
        self.capacity_bytes = capacity_bytes if capacity_bytes is not None else 1 << 62
        self.used_noises = 0
        self.used_bytes = 0
        self._entries: dict[int, _Entry] = {}
        self._index: dict[Hashable, Retriever] = {}
        # The search scope of each partition (None: the partition itself), and its cached prompts.
        self._scope_of = scope_of
        self._scope_count: dict[Hashable, int] = {}
        self._next_id = 0
        self._by_prompt = policy.unit == "prompt"
        # Maps the retriever's cosine onto the scale the K table is written in (CLIP text cosine).
        self._scale = similarity_scale
        self.admission = admission if admission is not None else Always()
        # Lookup context of each miss awaiting admission (under the timed engine others run in between).
        self._pending: dict[int, RequestContext] = {}
        self.num_declined = 0  # hits the policy chose not to serve (run as misses)
        self.num_refused = 0  # misses offered for admission and refused
        if isinstance(policy, OfflineReference):
            for part, vector, key, noise_bytes in policy.initial_content(self.capacity_noises, self.capacity_bytes):
                self._insert(part, vector, key, noise_bytes, RequestContext(-1, 0.0, key))

    # -- lookups ---------------------------------------------------------------------------------
    def access(
        self, partition: Hashable, vector: np.ndarray, text_key: int, now: float, request: int = -1,
        max_k: int | None = None,
    ) -> AccessResult:
        """Find the nearest cached prompt, choose K, resolve holes, and count a hit on the noise used.

        ``max_k`` caps the K a hit may use (a request with N steps can skip at most N - 1): a larger K
        asked by the similarity resolves like a hole, to the largest cached K' <= max_k, and is not
        flagged as one (the cap is the request's, not eviction's)."""
        num_steps = max_k + 1 if max_k is not None else 0
        top = self.table.thresholds[0][1]
        k_top = resolve_hole(top if max_k is None else min(top, max_k), self.ks)
        index = self._index.get(partition)
        found = index.nearest(vector, text_key, request) if index is not None else None
        if found is None:
            return self._looked_up(AccessResult(-1, float("nan"), float("nan"), MISS, MISS, False),
                                   RequestContext(request, now, text_key, num_steps=num_steps, k_top=k_top))
        entry_id, raw = found
        similarity = self._scale(raw) if self._scale is not None else raw
        k_selected = self.table.select(similarity)
        if k_selected == MISS:
            return self._looked_up(AccessResult(entry_id, similarity, raw, MISS, MISS, False),
                                   RequestContext(request, now, text_key, similarity, entry_id, num_steps=num_steps,
                                                  k_top=k_top))
        k_asked = k_selected if max_k is None else min(k_selected, max_k)
        k_used = resolve_hole(k_asked, self._entries[entry_id].ks)
        ctx = RequestContext(request, now, text_key, similarity, entry_id, k_asked, k_used, num_steps, k_top)
        if k_used != MISS:
            item = (entry_id, WHOLE_PROMPT) if self._by_prompt else (entry_id, k_used)
            if not self.policy.serves(item, ctx):
                # Declined (RND-LRU, qLRU-dC): run as a miss, which offers the request for admission.
                self.num_declined += 1
                ctx = RequestContext(request, now, text_key, similarity, entry_id, k_asked, MISS, num_steps, k_top)
                return self._looked_up(AccessResult(entry_id, similarity, raw, k_selected, MISS, False), ctx)
            self.policy.on_access(ctx)
            self.policy.on_hit(item, now, ctx)
            return AccessResult(entry_id, similarity, raw, k_selected, k_used, k_used != k_asked)
        return self._looked_up(AccessResult(entry_id, similarity, raw, k_selected, k_used, True), ctx)

    def _looked_up(self, result: AccessResult, ctx: RequestContext) -> AccessResult:
        """A lookup that found no usable noise: the policy hears it, and its context waits for admission."""
        self.policy.on_access(ctx)
        if ctx.request >= 0:
            self._pending[ctx.request] = ctx
            if len(self._pending) > _MAX_PENDING:
                # Modes that never admit by request index leave their misses here: keep the newest only.
                del self._pending[next(iter(self._pending))]
        return result

    # -- admission and eviction ------------------------------------------------------------------
    def admit(
        self, partition: Hashable, vector: np.ndarray, text_key: int, noise_bytes: int, now: float,
        request: int = -1,
    ) -> AdmitResult:
        """Admit one prompt with a noise at every cached K, evicting by policy until it fits.

        The group is admitted whole or not at all: victims are chosen before any new noise is in,
        so a prompt never evicts its own noises. Both admission rules hear every offered miss that fits.
        """
        need_noises = len(self.ks)
        need_bytes = need_noises * noise_bytes
        looked = self._pending.pop(request, None) if request >= 0 else None
        # The admission's own time (under the timed engine it follows the lookup by the generation).
        ctx = RequestContext(request, now, text_key) if looked is None else replace(looked, now=now)
        if need_noises > self.capacity_noises or need_bytes > self.capacity_bytes:
            return AdmitResult(-1, 0)
        by_policy = self.policy.admits(ctx)
        if not (self.admission.admit(ctx) and by_policy):
            self.num_refused += 1
            return AdmitResult(-1, 0)
        return self._insert(partition, vector, text_key, noise_bytes, ctx)

    def _insert(
        self, partition: Hashable, vector: np.ndarray, text_key: int, noise_bytes: int, ctx: RequestContext
    ) -> AdmitResult:
        need_noises = len(self.ks)
        need_bytes = need_noises * noise_bytes
        now = ctx.now
        evicted = 0
        while (
            self.used_noises + need_noises > self.capacity_noises
            or self.used_bytes + need_bytes > self.capacity_bytes
        ):
            evicted += self._evict(self.policy.victim())
        entry_id = self._next_id
        self._next_id += 1
        self._entries[entry_id] = _Entry(partition, noise_bytes, list(self.ks))
        self.used_noises += need_noises
        self.used_bytes += need_bytes
        index = self._index.get(partition)
        if index is None:
            index = self._index[partition] = self._make_retriever()
        index.add(entry_id, vector, text_key)
        if self._scope_of is not None:
            scope = self._scope_of(partition)
            self._scope_count[scope] = self._scope_count.get(scope, 0) + 1
        ctx = RequestContext(ctx.request, now, text_key, ctx.similarity, entry_id, ctx.k_asked, 0, ctx.num_steps,
                             ctx.k_top)
        if self._by_prompt:
            self.policy.on_insert((entry_id, WHOLE_PROMPT), now, ctx)
        else:
            for k in self.ks:  # ascending, so FIFO/LRU order the smaller K of a prompt first
                self.policy.on_insert((entry_id, k), now, ctx)
        return AdmitResult(entry_id, evicted)

    def _evict(self, item: Item) -> int:
        entry_id, k = item
        entry = self._entries[entry_id]
        self.policy.on_remove(item)
        if k == WHOLE_PROMPT:
            removed = len(entry.ks)
            entry.ks.clear()
        else:
            entry.ks.remove(k)
            removed = 1
        self.used_noises -= removed
        self.used_bytes -= removed * entry.noise_bytes
        if not entry.ks:
            # A prompt leaves the retrieval index when its last noise goes.
            del self._entries[entry_id]
            self._index[entry.partition].remove(entry_id)
            if self._scope_of is not None:
                self._scope_count[self._scope_of(entry.partition)] -= 1
        return removed

    # -- introspection ---------------------------------------------------------------------------
    @property
    def similarity_scale(self) -> Callable[[float], float] | None:
        """The map from the retriever's cosine to the K table's scale (None: raw cosine)."""
        return self._scale

    @property
    def retriever_factory(self) -> Callable[[], Retriever]:
        """What makes this store's per-partition indexes (replays read which retrieval it is)."""
        return self._make_retriever

    def retrieval_counts(self) -> dict[str, int]:
        """How the retriever answered (the candidate fast path counts its exact fallbacks); {} if it keeps none."""
        counts = getattr(self._make_retriever, "counts", None)
        return {} if counts is None else {str(k): int(v) for k, v in vars(counts).items()}

    def scope_size(self, partition: Hashable) -> int:
        """Cached prompts of ``partition``'s search scope (the front end's search scans them all)."""
        if self._scope_of is None:
            return self.partition_size(partition)
        return self._scope_count.get(self._scope_of(partition), 0)

    def partition_size(self, partition: Hashable) -> int:
        """Number of cached prompts the retrieval for ``partition`` searches."""
        index = self._index.get(partition)
        return len(index) if index is not None else 0

    @property
    def num_entries(self) -> int:
        return len(self._entries)

    def cached_ks(self, entry_id: int) -> tuple[int, ...]:
        entry = self._entries.get(entry_id)
        return tuple(entry.ks) if entry is not None else ()

    def check(self) -> None:
        """Assert every invariant; for tests (O(cache size))."""
        assert self.used_noises <= self.capacity_noises
        assert self.used_bytes <= self.capacity_bytes
        assert self.used_noises == sum(len(e.ks) for e in self._entries.values())
        assert self.used_bytes == sum(len(e.ks) * e.noise_bytes for e in self._entries.values())
        indexed = {}
        for part, index in self._index.items():
            indexed[part] = len(index)
        per_part: dict[Hashable, int] = {}
        for e in self._entries.values():
            assert e.ks, "an entry without noises must leave the store"
            per_part[e.partition] = per_part.get(e.partition, 0) + 1
        assert {p: n for p, n in indexed.items() if n} == per_part
        if self._by_prompt:
            expected = {(eid, WHOLE_PROMPT) for eid in self._entries}
        else:
            expected = {(eid, k) for eid, e in self._entries.items() for k in e.ks}
        assert set(self.policy.items()) == expected and len(self.policy) == len(expected)
