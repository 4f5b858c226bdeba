"""Sequential replay at cache-simulator speed: the ``sequential`` executor's records from integer arrays.

The loop is sim/executors/replay_loop.py; this file checks that a scenario is one it serves (NIRVANA,
exact-key retrieval or precomputed candidate lists, a registered policy), builds the arrays and the
records, and runs the exact fallback a truncated candidate list needs: the canonical cosine over the
loop's contiguous matrix of cached prompts' vectors (no gather), the best slot picked in compiled code;
over many rows, screened in batches with one BLAS product first (``_FallbackScreen``), same answers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.cache.kselect import KTable
from sim.cache.policies import POLICIES
from sim.cache.store import CacheStore
from sim.executors import EXECUTORS, replay_loop
from sim.executors.base import Executor
from sim.retrieval import cosine
from sim.retrieval.candidates import CandidateCosine, CandidatesFactory
from sim.retrieval.exact_cosine import ExactCosine
from sim.retrieval.exact_key import ExactKey
from sim.retrieval.precompute import Candidates
from sim.scenario import Scenario
from sim.scenario.modes.nirvana import Nirvana
from sim.scenario.records import Records, new_records
from sim.scenario.requests import Requests
from sim.workload.simmap import SimilarityMap


def check_candidates(cand: Candidates, requests: Requests) -> None:
    """The lists must fit the requests: CSR offsets, float32 cosines, prompt ids of the trace, each list
    sorted by cosine, descending (the first cached candidate is then the nearest)."""
    n = len(requests)
    off = cand.offsets
    if off.shape != (n + 1,) or off[0] != 0 or np.any(np.diff(off) < 0) or off[-1] != len(cand.prompts):
        raise ValueError(f"candidates: offsets must be non-decreasing int64[{n + 1}] from 0 to len(prompt)")
    if cand.sims.shape != cand.prompts.shape or cand.sims.dtype != np.float32:
        raise ValueError("candidates: similarity must be float32 with one value per candidate prompt")
    if cand.truncated.shape != (n,):
        raise ValueError(f"candidates: truncated must be bool[{n}]")
    if len(cand.prompts) and (cand.prompts.min() < 0 or cand.prompts.max() >= len(requests.vectors)):
        raise ValueError("candidates: prompt id outside Requests.vectors")
    rises = np.flatnonzero(np.diff(cand.sims) > 0) + 1  # candidate j above candidate j - 1
    unsorted = rises[~np.isin(rises, off)]  # ... within one request's list
    if len(unsorted):
        i = int(np.searchsorted(off, unsorted[0], side="right") - 1)
        raise ValueError(f"candidates: request {i}'s list is not sorted by similarity, descending")


def exact_key_candidates(requests: Requests) -> Candidates:
    """Exact-key retrieval as candidate lists: each request's own prompt at cosine 1, nothing else."""
    n = len(requests)
    return Candidates(np.arange(n + 1, dtype=np.int64), requests.prompt_index.astype(np.int32),
                      np.ones(n, dtype=np.float32), np.zeros(n, dtype=bool), 1.0)


def _select_ks(table: KTable, similarity: np.ndarray) -> np.ndarray:
    """KTable.select over an array: the first threshold exceeded, in table order."""
    k = np.zeros(len(similarity), dtype=np.int64)
    done = np.zeros(len(similarity), dtype=bool)
    for above, kv in table.thresholds:
        hit = ~done & (similarity > above)
        k[hit] = kv
        done |= hit
    return k


def _scale_array(store: CacheStore, raw: np.ndarray) -> np.ndarray:
    scale = store.similarity_scale
    if scale is None:
        return raw.copy()
    owner = getattr(scale, "__self__", None)
    if isinstance(owner, SimilarityMap) and getattr(scale, "__func__", None) is SimilarityMap.apply:
        return owner.apply_array(raw)  # the same np.interp as apply(), on every value at once
    values, inverse = np.unique(raw, return_inverse=True)
    return np.array([scale(float(v)) for v in values.tolist()], dtype=np.float64)[inverse]


