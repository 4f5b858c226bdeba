"""The compiled policies' keys, beside their reference files in sim/cache/policies/ (same orders, same ties).

FIFO/LRU order items on the list. LFU and LCBFU keep items never hit since admission (key a = 0, below every
hit item's, since K >= 1) on the list in key order and move them to the heap on their first hit, so most
evictions cost O(1). LCBFU-DA's new items start at K + L, so they go to the heap at once.
"""

from __future__ import annotations

from typing import Any

from sim.cache.core.jit import jit
from sim.cache.core.layout import (
    AGE,
    H_A,
    H_C,
    H_D,
    H_ITEM,
    HEAP_SIZE,
    I_NEXT,
    I_POS,
    I_PREV,
    I_SEQ,
    I_USES,
    INIT_USES,
    POLICY,
    SEQ,
)
from sim.cache.core.lists import heap_push, heap_remove, list_append, list_insert_after, list_unlink, sift_down
from sim.cache.core.support import POLICY_CODES

FIFO, LRU, LFU, LCBFU, LCBFU_DA = (POLICY_CODES[name] for name in ("fifo", "lru", "lfu", "lcbfu", "lcbfu_da"))


@jit
def on_insert(conf: Any, item: Any, item_t: Any, heap: Any, heap_b: Any, scal: Any, x: int, k: int,
              now: float, ks: Any) -> None:
    """A new item (noise at K = ``k``, or a whole prompt with k = 0) admitted at ``now``."""
    policy = conf[POLICY]
    if policy == FIFO or policy == LRU:
        list_append(item, x)
        return
    scal[SEQ] += 1
    item[I_POS, x] = -1  # not in the heap
    if policy == LFU:  # (0, admission sequence): admission order
        list_append(item, x)
        return
    item[I_SEQ, x] = scal[SEQ]
    item_t[x] = now
    if policy == LCBFU_DA:  # LCBFU-DA: (K + L, admission time, K, admission sequence), the admitting miss is a use
        item[I_USES, x] = 1
        heap_push(heap, heap_b, item, scal, x, k + scal[AGE], now, k, scal[SEQ])
        return
    uses = conf[INIT_USES]
    item[I_USES, x] = uses
    if uses > 0:  # LCBFU counting the generating miss: (K x uses, admission time, K, admission sequence)
        heap_push(heap, heap_b, item, scal, x, k * uses, now, k, scal[SEQ])
        return
    # LCBFU as published: (0, admission time, K, admission sequence). Admission times never go back, so only
    # items admitted at this same time with a larger K can sit after the new one.
    nk = len(ks)
    sent = item.shape[1] - 1
    t = item[I_PREV, sent]
    while t != sent and item_t[t] == now and ks[t % nk] > k:
        t = item[I_PREV, t]
    list_insert_after(item, t, x)


@jit
def on_hit(policy: int, item: Any, item_t: Any, heap: Any, heap_b: Any, scal: Any, x: int, k: int) -> None:
    """A hit served from item ``x`` (K = ``k`` for a noise)."""
    if policy == FIFO:
        return
    if policy == LRU:
        list_unlink(item, x)
        list_append(item, x)
        return
    j = item[I_POS, x]
    if policy == LFU:  # (uses, last-use sequence): ties to the least recently used
        scal[SEQ] += 1
        if j < 0:
            list_unlink(item, x)
            heap_push(heap, heap_b, item, scal, x, 1, 0.0, 0, scal[SEQ])
        else:
            heap[H_A, j] += 1
            heap[H_D, j] = scal[SEQ]
            sift_down(heap, heap_b, item, j, scal[HEAP_SIZE])  # keys only grow on a hit
        return
    uses = item[I_USES, x] + 1
    item[I_USES, x] = uses
    if policy == LCBFU_DA:  # K x uses + L; L never decreases, so the key only grows
        heap[H_A, j] = heap[H_C, j] * uses + scal[AGE]
        sift_down(heap, heap_b, item, j, scal[HEAP_SIZE])
        return
    if j < 0:  # LCBFU: (K x uses, admission time, K, admission sequence)
        list_unlink(item, x)
        heap_push(heap, heap_b, item, scal, x, k * uses, item_t[x], k, item[I_SEQ, x])
    else:
        heap[H_A, j] = heap[H_C, j] * uses
        sift_down(heap, heap_b, item, j, scal[HEAP_SIZE])


@jit
def evict_one(policy: int, item: Any, heap: Any, heap_b: Any, scal: Any) -> int:
    """Remove the policy's victim from the orderings and return it: the list's head (FIFO/LRU order, or an
    item never hit, which precedes every heap item), else the heap's minimum."""
    sent = item.shape[1] - 1
    x = item[I_NEXT, sent]
    if x != sent:
        list_unlink(item, x)
        return x
    x = heap[H_ITEM, 0]
    if policy == LCBFU_DA:  # L: the score of the last evicted item (LFU-DA's cache age)
        scal[AGE] = max(scal[AGE], heap[H_A, 0])
    heap_remove(heap, heap_b, item, scal, x)
    return x
