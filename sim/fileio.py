"""File helpers shared by loaders and writers: strict YAML mapping reads and atomic writes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from sim.errors import InputError, SimError


def read_yaml_mapping(file: Path, what: str, error: type[SimError], shown: str | Path | None = None) -> dict[str, Any]:
    """The YAML mapping in ``file``; a missing file, bad YAML or another top-level type raise ``error``
    naming the file (``shown``: how to name it when not found, e.g. the path as the user wrote it)."""
    try:
        data = yaml.safe_load(file.read_text())
    except FileNotFoundError:
        raise error(f"{shown if shown is not None else file}: {what} not found") from None
    except yaml.YAMLError as exc:
        raise error(f"{file}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{file}: expected a mapping at the top level")
    return data


def write_text_atomic(path: Path, text: str) -> None:
    """Write beside ``path`` and rename over it: readers see the old file or the whole new one."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_output_dir(path: Path) -> None:
    """Refuse an output folder that cannot be created or written, before anything is computed:
    an empty path, a path under a file, a name too long, or a parent we may not write in."""
    try:
        if path.exists() and not path.is_dir():
            raise InputError(f"{path}: output path exists and is not a folder")
        ancestor = path
        while not ancestor.exists():
            if len(ancestor.name.encode()) > 255:
                raise InputError(f"{path}: name too long ({len(ancestor.name.encode())} bytes; at most 255)")
            ancestor = ancestor.parent
    except OSError as exc:  # e.g. ENAMETOOLONG from stat
        raise InputError(f"{path}: not a usable output path ({exc.strerror or exc})") from None
    if not ancestor.is_dir():
        raise InputError(f"{path}: cannot create a folder under {ancestor}, which is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{path}: no permission to write in {ancestor}")


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an operating-system failure while writing ``path`` (disk full, permission, name too long)
    into one line naming it."""
    try:
        yield
    except OSError as exc:
        raise InputError(f"{exc.filename or path}: cannot write ({exc.strerror or exc})") from None
