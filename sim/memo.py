"""A one-entry memo for work repeated by every point of a sweep in one process (requests, lists, their keys).

The value is kept with the objects it was computed from (``pin``): a later call hits only when it passes
those very objects (``is``, not equality: no array is compared or hashed) and an equal ``key``, so a hit can
never be stale. One entry: a sweep varies policy and capacity over one trace, and memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Memo(Generic[T]):
    def __init__(self) -> None:
        self._key: Hashable = None
        self._pin: tuple[Any, ...] = ()
        self._value: T | None = None
        self.hits = 0

    def get(self, key: Hashable, pin: Sequence[Any], make: Callable[[], T]) -> T:
        pinned = tuple(pin)
        if self._value is not None and self._key == key and len(pinned) == len(self._pin) \
                and all(a is b for a, b in zip(pinned, self._pin, strict=True)):
            self.hits += 1
            return self._value
        self._value = None  # drop the old value before making the new one (memory)
        value = make()
        self._key, self._pin, self._value = key, pinned, value
        return value
