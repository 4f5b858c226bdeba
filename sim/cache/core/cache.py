"""A CacheSpec opened as the compiled core: its arrays built once per execution, asked by both executors.

The engine asks ``lookup`` and ``admit`` per request; the sequential replay hands the whole run to ``replay``,
a compiled loop over the same two functions that stops only for exact fallbacks. A truncated candidate list
whose prompts are all evicted is answered exactly here (fallback.py), then handed back to the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.cache.core import kernel
from sim.cache.core import layout as L
from sim.cache.core.fallback import SCREEN_MIN_ROWS, FallbackScreen, best_slot, partition_rows
from sim.cache.core.jit import COMPILED
from sim.cache.core.support import POLICY_CODES, compiled_support
from sim.cache.spec import CacheSpec, LiveCache
from sim.cache.store import AccessResult, AdmitResult
from sim.memo import Memo
from sim.requests import Requests
from sim.retrieval import cosine
from sim.retrieval.precompute import Candidates

#: per-request record columns by name (sim/scenario/records.py's schema; the core writes into them)
Records = dict[str, np.ndarray]
#: the record columns ``replay`` writes, in its ``outs`` order
REPLAY_COLUMNS = ("k_selected", "k_used", "hole", "matched_entry", "similarity", "similarity_raw", "admitted_entry",
                  "num_evicted", "admit_s")
NO_FORCED = (-1, -1, 0.0, 0.0, 0)
#: capacities beyond what any store could hold (the reference's "unbounded")
UNBOUNDED = 1 << 62


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


def _partitions(req: Requests) -> np.ndarray:
    """Partition codes 0..P-1 (the kernel indexes arrays by them); only their equality matters."""
    part = req.partition.astype(np.int64, copy=False)
    if len(part) and (part.min() < 0 or part.max() >= len(part)):
        part = np.unique(part, return_inverse=True)[1].astype(np.int64, copy=False)
    return part


def _pp_codes(req: Requests, cand: Candidates, part: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes of (partition, prompt) for every request and every candidate, and each code's prompt.

    partition x prompt itself when that table is small (no sort: a shared scope is one partition), else
    dense codes of the pairs that occur."""
    n = len(req)
    num_prompts = max(len(req.vectors), int(req.prompt_index.max()) + 1)
    part_of_prompt = np.full(num_prompts, -1, dtype=np.int64)
    part_of_prompt[req.prompt_index] = part
    if np.array_equal(part_of_prompt[req.prompt_index], part):
        # Every prompt is requested in one partition only (a shared scope, refined by topic or not): the prompt
        # id is its (partition, prompt) code, and a candidate must be a prompt of its request's partition.
        bad = np.flatnonzero(part_of_prompt[cand.prompts] != np.repeat(part, np.diff(cand.offsets)))
        if len(bad):
            i = int(np.searchsorted(cand.offsets, bad[0], side="right") - 1)
            raise ValueError(f"candidates: request {i} lists prompt {int(cand.prompts[bad[0]])}, never requested in "
                             "its partition")
        prompt_ids = req.prompt_index.astype(np.int64, copy=False)
        return prompt_ids, cand.prompts.astype(np.int64), np.arange(num_prompts, dtype=np.int64)
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


def _num_rows(req: Requests, num_slots: int, listed: bool) -> int:
    """Rows of the fallback's matrix: one per distinct cached prompt, so at most the live slots and the
    trace's distinct prompts (none without lists: exact-key lookups never fall back)."""
    if not listed:
        return 1
    if len(req) and (req.prompt_index.min() < 0 or req.prompt_index.max() >= len(req.vectors)):
        # the kernel copies vectors[prompt] unchecked (compiled code does no bounds checks)
        raise ValueError("requests: prompt_index outside Requests.vectors")
    distinct = int(np.count_nonzero(np.bincount(req.prompt_index, minlength=1)))
    return max(1, min(num_slots, distinct))