@EXECUTORS.register("sequential_fast")
class FastSequential(Executor):
    """The ``sequential`` executor's records (same admission timing, same columns) from integer arrays.

    Serves NIRVANA with a fresh store under one of fifo/lru/lfu/lcbfu; retrieval ``exact_key``, or
    ``candidates`` (precomputed lists, sim/retrieval/precompute.py; or ``exact_cosine`` given such lists). A
    list that runs out while its partition holds prompts falls back to an exact search over them
    (counted in ``stats``). A nearest prompt below the lists' floor is not recorded (similarity NaN, matched
    entry -1: a miss), whether a list or the fallback found it, so records do not depend on the cap.
    Anything else is refused rather than replayed with other semantics. The scenario's store is only
    read (its configuration), never advanced. After a run, ``matrix_rows`` is the number of rows of the
    fallback's vector matrix that were written (its resident memory: rows x dim x 4 bytes).
    """

    name = "sequential_fast"
    timed = False
    admission = "before the next lookup"

    def __init__(self, candidates: Candidates | None = None) -> None:
        self.candidates = candidates
        self.stats: dict[str, int] = {}
        self.matrix_rows = 0
        #: (batched screens, requests screened in them) of the fallbacks over many rows
        self.screens = (0, 0)

    def run(self, scenario: Scenario) -> Records:
        mode = scenario.mode
        if type(mode) is not Nirvana:
            raise ValueError(f"run.executor sequential_fast: serving mode nirvana only, got {mode.name}")
        req, store = scenario.requests, mode.store
        factory = store.retriever_factory
        cand = self.candidates
        if cand is None and isinstance(factory, CandidatesFactory):
            cand = factory.candidates  # the run's own lists (cache.retrieval: candidates)
        _check_store(store, with_candidates=cand is not None)
        listed = cand is not None
        cand = cand if cand is not None else exact_key_candidates(req)
        check_candidates(cand, req)
        rec, num_fallbacks, self.matrix_rows, self.screens = _replay(req, store, cand, listed=listed)
        self.stats = {"retrieval_exact_fallbacks": num_fallbacks} if listed else {}
        busy = rec["service_s"]
        busy[:] = 0.0
        service = scenario.service
        for cls in np.unique(req.latency_class).tolist():
            lat = service.latency(0, cls, 1)
            sel = (req.latency_class == cls) & (rec["gpu_steps"] > 0)
            # service_s(lat, steps): text encoder + steps x step time + VAE decode, in that order
            busy[sel] = lat.text_encoder_s + rec["gpu_steps"][sel] * lat.step_s + lat.vae_decode_s
        return rec


def _check_store(store: CacheStore, *, with_candidates: bool) -> None:
    policy = store.policy
    if policy.name not in replay_loop.POLICY_CODES or type(policy) is not POLICIES.get(policy.name):
        raise ValueError(f"run.executor sequential_fast: policy {policy.name!r} has no integer-array version")
    if store.num_entries or store.used_noises:
        raise ValueError("run.executor sequential_fast: the store must start empty")
    if min(store.ks) < 1:  # LFU/LCBFU order never-hit items first: a hit's key must be above theirs
        raise ValueError("run.executor sequential_fast: cached K values must be >= 1")
    if len(store.ks) > 62:
        raise ValueError("run.executor sequential_fast: at most 62 cached K values")
    if store.admission.name != "always":
        raise ValueError(f"run.executor sequential_fast: admission {store.admission.name!r} has no integer-array "
                         "version (always only)")
    retriever = store.retriever_factory()  # an empty index, only to learn which retrieval the run asked for
    wanted = (ExactCosine, CandidateCosine) if with_candidates else (ExactKey,)
    if type(retriever) not in wanted:
        raise ValueError(f"run.executor sequential_fast: retrieval {retriever.name!r} is served only by "
                         f"{'exact_cosine with candidates' if with_candidates else 'exact_key'} here")


def _partitions(req: Requests) -> np.ndarray:
    """Partition codes 0..P-1 (the loop indexes arrays by them); only their equality matters."""
    part = req.partition.astype(np.int64, copy=False)
    if len(part) and (part.min() < 0 or part.max() >= len(part)):
        part = np.unique(part, return_inverse=True)[1].astype(np.int64, copy=False)
    return part


