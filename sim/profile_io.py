"""Reading profile files: the provenance every profile must carry, and strict numbers.

Below both sim/hardware (latency, storage, frontend, cost) and sim/quality, so neither reads the
other's files through it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sim.errors import InputError
from sim.fileio import read_yaml_mapping
from sim.paths import resolve

PROVENANCE_TYPES = ("measured", "published")
# What a provenance block must say, by type (profiles/README.md documents each field).
PROVENANCE_FIELDS = {
    "measured": ("command", "date", "hardware", "versions"),
    "published": ("source", "says"),
}


def read_profile(path: str, kind: str) -> tuple[Path, dict[str, Any]]:
    file = resolve(path)
    data = read_yaml_mapping(file, f"{kind} profile", InputError, shown=path)
    if data.get("kind") != kind:
        raise InputError(f"{file}: field 'kind': expected {kind!r}, got {data.get('kind')!r}")
    prov = data.get("provenance")
    if not isinstance(prov, dict) or prov.get("type") not in PROVENANCE_TYPES:
        raise InputError(f"{file}: field 'provenance.type': expected one of {PROVENANCE_TYPES}")
    for key in PROVENANCE_FIELDS[prov["type"]]:
        if not prov.get(key):
            raise InputError(f"{file}: field 'provenance.{key}': required for {prov['type']} profiles")
    return file, data


def profile_number(file: Path, where: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InputError(f"{file}: field '{where}': expected a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        sign = "positive" if positive else "non-negative"
        raise InputError(f"{file}: field '{where}': expected a {sign} number, got {value}")
    return float(value)
