"""Strict loading of nested frozen dataclasses from YAML data: unknown keys and wrong types are errors."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from sim.errors import ConfigError

T = TypeVar("T")

#: integers in configs must fit a signed 64-bit integer (numpy, parquet and SeedSequence limits);
#: each key's own sensible bound is checked in its dataclass's ``problems()``
INT_LIMIT = 2**63 - 1


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, str(tp)
    )


#: "not this type" (None is a value)
_NO = object()
#: scalar schema types: how a YAML value is accepted as each (a bool is no integer; an integer is a number)
_SCALARS: dict[Any, Callable[[Any], Any]] = {
    type(None): lambda v: None if v is None else _NO,
    bool: lambda v: v if isinstance(v, bool) else _NO,
    int: lambda v: v if isinstance(v, int) and not isinstance(v, bool) else _NO,
    float: lambda v: float(v) if isinstance(v, int | float) and not isinstance(v, bool) else _NO,
    str: lambda v: v if isinstance(v, str) else _NO,
}


def _check_number(value: Any, path: str) -> None:
    # NaN compares false with every bound and infinity passes ">= 0": neither is a setting.
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: expected a finite number, got {value}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_LIMIT:
        raise ConfigError(f"{path}: expected an integer of at most 2**63 - 1 in size, got {value}")


def _convert(value: Any, tp: Any, path: str) -> Any:
    _check_number(value, path)
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return _convert(value, arg, path)
            except ConfigError:
                continue
    elif origin is typing.Literal:
        if value in get_args(tp):
            return value
    elif origin is tuple:
        (item_tp, _ellipsis) = get_args(tp)
        if isinstance(value, list | tuple):
            return tuple(_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value))
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return build(typing.cast(type, tp), value, path)
    elif tp in _SCALARS:
        out = _SCALARS[tp](value)
        if out is not _NO:
            return out
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported schema type {tp} at {path}")
    raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")


def build(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; missing keys take defaults, unknown keys are errors."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{prefix}{key}: unknown key (known here: {known})")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{prefix}{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}: required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "problems", None)
    if check is not None:
        for key, expected in check():
            raise ConfigError(f"{prefix}{key}: expected {expected}")
    return obj


def to_data(obj: Any) -> Any:
    """The plain-YAML form of a config object (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_data(v) for v in obj]
    return obj


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating intermediate mappings."""
    parts = dotted.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is not a mapping, cannot set {dotted}")
        node = child
    node[parts[-1]] = value
