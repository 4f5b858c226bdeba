"""File helpers shared by loaders and writers: strict YAML mapping reads and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from sim.errors import SimError


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
