"""The core's entry points, compiled: one lookup, one admission, and the sequential replay as a loop over both.

Semantics are sim/cache/store.py's (the reference): the nearest cached prompt is the first candidate of the
request's list with a cached entry (ties in cosine to the oldest entry); K from the similarity, capped at the
request's N - 1, holes resolved to the largest cached K' <= K; a hit counts a use of the unit it read; a miss
admits one unit at every cached K, whole or not at all, victims chosen before the new group is in. A list that
runs out while its request's partition holds prompts beyond its cap asks the caller for an exact search
(NEEDS_FALLBACK), whose answer comes back as ``forced`` (request, slot, raw cosine, mapped similarity, K).

Bundles: ``inputs`` (conf, ks, req, off, cand, cand_f, cand_sim32, truncated, vectors, pp_prompt), ``state``
(scal, slot, free, pp, part, item, item_t, heap, heap_b, row, prompt_row, row_free, mat); layout.py says what
each holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.cache.core.jit import jit
from sim.cache.core.keys import evict_one, on_hit, on_insert
from sim.cache.core.layout import (
    BY_PROMPT,
    C_K,
    C_PP,
    CAP_BYTES,
    CAP_NOISES,
    CF_MAPPED,
    CF_RAW,
    DONE,
    FREE_TOP,
    LISTED,
    NEEDS_FALLBACK,
    NEXT_ENTRY,
    P_COUNT,
    P_HEAD,
    P_SCOPE,
    P_SCOPE_COUNT,
    P_TAIL,
    POLICY,
    PP_HEAD,
    PP_TAIL,
    Q_BYTES,
    Q_MAX_K,
    Q_PART,
    Q_PP,
    R_PROMPT,
    R_REFS,
    R_STAMP,
    ROW_HIGH,
    ROW_TOP,
    S_BYTES,
    S_ENTRY,
    S_MASK,
    S_PART,
    S_PART_NEXT,
    S_PART_PREV,
    S_PP,
    S_PP_NEXT,
    S_PP_PREV,
    S_ROW,
    USED_BYTES,
    USED_NOISES,
    WITH_ROWS,
    WRITES,
)


@jit
def lookup(i: int, forced: Any, inputs: Any, state: Any) -> tuple[int, int, float, float, int, int, bool]:
    """(status, matched entry or -1, raw cosine, similarity, K selected, K used, hole) of request i.

    A hit's unit is counted (policy key) here. Status NEEDS_FALLBACK: nothing happened; answer ``forced``."""
    conf, ks, req, off, cand, cand_f, cand_sim32, truncated, _, _ = inputs
    scal, slot, _, pp, part, item, item_t, heap, heap_b, _, _, _, _ = state
    s = -1
    raw = sim = np.nan
    ksel = 0
    if i == forced[0]:
        s, raw, sim, ksel = forced[1], forced[2], forced[3], forced[4]
    elif part[P_COUNT, req[Q_PART, i]] > 0:
        hi = off[i + 1]
        j = off[i]
        while j < hi and pp[PP_HEAD, cand[C_PP, j]] < 0:
            j += 1
        if j < hi:
            s = pp[PP_HEAD, cand[C_PP, j]]
            best_entry = slot[S_ENTRY, s]
            tied = cand_sim32[j]
            jj = j + 1
            while jj < hi and cand_sim32[jj] == tied:  # tied in cosine: the oldest cached entry
                s2 = pp[PP_HEAD, cand[C_PP, jj]]
                if s2 >= 0 and slot[S_ENTRY, s2] < best_entry:
                    s = s2
                    best_entry = slot[S_ENTRY, s2]
                jj += 1
            if jj == hi and truncated[i]:
                return NEEDS_FALLBACK, -1, raw, sim, 0, 0, False  # prompts beyond the cap may tie
            raw, sim, ksel = cand_f[CF_RAW, j], cand_f[CF_MAPPED, j], cand[C_K, j]
        elif truncated[i]:
            return NEEDS_FALLBACK, -1, raw, sim, 0, 0, False
        scal[LISTED] += 1
    entry = slot[S_ENTRY, s] if s >= 0 else -1
    if ksel == 0:
        return DONE, entry, raw, sim, 0, 0, False
    k_asked = min(ksel, req[Q_MAX_K, i])
    nk = len(ks)
    mask = slot[S_MASK, s]
    kidx = -1
    for t in range(nk - 1, -1, -1):
        if (mask >> t) & 1 and ks[t] <= k_asked:
            kidx = t
            break
    if kidx < 0:
        return DONE, entry, raw, sim, ksel, 0, True  # a hole with nothing below it: a miss
    k_used = ks[kidx]
    x = s if conf[BY_PROMPT] else s * nk + kidx
    on_hit(conf[POLICY], item, item_t, heap, heap_b, scal, x, k_used)
    return DONE, entry, raw, sim, ksel, k_used, k_used != k_asked


