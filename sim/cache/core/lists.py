"""The core's orderings: a circular doubly linked list over items (FIFO, LRU, and never-hit items of LFU and
LCBFU) and a keyed binary min-heap with a position index (items ordered by (a, b, c, d), d unique).

Keys live beside the item at its heap position, not by item id, so sifting reads neighbouring memory.
"""

from __future__ import annotations

from typing import Any

from sim.cache.core.jit import jit
from sim.cache.core.layout import H_A, H_C, H_D, H_ITEM, HEAP_SIZE, I_NEXT, I_POS, I_PREV


@jit
def list_append(item: Any, x: int) -> None:
    sent = item.shape[1] - 1
    last = item[I_PREV, sent]
    item[I_NEXT, last] = x
    item[I_PREV, x] = last
    item[I_NEXT, x] = sent
    item[I_PREV, sent] = x


@jit
def list_unlink(item: Any, x: int) -> None:
    a, b = item[I_PREV, x], item[I_NEXT, x]
    item[I_NEXT, a] = b
    item[I_PREV, b] = a


@jit
def list_insert_after(item: Any, t: int, x: int) -> None:
    after = item[I_NEXT, t]
    item[I_NEXT, t] = x
    item[I_PREV, x] = t
    item[I_NEXT, x] = after
    item[I_PREV, after] = x


@jit
def key_less(a1: Any, b1: Any, c1: Any, d1: Any, a2: Any, b2: Any, c2: Any, d2: Any) -> bool:
    if a1 != a2:
        return bool(a1 < a2)
    if b1 != b2:
        return bool(b1 < b2)
    if c1 != c2:
        return bool(c1 < c2)
    return bool(d1 < d2)


@jit
def _move(heap: Any, heap_b: Any, item: Any, src: int, dst: int) -> None:
    x = heap[H_ITEM, src]
    heap[H_ITEM, dst] = x
    heap[H_A, dst] = heap[H_A, src]
    heap_b[dst] = heap_b[src]
    heap[H_C, dst] = heap[H_C, src]
    heap[H_D, dst] = heap[H_D, src]
    item[I_POS, x] = dst


@jit
def _place(heap: Any, heap_b: Any, item: Any, j: int, x: int, a: int, b: float, c: int, d: int) -> None:
    heap[H_ITEM, j] = x
    heap[H_A, j] = a
    heap_b[j] = b
    heap[H_C, j] = c
    heap[H_D, j] = d
    item[I_POS, x] = j


@jit
def sift_up(heap: Any, heap_b: Any, item: Any, j: int) -> None:
    x, a, b, c, d = heap[H_ITEM, j], heap[H_A, j], heap_b[j], heap[H_C, j], heap[H_D, j]
    while j > 0:
        parent = (j - 1) >> 1
        if not key_less(a, b, c, d, heap[H_A, parent], heap_b[parent], heap[H_C, parent], heap[H_D, parent]):
            break
        _move(heap, heap_b, item, parent, j)
        j = parent
    _place(heap, heap_b, item, j, x, a, b, c, d)


@jit
def sift_down(heap: Any, heap_b: Any, item: Any, j: int, size: int) -> None:
    x, a, b, c, d = heap[H_ITEM, j], heap[H_A, j], heap_b[j], heap[H_C, j], heap[H_D, j]
    while True:
        child = 2 * j + 1
        if child >= size:
            break
        r = child + 1
        if r < size and key_less(heap[H_A, r], heap_b[r], heap[H_C, r], heap[H_D, r],
                                 heap[H_A, child], heap_b[child], heap[H_C, child], heap[H_D, child]):
            child = r
        if not key_less(heap[H_A, child], heap_b[child], heap[H_C, child], heap[H_D, child], a, b, c, d):
            break
        _move(heap, heap_b, item, child, j)
        j = child
    _place(heap, heap_b, item, j, x, a, b, c, d)


@jit
def heap_push(heap: Any, heap_b: Any, item: Any, scal: Any, x: int, a: int, b: float, c: int, d: int) -> None:
    j = scal[HEAP_SIZE]
    scal[HEAP_SIZE] = j + 1
    _place(heap, heap_b, item, j, x, a, b, c, d)
    sift_up(heap, heap_b, item, j)


@jit
def heap_remove(heap: Any, heap_b: Any, item: Any, scal: Any, x: int) -> None:
    size = scal[HEAP_SIZE] - 1
    scal[HEAP_SIZE] = size
    j = item[I_POS, x]
    if j == size:
        return
    _move(heap, heap_b, item, size, j)
    parent = (j - 1) >> 1
    if j > 0 and key_less(heap[H_A, j], heap_b[j], heap[H_C, j], heap[H_D, j],
                          heap[H_A, parent], heap_b[parent], heap[H_C, parent], heap[H_D, parent]):
        sift_up(heap, heap_b, item, j)
    else:
        sift_down(heap, heap_b, item, j, size)