@dataclass(frozen=True)
class _Inputs:
    """The core's read-only inputs over a run's requests and lists (every execution of a sweep over one trace
    shares them: they do not depend on policy or capacity)."""

    part_of: np.ndarray
    num_parts: int
    scope_code: np.ndarray | None
    req_arr: np.ndarray
    off: np.ndarray
    cand: np.ndarray
    cand_f: np.ndarray
    cand_sim32: np.ndarray
    truncated: np.ndarray
    pp_prompt: np.ndarray  # the prompt of each (partition, prompt) code (rows need it: lists only)
    num_pp: int  # how many (partition, prompt) codes there are


def _inputs(spec: CacheSpec, req: Requests, cand: Candidates, unit_bytes: np.ndarray, listed: bool) -> _Inputs:
    i64 = np.int64
    n = len(req)
    check_candidates(cand, req)
    part = _partitions(req) if n else np.zeros(0, i64)
    req_pp, cand_pp, pp_prompt = _pp_codes(req, cand, part) if n else (part, part, np.zeros(1, i64))
    req_arr = np.zeros((L.NUM_REQ_FIELDS, n), i64)
    req_arr[L.Q_PART], req_arr[L.Q_PP], req_arr[L.Q_BYTES] = part, req_pp, unit_bytes
    req_arr[L.Q_MAX_K] = req.num_steps - 1 if spec.capped else UNBOUNDED
    raw = cand.sims.astype(np.float64)
    mapped = spec.similarity_map.apply_array(raw) if spec.similarity_map is not None else raw
    scope = np.unique(req.scope, return_inverse=True)[1].reshape(-1) if n and req.scope is not None else None
    return _Inputs(part, int(part.max()) + 1 if n else 1, scope, req_arr, cand.offsets.astype(i64, copy=False),
                   np.stack([cand_pp, spec.table.select_array(mapped)]).astype(i64, copy=False),
                   np.stack([raw, mapped]), cand.sims, cand.truncated.astype(bool, copy=False),
                   pp_prompt.astype(i64, copy=False) if listed else np.zeros(1, i64), len(pp_prompt))


#: the last inputs built (a sweep's executions over one trace share them)
_INPUTS: Memo[_Inputs] = Memo()


