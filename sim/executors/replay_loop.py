"""The sequential replay's inner loop over integer arrays: lookups, holes, admission, four eviction policies.

FIFO/LRU are intrusive doubly linked lists over preallocated item arrays; LFU/LCBFU keep items never hit
since admission on such a list (in key order) and the others in a binary heap with a position index.

Compiled with numba when it is installed (and NUMBA_DISABLE_JIT is unset); the same code runs as plain
Python otherwise, only slower. Semantics are sim/cache/store.py's and sim/cache/policies/'s, checked by
tests/test_fast_sequential.py against the reference ``sequential`` executor, record by record.

Layout: a cached prompt (an *entry*) lives in a recycled *slot*; its noises are items
``slot * nk + kidx`` (unit noise) or the slot itself (unit prompt). Each slot is on two lists ordered by
entry id: its (partition, prompt) list, whose head answers lookups (several entries of one prompt: the
oldest), and its partition's list, which the exact fallback scans. With ``with_rows`` (candidate lists,
which can fall back), every cached prompt's vector also sits in a *row* of a contiguous matrix, one row
per distinct cached prompt (shared by its entries in every partition, reference-counted, recycled), so
the fallback's cosines are one pass over ``mat[:rows_used]`` with no gather.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

try:
    import numba

    jit: Callable[[Any], Any] = numba.njit(cache=True, nogil=True)
    COMPILED = not getattr(numba.config, "DISABLE_JIT", False)
except ImportError:  # pragma: no cover - numba is pinned in requirements.txt
    def jit(fn: Any) -> Any:
        return fn

    COMPILED = False

FIFO, LRU, LFU, LCBFU = range(4)
POLICY_CODES = {"fifo": FIFO, "lru": LRU, "lfu": LFU, "lcbfu": LCBFU}
# outcome codes of sim/scenario/records.py
_MISS, _APPROX_HIT, _HOLE_HIT = 0, 1, 2
# scal[]: the loop's scalar state, kept in an array so a run can stop for an exact fallback and resume
# (ROW_TOP: free rows on the row_free stack; ROW_HIGH: rows [0, ROW_HIGH) were ever written)
USED_NOISES, USED_BYTES, NEXT_ENTRY, SEQ, HEAP_SIZE, FREE_TOP, ROW_TOP, ROW_HIGH = range(8)
NUM_SCALARS = 8


# -- ordered lists (FIFO, LRU): circular doubly linked over items, sentinel = the last index ------------
@jit
def _list_append(nxt: Any, prv: Any, x: int) -> None:
    sent = len(nxt) - 1
    last = prv[sent]
    nxt[last] = x
    prv[x] = last
    nxt[x] = sent
    prv[sent] = x


@jit
def _list_unlink(nxt: Any, prv: Any, x: int) -> None:
    a, b = prv[x], nxt[x]
    nxt[a] = b
    prv[b] = a


# -- keyed min-heap (LFU, LCBFU): keys (a, b, c, d) compared in order, d unique. Keys live beside the item
# at its heap position (not by item id), so sifting reads neighbouring memory.
@jit
def _kless(a1: Any, b1: Any, c1: Any, d1: Any, a2: Any, b2: Any, c2: Any, d2: Any) -> bool:
    if a1 != a2:
        return bool(a1 < a2)
    if b1 != b2:
        return bool(b1 < b2)
    if c1 != c2:
        return bool(c1 < c2)
    return bool(d1 < d2)


@jit
def _hmove(heap: Any, pos: Any, ka: Any, kb: Any, kc: Any, kd: Any, src: int, dst: int) -> None:
    x = heap[src]
    heap[dst] = x
    ka[dst] = ka[src]
    kb[dst] = kb[src]
    kc[dst] = kc[src]
    kd[dst] = kd[src]
    pos[x] = dst


@jit
def _sift_up(heap: Any, pos: Any, ka: Any, kb: Any, kc: Any, kd: Any, j: int) -> None:
    x, xa, xb, xc, xd = heap[j], ka[j], kb[j], kc[j], kd[j]
    while j > 0:
        parent = (j - 1) >> 1
        if not _kless(xa, xb, xc, xd, ka[parent], kb[parent], kc[parent], kd[parent]):
            break
        _hmove(heap, pos, ka, kb, kc, kd, parent, j)
        j = parent
    heap[j], ka[j], kb[j], kc[j], kd[j] = x, xa, xb, xc, xd
    pos[x] = j


@jit
def _sift_down(heap: Any, pos: Any, ka: Any, kb: Any, kc: Any, kd: Any, j: int, size: int) -> None:
    x, xa, xb, xc, xd = heap[j], ka[j], kb[j], kc[j], kd[j]
    while True:
        child = 2 * j + 1
        if child >= size:
            break
        r = child + 1
        if r < size and _kless(ka[r], kb[r], kc[r], kd[r], ka[child], kb[child], kc[child], kd[child]):
            child = r
        if not _kless(ka[child], kb[child], kc[child], kd[child], xa, xb, xc, xd):
            break
        _hmove(heap, pos, ka, kb, kc, kd, child, j)
        j = child
    heap[j], ka[j], kb[j], kc[j], kd[j] = x, xa, xb, xc, xd
    pos[x] = j


@jit
def _heap_remove(heap: Any, pos: Any, ka: Any, kb: Any, kc: Any, kd: Any, x: int, scal: Any) -> None:
    size = scal[HEAP_SIZE] - 1
    scal[HEAP_SIZE] = size
    j = pos[x]
    if j == size:
        return
    _hmove(heap, pos, ka, kb, kc, kd, size, j)
    parent = (j - 1) >> 1
    if j > 0 and _kless(ka[j], kb[j], kc[j], kd[j], ka[parent], kb[parent], kc[parent], kd[parent]):
        _sift_up(heap, pos, ka, kb, kc, kd, j)
    else:
        _sift_down(heap, pos, ka, kb, kc, kd, j, size)


@jit
def _heap_push(heap: Any, pos: Any, ka: Any, kb: Any, kc: Any, kd: Any, scal: Any, x: int,
               a: int, b: float, c: int, d: int) -> None:
    j = scal[HEAP_SIZE]
    scal[HEAP_SIZE] = j + 1
    heap[j], ka[j], kb[j], kc[j], kd[j] = x, a, b, c, d
    _sift_up(heap, pos, ka, kb, kc, kd, j)


@jit
def _insert(policy: int, x: int, k: int, now: float, scal: Any, nxt: Any, prv: Any, pos: Any,
            uses: Any, inow: Any, iseq: Any, ks: Any) -> None:
    """A new item. LFU and LCBFU keep items never hit since admission (key a = 0, below every hit item's)
    on the ordered list, in key order, and move them to the heap on their first hit: most evictions then
    cost O(1)."""
    if policy == FIFO or policy == LRU:
        _list_append(nxt, prv, x)
        return
    scal[SEQ] += 1
    pos[x] = -1  # not in the heap
    if policy == LFU:  # (0, admission sequence): admission order
        _list_append(nxt, prv, x)
        return
    # LCBFU: (0, admission time, K, admission sequence). Arrivals never go back, so only items admitted
    # at this same time with a larger K can sit after the new one (ties in arrival time).
    uses[x] = 0
    inow[x] = now
    iseq[x] = scal[SEQ]
    nk = len(ks)
    sent = len(nxt) - 1
    t = prv[sent]
    while t != sent and inow[t] == now and ks[t % nk] > k:
        t = prv[t]
    after = nxt[t]
    nxt[t] = x
    prv[x] = t
    nxt[x] = after
    prv[after] = x


@jit
def partition_rows(p: int, part_head: Any, part_next: Any, slot_row: Any, out: Any) -> int:
    """Fill ``out`` with the rows of the slots cached in partition ``p`` (oldest entry first); returns how
    many."""
    m = 0
    s = part_head[p]
    while s >= 0:
        out[m] = slot_row[s]
        m += 1
        s = part_next[s]
    return m


@jit
def best_slot(p: int, sims: Any, by_row: bool, part_head: Any, part_next: Any, slot_row: Any) -> tuple[int, int]:
    """The exact top-1 of partition ``p`` (which holds a slot): (its slot, its position in ``sims``) for the
    highest cosine, ties to the smallest entry id.

    ``sims`` holds a cosine per row (``by_row``) or per slot of the partition in list order
    (partition_rows's). The list is oldest entry first, so only a strictly higher cosine replaces the best."""
    best = at = -1
    top = sims[0]
    m = 0
    s = part_head[p]
    while s >= 0:
        j = slot_row[s] if by_row else m
        if best < 0 or sims[j] > top:
            best, at, top = s, j, sims[j]
        m += 1
        s = part_next[s]
    return best, at


@jit
def screen_near(p: int, approx: Any, old: int, at_request: int, row_stamp: Any, mat: Any, query: Any,
                margin: float, part_head: Any, part_next: Any, slot_row: Any, vals: Any, out: Any) -> int:
    """Rows of partition ``p``'s cached slots whose screened cosine is within ``margin`` of the best one.

    ``approx`` holds a screened cosine per row for rows below ``old`` not rewritten since request
    ``at_request`` (``row_stamp``); other rows are screened here, a float32 sum in index order (one more
    summation order, so within cosine.screen_margin of the canonical value). Writes the rows to ``out``
    (``vals`` is scratch, one value per slot of the partition) and returns how many (a row may repeat)."""
    dim = mat.shape[1]
    top = -np.inf
    m = 0
    s = part_head[p]
    while s >= 0:
        r = slot_row[s]
        if r < old and row_stamp[r] < at_request:
            v = approx[r]
        else:
            acc = np.float32(0.0)
            for d in range(dim):
                acc += mat[r, d] * query[d]
            v = acc
        vals[m] = v
        if v > top:
            top = v
        m += 1
        s = part_next[s]
    k = 0
    m = 0
    s = part_head[p]
    while s >= 0:
        if vals[m] >= top - margin:
            out[k] = slot_row[s]
            k += 1
        m += 1
        s = part_next[s]
    return k


@jit
def screen_rows(approx: Any, old: int, at_request: int, row_stamp: Any, row_refs: Any, high: int, mat: Any,
                query: Any, margin: float, vals: Any, out: Any) -> int:
    """screen_near for a store with one partition: its cached prompts are the rows still referenced, so the
    rows [0, high) are scanned in order instead of walking the slots' list.

    The screened value is computed inline here as in screen_near, on purpose: moving it into a shared
    jitted helper (also with inline="always") made FIFO 15,000 on the 2M trace 49 s -> 104-117 s, measured."""
    dim = mat.shape[1]
    top = -np.inf
    for r in range(high):
        if row_refs[r] <= 0:
            continue
        if r < old and row_stamp[r] < at_request:
            v = approx[r]
        else:
            acc = np.float32(0.0)
            for d in range(dim):
                acc += mat[r, d] * query[d]
            v = acc
        vals[r] = v
        if v > top:
            top = v
    k = 0
    for r in range(high):
        if row_refs[r] > 0 and vals[r] >= top - margin:
            out[k] = r
            k += 1
    return k


@jit
def best_row(rows: Any, canon: Any, row_prompt: Any, prompt_pp: Any, pp_head: Any, slot_entry: Any,
             ) -> tuple[int, Any]:
    """best_slot of a one-partition store over the canonical cosines ``canon`` of ``rows`` only: a row's
    candidate is its prompt's oldest cached entry; the highest cosine wins, ties to the smallest entry id."""
    best = -1
    top = np.float32(0.0)
    best_entry = 0
    for k in range(len(rows)):
        s = pp_head[prompt_pp[row_prompt[rows[k]]]]
        e = slot_entry[s]
        if best < 0 or canon[k] > top or (canon[k] == top and e < best_entry):
            best, top, best_entry = s, canon[k], e
    return best, top


@jit
def best_near(p: int, rows: Any, canon: Any, row_mark: Any, part_head: Any, part_next: Any,
              slot_row: Any) -> tuple[int, Any]:
    """``best_slot`` over the canonical cosines ``canon`` of ``rows`` only (every other row of the partition
    is known to be lower): (slot, cosine), ties to the oldest entry. ``row_mark`` is -1 everywhere, and is
    left so."""
    for k in range(len(rows)):
        row_mark[rows[k]] = k
    best = -1
    top = np.float32(0.0)
    s = part_head[p]
    while s >= 0:
        k = row_mark[slot_row[s]]
        if k >= 0 and (best < 0 or canon[k] > top):
            best, top = s, canon[k]
        s = part_next[s]
    for k in range(len(rows)):
        row_mark[rows[k]] = -1
    return best, top


@jit
def _release_row(r: int, scal: Any, prompt_row: Any, row_prompt: Any, row_refs: Any, row_free: Any) -> None:
    row_refs[r] -= 1
    if row_refs[r] == 0:
        prompt_row[row_prompt[r]] = -1
        row_free[scal[ROW_TOP]] = r
        scal[ROW_TOP] += 1


@jit
def replay(start: int, forced_i: int, forced_slot: int, forced_raw: float, forced_sim: float, forced_k: int,
           arrival: Any, num_steps: Any, part: Any, req_pp: Any, noise_bytes: Any,
           off: Any, cand_pp: Any, cand_sim32: Any, cand_raw: Any, cand_mapped: Any, cand_k: Any, truncated: Any,
           ks: Any, vectors: Any, pp_prompt: Any,
           policy: int, by_prompt: bool, cap_noises: int, cap_bytes: int, with_rows: bool,
           scal: Any, slot_entry: Any, slot_mask: Any, slot_pp: Any, slot_part: Any, slot_bytes: Any,
           pp_head: Any, pp_tail: Any, pp_next: Any, pp_prev: Any,
           part_head: Any, part_tail: Any, part_next: Any, part_prev: Any, part_count: Any, free: Any,
           nxt: Any, prv: Any, heap: Any, pos: Any, ka: Any, kb: Any, kc: Any, kd: Any, uses: Any,
           inow: Any, iseq: Any, mat: Any, prompt_row: Any, row_prompt: Any, row_refs: Any, row_free: Any,
           slot_row: Any, row_stamp: Any,
           r_outcome: Any, r_ksel: Any, r_kused: Any, r_hole: Any, r_matched: Any, r_sim: Any, r_raw: Any,
           r_admitted: Any, r_evicted: Any, r_gpu: Any, r_admit_s: Any) -> int:
    """Replay requests ``start``.. in order; return the first one that needs an exact fallback (its
    candidate list ran out while prompts are cached), or the number of requests when all are done.

    Request ``forced_i`` takes the lookup result given (the caller's exact fallback) instead of its list.
    """
    n = len(arrival)
    nk = len(ks)
    full_mask = (1 << nk) - 1
    for i in range(start, n):
        now = arrival[i]
        p = part[i]
        # -- lookup: the first candidate with a cached entry; ties at its similarity go to the oldest entry
        slot = -1
        raw = sim = float("nan")
        ksel = 0
        if i == forced_i:
            slot, raw, sim, ksel = forced_slot, forced_raw, forced_sim, forced_k
        elif part_count[p] > 0:
            hi = off[i + 1]
            j = off[i]
            while j < hi and pp_head[cand_pp[j]] < 0:
                j += 1
            if j < hi:
                slot = pp_head[cand_pp[j]]
                best_entry = slot_entry[slot]
                tied = cand_sim32[j]
                jj = j + 1
                while jj < hi and cand_sim32[jj] == tied:
                    s2 = pp_head[cand_pp[jj]]
                    if s2 >= 0 and slot_entry[s2] < best_entry:
                        slot = s2
                        best_entry = slot_entry[s2]
                    jj += 1
                if jj == hi and truncated[i]:
                    return i  # prompts beyond the cap may tie
                raw, sim, ksel = cand_raw[j], cand_mapped[j], cand_k[j]
            elif truncated[i]:
                return i
        steps = num_steps[i]
        r_sim[i] = sim
        r_raw[i] = raw
        r_ksel[i] = ksel
        if slot >= 0:
            r_matched[i] = slot_entry[slot]
        if ksel > 0:
            k_asked = min(ksel, steps - 1)
            mask = slot_mask[slot]
            kidx = -1
            for t in range(nk - 1, -1, -1):
                if (mask >> t) & 1 and ks[t] <= k_asked:
                    kidx = t
                    break
            k_used = ks[kidx] if kidx >= 0 else 0
            r_hole[i] = k_used != k_asked
            if k_used > 0:
                r_kused[i] = k_used
                r_gpu[i] = steps - k_used
                r_outcome[i] = _APPROX_HIT if k_used == k_asked else _HOLE_HIT
                x = slot if by_prompt else slot * nk + kidx
                if policy == LRU:
                    _list_unlink(nxt, prv, x)
                    _list_append(nxt, prv, x)
                elif policy == LFU:  # (uses, last-use sequence): ties to the least recently used
                    scal[SEQ] += 1
                    hj = pos[x]
                    if hj < 0:
                        _list_unlink(nxt, prv, x)
                        _heap_push(heap, pos, ka, kb, kc, kd, scal, x, 1, 0.0, 0, scal[SEQ])
                    else:
                        ka[hj] += 1
                        kd[hj] = scal[SEQ]
                        _sift_down(heap, pos, ka, kb, kc, kd, hj, scal[HEAP_SIZE])  # keys only grow on a hit
                elif policy == LCBFU:  # (K x uses, admission time, K, admission sequence)
                    uses[x] += 1
                    hj = pos[x]
                    if hj < 0:
                        _list_unlink(nxt, prv, x)
                        _heap_push(heap, pos, ka, kb, kc, kd, scal, x, k_used, inow[x], k_used, iseq[x])
                    else:
                        ka[hj] = kc[hj] * uses[x]
                        _sift_down(heap, pos, ka, kb, kc, kd, hj, scal[HEAP_SIZE])
                continue
        # -- a miss: all N steps, then admit one noise at every cached K (whole group or nothing)
        r_outcome[i] = _MISS
        r_gpu[i] = steps
        nb = noise_bytes[i]
        need_bytes = nk * nb
        if need_bytes == 0:
            continue  # admits nothing (the reference skips admission of zero bytes too)
        r_admit_s[i] = now
        if nk > cap_noises or need_bytes > cap_bytes:
            continue
        evicted = 0
        while scal[USED_NOISES] + nk > cap_noises or scal[USED_BYTES] + need_bytes > cap_bytes:
            # victim chosen before the new group is in, so a prompt never evicts its own noises
            x = nxt[len(nxt) - 1]
            if x != len(nxt) - 1:  # FIFO/LRU order; LFU/LCBFU items never hit, which precede the heap's
                _list_unlink(nxt, prv, x)
            else:
                x = heap[0]
                _heap_remove(heap, pos, ka, kb, kc, kd, x, scal)
            if by_prompt:
                vs = x
                removed = 0
                m = slot_mask[vs]
                while m:
                    removed += m & 1
                    m >>= 1
                slot_mask[vs] = 0
            else:
                vs = x // nk
                slot_mask[vs] &= ~(1 << (x - vs * nk))
                removed = 1
            evicted += removed
            scal[USED_NOISES] -= removed
            scal[USED_BYTES] -= removed * slot_bytes[vs]
            if slot_mask[vs] == 0:  # the prompt leaves the index with its last noise
                q, pn = slot_pp[vs], slot_part[vs]
                a, b = pp_prev[vs], pp_next[vs]
                if a >= 0:
                    pp_next[a] = b
                else:
                    pp_head[q] = b
                if b >= 0:
                    pp_prev[b] = a
                else:
                    pp_tail[q] = a
                a, b = part_prev[vs], part_next[vs]
                if a >= 0:
                    part_next[a] = b
                else:
                    part_head[pn] = b
                if b >= 0:
                    part_prev[b] = a
                else:
                    part_tail[pn] = a
                part_count[pn] -= 1
                if with_rows:
                    _release_row(slot_row[vs], scal, prompt_row, row_prompt, row_refs, row_free)
                free[scal[FREE_TOP]] = vs
                scal[FREE_TOP] += 1
        scal[FREE_TOP] -= 1
        s = free[scal[FREE_TOP]]
        entry = scal[NEXT_ENTRY]
        scal[NEXT_ENTRY] = entry + 1
        q = req_pp[i]
        slot_entry[s] = entry
        slot_mask[s] = full_mask
        slot_pp[s] = q
        slot_part[s] = p
        slot_bytes[s] = nb
        # entry ids grow with admission, so appending keeps both lists oldest-first
        last = pp_tail[q]
        pp_prev[s] = last
        pp_next[s] = -1
        if last >= 0:
            pp_next[last] = s
        else:
            pp_head[q] = s
        pp_tail[q] = s
        last = part_tail[p]
        part_prev[s] = last
        part_next[s] = -1
        if last >= 0:
            part_next[last] = s
        else:
            part_head[p] = s
        part_tail[p] = s
        part_count[p] += 1
        if with_rows:  # the prompt's vector in a row (one copy per distinct cached prompt)
            pr = pp_prompt[q]
            r = prompt_row[pr]
            if r < 0:
                scal[ROW_TOP] -= 1
                r = row_free[scal[ROW_TOP]]
                mat[r, :] = vectors[pr, :]
                row_stamp[r] = i  # the request whose admission wrote the row (batched fallback screens)
                prompt_row[pr] = r
                row_prompt[r] = pr
                if r >= scal[ROW_HIGH]:
                    scal[ROW_HIGH] = r + 1
            row_refs[r] += 1
            slot_row[s] = r
        scal[USED_NOISES] += nk
        scal[USED_BYTES] += need_bytes
        r_admitted[i] = entry
        r_evicted[i] = evicted
        if by_prompt:
            _insert(policy, s, 0, now, scal, nxt, prv, pos, uses, inow, iseq, ks)
        else:
            for t in range(nk):  # ascending K, so FIFO/LRU order a prompt's smaller K first
                _insert(policy, s * nk + t, ks[t], now, scal, nxt, prv, pos, uses, inow, iseq, ks)
    return n