@jit
def _unlink_slot(s: int, slot: Any, pp: Any, part: Any) -> None:
    """Take slot s off its (partition, prompt) list and its partition's list."""
    q, pn = slot[S_PP, s], slot[S_PART, s]
    a, b = slot[S_PP_PREV, s], slot[S_PP_NEXT, s]
    if a >= 0:
        slot[S_PP_NEXT, a] = b
    else:
        pp[PP_HEAD, q] = b
    if b >= 0:
        slot[S_PP_PREV, b] = a
    else:
        pp[PP_TAIL, q] = a
    a, b = slot[S_PART_PREV, s], slot[S_PART_NEXT, s]
    if a >= 0:
        slot[S_PART_NEXT, a] = b
    else:
        part[P_HEAD, pn] = b
    if b >= 0:
        slot[S_PART_PREV, b] = a
    else:
        part[P_TAIL, pn] = a
    part[P_COUNT, pn] -= 1
    part[P_SCOPE_COUNT, part[P_SCOPE, pn]] -= 1


@jit
def _link_slot(s: int, q: int, p: int, slot: Any, pp: Any, part: Any) -> None:
    """Append slot s to its lists: entry ids grow with admission, so both stay oldest-first."""
    last = pp[PP_TAIL, q]
    slot[S_PP_PREV, s] = last
    slot[S_PP_NEXT, s] = -1
    if last >= 0:
        slot[S_PP_NEXT, last] = s
    else:
        pp[PP_HEAD, q] = s
    pp[PP_TAIL, q] = s
    last = part[P_TAIL, p]
    slot[S_PART_PREV, s] = last
    slot[S_PART_NEXT, s] = -1
    if last >= 0:
        slot[S_PART_NEXT, last] = s
    else:
        part[P_HEAD, p] = s
    part[P_TAIL, p] = s
    part[P_COUNT, p] += 1
    part[P_SCOPE_COUNT, part[P_SCOPE, p]] += 1


@jit
def _remove(x: int, conf: Any, nk: int, state: Any) -> int:
    """Take evicted item x out of its slot; the prompt leaves the index with its last unit. Returns units removed."""
    scal, slot, free, pp, part, _, _, _, _, row, prompt_row, row_free, _ = state
    if conf[BY_PROMPT]:
        s = x
        removed = 0
        m = slot[S_MASK, s]
        while m:
            removed += m & 1
            m >>= 1
        slot[S_MASK, s] = 0
    else:
        s = x // nk
        slot[S_MASK, s] &= ~(1 << (x - s * nk))
        removed = 1
    scal[USED_NOISES] -= removed
    scal[USED_BYTES] -= removed * slot[S_BYTES, s]
    if slot[S_MASK, s] == 0:
        _unlink_slot(s, slot, pp, part)
        if conf[WITH_ROWS]:
            r = slot[S_ROW, s]
            row[R_REFS, r] -= 1
            if row[R_REFS, r] == 0:
                prompt_row[row[R_PROMPT, r]] = -1
                row_free[scal[ROW_TOP]] = r
                scal[ROW_TOP] += 1
        free[scal[FREE_TOP]] = s
        scal[FREE_TOP] += 1
    return removed