class CompiledCache(LiveCache):
    """The spec's cache as the compiled core's arrays (layout.py), for one execution over ``requests``."""

    implementation = "compiled"

    def __init__(self, spec: CacheSpec, requests: Requests) -> None:
        why = compiled_support(spec)
        if why is not None:
            raise ValueError(f"the compiled cache core does not support this run: {why}")
        self.spec, self.req = spec, requests
        n = len(requests)
        self.listed = spec.retrieval == "candidates"
        cand = spec.candidates if self.listed and spec.candidates is not None else exact_key_candidates(requests)
        self.floor = cand.floor
        self.num_fallbacks = 0
        self._build(spec, requests, cand)
        self.screen: FallbackScreen | None = None
        if self.listed and COMPILED and n:
            self.screen = FallbackScreen(self.mat, self.vectors, requests.prompt_index, self.off, self.cand[L.C_PP],
                                         self.truncated, self.pp[L.PP_HEAD], self.row[L.R_STAMP])
            if int(self.part_of.min()) == int(self.part_of.max()):  # one partition: rows are its prompts
                prompt_pp = np.full(len(self.vectors), -1, dtype=np.int64)
                prompt_pp[requests.prompt_index] = self.req_arr[L.Q_PP]
                self.screen.one_partition(self.row[L.R_PROMPT], self.row[L.R_REFS], prompt_pp, self.slot[L.S_ENTRY])

    def _build(self, spec: CacheSpec, req: Requests, cand: Candidates) -> None:
        i64 = np.int64
        n, nk = len(req), len(spec.ks)
        by_prompt = spec.unit == "prompt"
        policy = POLICY_CODES[spec.policy]
        cap_noises = spec.capacity_noises if spec.capacity_noises is not None else UNBOUNDED
        cap_bytes = spec.capacity_bytes if spec.capacity_bytes is not None else UNBOUNDED
        unit_bytes = spec.unit_bytes.astype(i64, copy=False)
        min_bytes = max(1, int(unit_bytes.min())) if n else 1
        num_slots = max(1, min(n, cap_noises, cap_bytes // min_bytes))  # every live entry holds >= 1 unit
        num_items = num_slots if by_prompt else num_slots * nk
        ins = _INPUTS.get((spec.table, spec.capped, self.listed),
                          (req, spec.candidates, unit_bytes, spec.similarity_map),
                          lambda: _inputs(spec, req, cand, unit_bytes, self.listed))
        self.part_of, part, num_parts = ins.part_of, ins.part_of, ins.num_parts
        self.conf = np.zeros(L.NUM_CONF, i64)
        self.conf[[L.POLICY, L.BY_PROMPT, L.CAP_NOISES, L.CAP_BYTES, L.WITH_ROWS, L.INIT_USES]] = (
            policy, by_prompt, cap_noises, cap_bytes, self.listed, spec.policy_params.lcbfu_initial_uses)
        self.ks = np.asarray(sorted(spec.ks), dtype=i64)
        self.req_arr, self.off, self.cand, self.cand_f = ins.req_arr, ins.off, ins.cand, ins.cand_f
        self.cand_sim32, self.truncated, self.pp_prompt = ins.cand_sim32, ins.truncated, ins.pp_prompt

        self.scal = np.zeros(L.NUM_SCALARS, i64)
        self.scal[L.FREE_TOP] = num_slots
        self.slot = np.zeros((L.NUM_SLOT_FIELDS, num_slots), i64)
        self.slot[[L.S_PP_NEXT, L.S_PP_PREV, L.S_PART_NEXT, L.S_PART_PREV]] = -1
        self.free = np.arange(num_slots - 1, -1, -1, dtype=i64)  # popped from the top: slot 0 first
        self.pp = np.full((L.NUM_PP_FIELDS, ins.num_pp), -1, i64)
        self.part = np.full((L.NUM_PART_FIELDS, num_parts), -1, i64)
        self.part[[L.P_COUNT, L.P_SCOPE_COUNT]] = 0
        self.part[L.P_SCOPE] = np.arange(num_parts)
        if ins.scope_code is not None:  # each partition's scope, coded 0..S-1 (S <= num_parts)
            self.part[L.P_SCOPE, part] = ins.scope_code
        self.item = np.full((L.NUM_ITEM_FIELDS, num_items + 1), num_items, i64)  # empty list: sentinel to itself
        self.item_t = np.zeros(num_items + 1, np.float64)
        heap_size = num_items if policy in (POLICY_CODES["lfu"], POLICY_CODES["lcbfu"], POLICY_CODES["lcbfu_da"]) \
            else 1
        self.heap = np.zeros((L.NUM_HEAP_FIELDS, heap_size), i64)
        self.heap_b = np.zeros(heap_size, np.float64)
        # The matrix is zero-filled lazily by the OS: only rows ever written (ROW_HIGH, the peak number of
        # distinct cached prompts) take memory.
        num_rows = _num_rows(req, num_slots, self.listed) if n else 1
        self.mat = np.zeros((num_rows, req.vectors.shape[1]), dtype=np.float32)
        self.vectors = np.ascontiguousarray(req.vectors, dtype=np.float32) if self.listed else self.mat
        self.row = np.zeros((L.NUM_ROW_FIELDS, num_rows), i64)
        self.prompt_row = np.full(len(self.vectors) if self.listed else 1, -1, i64)
        self.row_free = np.arange(num_rows - 1, -1, -1, dtype=i64)  # popped from the top: row 0 first
        self.scal[L.ROW_TOP] = num_rows
        self.scratch = np.zeros(num_slots, i64)
        self.inputs = (self.conf, self.ks, self.req_arr, self.off, self.cand, self.cand_f, self.cand_sim32,
                       self.truncated, self.vectors, self.pp_prompt)
        self.state = (self.scal, self.slot, self.free, self.pp, self.part, self.item, self.item_t, self.heap,
                      self.heap_b, self.row, self.prompt_row, self.row_free, self.mat)

    # -- the engine's questions ----------------------------------------------------------------------
    def lookup(self, i: int, now: float) -> AccessResult:
        status, entry, raw, sim, ksel, k_used, hole = kernel.lookup(i, NO_FORCED, self.inputs, self.state)
        if status == L.NEEDS_FALLBACK:
            status, entry, raw, sim, ksel, k_used, hole = kernel.lookup(i, self.fallback(i), self.inputs, self.state)
        return AccessResult(int(entry), float(sim), float(raw), int(ksel), int(k_used), bool(hole))

    def admit(self, i: int, now: float) -> AdmitResult:
        entry, evicted = kernel.admit(i, now, self.inputs, self.state)
        return AdmitResult(int(entry), int(evicted))

    def partition_size(self, i: int) -> int:
        return int(self.part[L.P_SCOPE_COUNT, self.part[L.P_SCOPE, self.part_of[i]]]) if len(self.part_of) else 0

    def stats(self) -> dict[str, int]:
        out = {"hits_declined": 0, "admissions_refused": 0}  # the compiled policies serve and admit everything
        counts = {"retrieval_listed": int(self.scal[L.LISTED]), "retrieval_exact_fallbacks": self.num_fallbacks,
                  "retrieval_unlisted_lookups": 0}  # as the reference's candidate retriever counts (names, order)
        return out | counts if self.listed and any(counts.values()) else out

    @property
    def matrix_rows(self) -> int:
        """Rows of the fallback's vector matrix ever written (its resident memory: rows x dim x 4 bytes)."""
        return int(self.scal[L.ROW_HIGH]) if self.listed else 0

    # -- the sequential replay -----------------------------------------------------------------------
    def replay(self, arrival_s: np.ndarray, rec: Records) -> None:
        """Every request in order, each miss admitted before the next lookup at its arrival time; writes the
        lookup and admission columns of ``rec`` (REPLAY_COLUMNS)."""
        n = len(arrival_s)
        if n == 0:
            return
        arrival = np.ascontiguousarray(arrival_s, dtype=np.float64)
        outs = tuple(rec[c] for c in REPLAY_COLUMNS)
        start, forced = 0, NO_FORCED
        while (stop := kernel.replay(start, forced, arrival, self.inputs, self.state, outs)) < n:
            forced = self.fallback(stop)
            start = stop

    # -- exact fallbacks -----------------------------------------------------------------------------
    def fallback(self, i: int) -> tuple[int, int, float, float, int]:
        """Request i's lookup answered by exact search (its list ran out): (i, slot, raw, similarity, K) as a
        complete list would give; nothing above the floor is a miss whatever the cap."""
        self.num_fallbacks += 1
        p = int(self.part_of[i])
        query = self.vectors[self.req.prompt_index[i]]
        high = int(self.scal[L.ROW_HIGH])
        part_head, part_next, slot_row = self.part[L.P_HEAD], self.slot[L.S_PART_NEXT], self.slot[L.S_ROW]
        by_row = 2 * int(self.part[L.P_COUNT, p]) >= high
        if by_row and self.screen is not None and high >= SCREEN_MIN_ROWS:
            slot, raw = self.screen.best(i, high, int(self.scal[L.WRITES]), p, part_head, part_next, slot_row)
        else:
            if by_row:
                sims = cosine.cosines(self.mat[:high], query)
            else:
                m = partition_rows(p, part_head, part_next, slot_row, self.scratch)
                sims = cosine.cosines(self.mat[self.scratch[:m]], query)
            slot, at = best_slot(p, sims, by_row, part_head, part_next, slot_row)
            raw = float(sims[at])
        if raw < self.floor:
            return i, -1, float("nan"), float("nan"), 0
        smap = self.spec.similarity_map
        sim = smap.apply(raw) if smap is not None else raw  # as CacheStore.access maps it
        return i, int(slot), raw, sim, self.spec.table.select(sim)

