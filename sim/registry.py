"""One registry per extension point: the YAML name, the registry key and the file name are the same string."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from sim.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; registering a name twice is an error, never a silent overwrite."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise RegistryError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names())
            raise RegistryError(f"unknown {self.kind} '{name}'; known: {known}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._items))

    def __contains__(self, name: object) -> bool:
        return name in self._items