@jit
def _row_for(q: int, inputs: Any, state: Any) -> int:
    """The row holding prompt q's vector, written now if no cached entry holds it (one row per distinct prompt)."""
    vectors, pp_prompt = inputs[8], inputs[9]
    scal, row, prompt_row, row_free, mat = state[0], state[9], state[10], state[11], state[12]
    pr = pp_prompt[q]
    r = prompt_row[pr]
    if r < 0:
        scal[ROW_TOP] -= 1
        r = row_free[scal[ROW_TOP]]
        mat[r, :] = vectors[pr, :]
        scal[WRITES] += 1
        row[R_STAMP, r] = scal[WRITES]  # which write this is: a fallback screen rescreens rows written after it
        prompt_row[pr] = r
        row[R_PROMPT, r] = pr
        if r >= scal[ROW_HIGH]:
            scal[ROW_HIGH] = r + 1
    row[R_REFS, r] += 1
    return r


@jit
def admit(i: int, now: float, inputs: Any, state: Any) -> tuple[int, int]:
    """(entry id or -1, units evicted): admit request i's miss, a unit at every cached K, evicting until it fits."""
    conf, ks, req = inputs[0], inputs[1], inputs[2]
    scal, slot, free, pp, part, item, item_t, heap, heap_b = state[:9]
    nk = len(ks)
    nb = req[Q_BYTES, i]
    need_bytes = nk * nb
    cap_noises, cap_bytes = conf[CAP_NOISES], conf[CAP_BYTES]
    if nk > cap_noises or need_bytes > cap_bytes:
        return -1, 0  # larger than the whole cache
    evicted = 0
    policy = conf[POLICY]
    while scal[USED_NOISES] + nk > cap_noises or scal[USED_BYTES] + need_bytes > cap_bytes:
        # victims chosen before the new group is in, so a prompt never evicts its own units
        evicted += _remove(evict_one(policy, item, heap, heap_b, scal), conf, nk, state)
    scal[FREE_TOP] -= 1
    s = free[scal[FREE_TOP]]
    entry = scal[NEXT_ENTRY]
    scal[NEXT_ENTRY] = entry + 1
    q, p = req[Q_PP, i], req[Q_PART, i]
    slot[S_ENTRY, s] = entry
    slot[S_MASK, s] = (1 << nk) - 1
    slot[S_PP, s] = q
    slot[S_PART, s] = p
    slot[S_BYTES, s] = nb
    _link_slot(s, q, p, slot, pp, part)
    if conf[WITH_ROWS]:
        slot[S_ROW, s] = _row_for(q, inputs, state)
    scal[USED_NOISES] += nk
    scal[USED_BYTES] += need_bytes
    if conf[BY_PROMPT]:
        on_insert(conf, item, item_t, heap, heap_b, scal, s, 0, now, ks)
    else:
        for t in range(nk):  # ascending K, so FIFO/LRU order a prompt's smaller K first
            on_insert(conf, item, item_t, heap, heap_b, scal, s * nk + t, ks[t], now, ks)
    return entry, evicted


@jit
def replay(start: int, forced: Any, arrival: Any, inputs: Any, state: Any, outs: Any) -> int:
    """Requests ``start``.. in order, each miss admitted before the next lookup at its arrival time; returns the
    first request that needs an exact fallback, or the number of requests when all are done.

    ``outs``: (k_selected, k_used, hole, matched_entry, similarity, similarity_raw, admitted_entry, num_evicted,
    admit_s) record columns; what a request's outcome is follows from them (the serving mode's rule)."""
    r_ksel, r_kused, r_hole, r_matched, r_sim, r_raw, r_admitted, r_evicted, r_admit_s = outs
    req = inputs[2]
    nk = len(inputs[1])
    n = len(arrival)
    for i in range(start, n):
        status, entry, raw, sim, ksel, k_used, hole = lookup(i, forced, inputs, state)
        if status == NEEDS_FALLBACK:
            return i
        r_matched[i] = entry
        r_raw[i] = raw
        r_sim[i] = sim
        r_ksel[i] = ksel
        r_kused[i] = k_used
        r_hole[i] = hole
        if k_used > 0 or nk * req[Q_BYTES, i] == 0:
            continue  # a hit admits nothing; nor does a miss of zero bytes (the reference skips it too)
        r_admit_s[i] = arrival[i]
        r_admitted[i], r_evicted[i] = admit(i, arrival[i], inputs, state)
    return n