def _pp_codes(req: Requests, cand: Candidates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes of (partition, prompt) for every request and every candidate, and each code's prompt.

    partition x prompt itself when that table is small (no sort: a shared scope is one partition), else
    dense codes of the pairs that occur."""
    n = len(req)
    num_prompts = max(len(req.vectors), int(req.prompt_index.max()) + 1)
    part = _partitions(req)
    req_key = part * num_prompts + req.prompt_index
    if len(cand.prompts) == n and np.array_equal(cand.offsets, np.arange(n + 1)) \
            and np.array_equal(cand.prompts, req.prompt_index):
        cand_key = req_key  # exact-key lists: each request's own prompt
    else:
        cand_key = np.repeat(part, np.diff(cand.offsets)) * num_prompts + cand.prompts
    num_keys = (int(part.max()) + 1) * num_prompts
    if num_keys <= max(4 * n, 1 << 22):
        present = np.zeros(num_keys, dtype=bool)
        present[req_key] = True
        bad = np.flatnonzero(~present[cand_key])
        req_pp, cand_pp, pp_prompt = req_key, cand_key, np.arange(num_keys, dtype=np.int64) % num_prompts
    else:
        keys, req_pp = np.unique(req_key, return_inverse=True)
        cand_pp = np.searchsorted(keys, cand_key)
        bad = np.flatnonzero((cand_pp >= len(keys)) | (keys[np.minimum(cand_pp, len(keys) - 1)] != cand_key))
        pp_prompt = keys % num_prompts
    if len(bad):
        i = int(np.searchsorted(cand.offsets, bad[0], side="right") - 1)
        raise ValueError(f"candidates: request {i} lists prompt {int(cand.prompts[bad[0]])}, never requested in its "
                         "partition")
    return req_pp.astype(np.int64, copy=False), cand_pp.astype(np.int64, copy=False), pp_prompt


#: the record columns the loop writes, in its argument order
_OUT_COLUMNS = ("outcome", "k_selected", "k_used", "hole", "matched_entry", "similarity", "similarity_raw",
                "admitted_entry", "num_evicted", "gpu_steps", "admit_s")


def _num_rows(req: Requests, num_slots: int, listed: bool) -> int:
    """Rows of the fallback's matrix: one per distinct cached prompt, so at most the live slots and the
    trace's distinct prompts (none without lists: exact-key lookups never fall back)."""
    if not listed:
        return 1
    if len(req) and (req.prompt_index.min() < 0 or req.prompt_index.max() >= len(req.vectors)):
        # the loop copies vectors[prompt] unchecked (compiled code does no bounds checks)
        raise ValueError("requests: prompt_index outside Requests.vectors")
    distinct = int(np.count_nonzero(np.bincount(req.prompt_index, minlength=1)))
    return max(1, min(num_slots, distinct))


def _replay(req: Requests, store: CacheStore, cand: Candidates, *, listed: bool,
            ) -> tuple[Records, int, int, tuple[int, int]]:
    """(records, exact fallbacks, rows of the fallback matrix written, (screen batches, requests screened))."""
    n = len(req)
    if n == 0:
        return new_records(0), 0, 0, (0, 0)
    ks = np.asarray(store.ks, dtype=np.int64)
    nk = len(ks)
    by_prompt = store.policy.unit == "prompt"
    policy = replay_loop.POLICY_CODES[store.policy.name]
    cap_noises, cap_bytes = int(store.capacity_noises), int(store.capacity_bytes)
    min_bytes = max(1, int(req.noise_bytes.min())) if n else 1
    num_slots = max(1, min(n, cap_noises, cap_bytes // min_bytes))  # every live entry holds >= 1 noise
    num_items = num_slots if by_prompt else num_slots * nk
    req_pp, cand_pp, pp_prompt = _pp_codes(req, cand)
    num_pp = len(pp_prompt)
    cand_raw = cand.sims.astype(np.float64)
    cand_mapped = _scale_array(store, cand_raw)
    cand_k = _select_ks(store.table, cand_mapped)
    part = _partitions(req)
    num_parts = int(part.max()) + 1 if n else 1

    i64 = np.int64
    scal = np.zeros(replay_loop.NUM_SCALARS, dtype=i64)
    scal[replay_loop.FREE_TOP] = num_slots
    free = np.arange(num_slots - 1, -1, -1, dtype=i64)  # popped from the top: slot 0 first
    slot_entry, slot_mask, slot_pp, slot_part, slot_bytes = (np.zeros(num_slots, i64) for _ in range(5))
    pp_next, pp_prev, part_next, part_prev = (np.full(num_slots, -1, i64) for _ in range(4))
    pp_head, pp_tail = np.full(num_pp, -1, i64), np.full(num_pp, -1, i64)
    part_head, part_tail = np.full(num_parts, -1, i64), np.full(num_parts, -1, i64)
    part_count = np.zeros(num_parts, i64)
    ordered = policy in (replay_loop.FIFO, replay_loop.LRU)
    nxt = np.full(num_items + 1, num_items, i64)  # empty circular list: the sentinel points at itself
    prv = np.full(num_items + 1, num_items, i64)
    size_heap = 1 if ordered else num_items
    heap, pos, ka, kc, kd, uses = (np.zeros(size_heap, i64) for _ in range(6))
    kb = np.zeros(size_heap, np.float64)
    size_lcbfu = num_items if policy == replay_loop.LCBFU else 1
    inow, iseq = np.zeros(size_lcbfu, np.float64), np.zeros(size_lcbfu, i64)

    rec = new_records(n)
    rec["arrival_s"][:] = req.arrival_s
    rec["num_steps"][:] = req.num_steps
    arrival = np.ascontiguousarray(req.arrival_s, dtype=np.float64)
    num_steps = req.num_steps.astype(i64, copy=False)
    noise_bytes = req.noise_bytes.astype(i64, copy=False)
    dim = req.vectors.shape[1]
    # The matrix is zero-filled lazily by the OS: only rows ever written (ROW_HIGH, the peak number of
    # distinct cached prompts) take memory.
    num_rows = _num_rows(req, num_slots, listed)
    mat = np.zeros((num_rows, dim), dtype=np.float32)
    vectors = np.ascontiguousarray(req.vectors, dtype=np.float32) if listed else mat
    row_free = np.arange(num_rows - 1, -1, -1, dtype=i64)  # popped from the top: row 0 first
    scal[replay_loop.ROW_TOP] = num_rows
    prompt_row = np.full(len(vectors) if listed else 1, -1, i64)
    row_prompt, row_refs = np.zeros(num_rows, i64), np.zeros(num_rows, i64)
    slot_row = np.zeros(num_slots, i64)
    row_stamp = np.zeros(num_rows, i64)
    scratch = np.zeros(num_slots, i64)
    num_fallbacks = 0
    forced = (-1, -1, 0.0, 0.0, 0)
    # one dtype per argument, so numba compiles the loop once
    offsets, truncated = cand.offsets.astype(i64, copy=False), cand.truncated.astype(bool, copy=False)
    inputs: list[Any] = [arrival, num_steps, part, req_pp, noise_bytes, offsets, cand_pp, cand.sims,
                         cand_raw, cand_mapped, cand_k, truncated, ks]
    state: list[Any] = [scal, slot_entry, slot_mask, slot_pp, slot_part, slot_bytes, pp_head, pp_tail, pp_next,
                        pp_prev, part_head, part_tail, part_next, part_prev, part_count, free, nxt, prv, heap, pos,
                        ka, kb, kc, kd, uses, inow, iseq]
    rows: list[Any] = [prompt_row, row_prompt, row_refs, row_free, slot_row, row_stamp]
    outs: list[Any] = [rec[c] for c in _OUT_COLUMNS]
    if not replay_loop.COMPILED:  # plain Python indexes lists several times faster than numpy arrays
        inputs, state, rows, outs = ([a.tolist() for a in group] for group in (inputs, state, rows, outs))
    pp_codes = pp_prompt.astype(i64, copy=False) if listed else np.zeros(1, i64)
    scal, part_head, part_next, part_count, slot_row = state[0], state[10], state[12], state[14], rows[4]
    scale = store.similarity_scale
    screen = _FallbackScreen(mat, vectors, req.prompt_index, offsets, cand_pp, truncated, state[6], rows[5]) \
        if listed and replay_loop.COMPILED else None
    if screen is not None and int(part.min()) == int(part.max()):  # one partition: rows are its prompts
        prompt_pp = np.full(len(vectors), -1, dtype=i64)
        prompt_pp[req.prompt_index] = req_pp
        screen.one_partition(rows[1], rows[2], prompt_pp, state[1])
    start = 0
    while True:
        stop = replay_loop.replay(start, *forced, *inputs, vectors, pp_codes, policy, by_prompt, cap_noises,
                                  cap_bytes, listed, *state, mat, *rows, *outs)
        if stop >= n:
            if not replay_loop.COMPILED:
                for c, values in zip(_OUT_COLUMNS, outs, strict=True):
                    rec[c][:] = values
            screens = (screen.batches, screen.screened) if screen is not None else (0, 0)
            return rec, num_fallbacks, int(scal[replay_loop.ROW_HIGH]) if listed else 0, screens
        # Exact fallback, as ExactCosine answers: the highest cosine, ties to the smallest entry id. The
        # canonical cosine of a row does not depend on its position, so one pass over every written row
        # gives each cached prompt's exact bits; a partition holding few of them (per-user scopes) gathers
        # its own rows instead.
        num_fallbacks += 1
        p = int(part[stop])
        query = vectors[req.prompt_index[stop]]
        high = int(scal[replay_loop.ROW_HIGH])
        by_row = 2 * int(part_count[p]) >= high
        if by_row and screen is not None and high >= SCREEN_MIN_ROWS:
            slot, raw = screen.best(stop, high, p, part_head, part_next, slot_row)
        else:
            if by_row:
                sims = cosine.cosines(mat[:high], query)
            else:
                m = replay_loop.partition_rows(p, part_head, part_next, slot_row, scratch)
                sims = cosine.cosines(mat[scratch[:m]], query)
            slot, at = replay_loop.best_slot(p, sims, by_row, part_head, part_next, slot_row)
            raw = float(sims[at])
        if raw < cand.floor:  # as a complete list would say: nothing above the floor, whatever the cap
            forced = (stop, -1, float("nan"), float("nan"), 0)
        else:
            sim = raw if scale is None else float(scale(raw))  # as CacheStore.access maps it
            forced = (stop, int(slot), raw, sim, store.table.select(sim))
        start = stop


#: fallbacks over at least this many rows are screened in batches (below, one canonical pass is cheaper).
#: Measured on the 2M calibrated trace: FIFO 1,500 (<= 300 rows) 18.3 s unscreened, 38.2 s screened; FIFO
#: 15,000 (<= 3,000 rows) 60.7 s unscreened, 50.2 s screened (benchmarks/README.md, session 4)
SCREEN_MIN_ROWS = 1024
#: requests screened together at most, and the screen's memory bound (floats)
SCREEN_BATCH = 128
SCREEN_MAX_FLOATS = 1 << 26
#: how far ahead the screen looks for requests that will likely fall back
SCREEN_WINDOW = 20_000


class _FallbackScreen:
    """Exact fallbacks over many rows, screened in batches.

    A fallback scans every written row of the matrix with the canonical cosine, one memory-bound pass
    per request. Here, when request i falls back, it and the next requests likely to fall back (their
    list is truncated and none of its prompts is cached now) are screened together with one BLAS
    product over the rows written so far. When request j then falls back, the rows written since its
    screen (``row_stamp`` >= the screening request) are screened again, the best cached row's screened
    value ``a`` gives a threshold ``a - 2 * margin`` (``margin`` bounds any two float32 summation orders,
    cosine.screen_margin), and only the cached rows at or above it get the canonical cosine. Every row
    whose canonical cosine could be the partition's best, or tie it, is above the threshold, so the best
    of those rows (highest cosine, ties to the oldest entry) is what best_slot over the full canonical
    pass would answer (tests/test_fast_fallback.py). The cached rows are found by walking the partition's
    slots (screen_near, best_near), or, with one partition, by scanning the referenced rows in order
    (screen_rows, best_row).
    """

    def __init__(self, mat: np.ndarray, vectors: np.ndarray, prompt_index: np.ndarray, offsets: np.ndarray,
                 cand_pp: np.ndarray, truncated: np.ndarray, pp_head: np.ndarray, row_stamp: np.ndarray) -> None:
        self.mat, self.vectors, self.prompt_index = mat, vectors, prompt_index
        self.offsets, self.cand_pp, self.truncated = offsets, cand_pp, truncated
        self.pp_head, self.row_stamp = pp_head, row_stamp
        self.margin = np.float32(2 * cosine.screen_margin(mat.shape[1]))
        self.pending: dict[int, tuple[np.ndarray, int]] = {}  # request -> (screened rows [0, high), at request)
        self.vals = np.zeros(0, dtype=np.float32)  # scratch of the screen: a value per slot, or per row
        self.near = np.zeros(0, dtype=np.int64)
        self.row_mark = np.full(len(mat), -1, dtype=np.int64)  # scratch of best_near
        self.single: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.batches = self.screened = 0

    def one_partition(self, row_prompt: np.ndarray, row_refs: np.ndarray, prompt_pp: np.ndarray,
                      slot_entry: np.ndarray) -> None:
        """The store has one partition: scan the referenced rows in order (screen_rows, best_row) rather
        than walk the slots' list, whose order in memory grows random as slots are recycled."""
        self.single = (row_prompt, row_refs, prompt_pp, slot_entry)

    def _likely(self, i: int, limit: int) -> np.ndarray:
        """Requests after i (within the window) whose truncated list has no prompt cached now."""
        n = len(self.truncated)
        js = i + 1 + np.flatnonzero(self.truncated[i + 1:min(n, i + 1 + SCREEN_WINDOW)])
        if len(js) == 0 or limit <= 0:
            return js[:0]
        lo, hi = int(self.offsets[js[0]]), int(self.offsets[js[-1] + 1])
        cached = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum(self.pp_head[self.cand_pp[lo:hi]] >= 0, out=cached[1:])
        any_cached = cached[self.offsets[js + 1] - lo] > cached[self.offsets[js] - lo]
        return js[~any_cached][:limit]

    def best(self, i: int, high: int, p: int, part_head: np.ndarray, part_next: np.ndarray,
             slot_row: np.ndarray) -> tuple[int, float]:
        """Request i's fallback: (best cached slot of partition p, its canonical cosine), as best_slot over
        the canonical cosines of every row [0, high) would give."""
        got = self.pending.pop(i, None)
        if got is None:
            self.pending.clear()  # one batch held at a time (those screened here not yet met are screened again)
            batch = max(1, min(SCREEN_BATCH, SCREEN_MAX_FLOATS // high))
            js = np.r_[i, self._likely(i, batch - 1)]
            screened = self.vectors[self.prompt_index[js]] @ self.mat[:high].T  # float32 BLAS, not canonical
            self.batches += 1
            self.screened += len(js)
            for k, j in enumerate(js[1:].tolist(), start=1):
                self.pending[j] = (screened[k], i)
            got = (screened[0], i)
        approx, at_request = got
        query = self.vectors[self.prompt_index[i]]
        size = len(self.mat) if self.single is not None else len(slot_row)  # one scratch value per row, or slot
        if len(self.vals) < size:
            self.vals = np.zeros(size, dtype=np.float32)
            self.near = np.zeros(size, dtype=np.int64)
        if self.single is not None:
            row_prompt, row_refs, prompt_pp, slot_entry = self.single
            m = replay_loop.screen_rows(approx, len(approx), at_request, self.row_stamp, row_refs, high, self.mat,
                                        query, self.margin, self.vals, self.near)
            near = self.near[:m]
            slot, raw = replay_loop.best_row(near, cosine.cosines(self.mat[near], query), row_prompt, prompt_pp,
                                             self.pp_head, slot_entry)
            return int(slot), float(raw)
        m = replay_loop.screen_near(p, approx, len(approx), at_request, self.row_stamp, self.mat, query,
                                    self.margin, part_head, part_next, slot_row, self.vals, self.near)
        near = self.near[:m]
        canon = cosine.cosines(self.mat[near], query)
        slot, raw = replay_loop.best_near(p, near, canon, self.row_mark, part_head, part_next, slot_row)
        return int(slot), float(raw)
