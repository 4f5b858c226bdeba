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


# Top-level fields of each profile kind (profiles/README.md); anything else is a typo or a unit
# mistake (`read_latency_ms`) that would otherwise be ignored silently.
PROFILE_FIELDS = {
    "latency": ("kind", "provenance", "entries"),
    "storage": ("kind", "provenance", "tiers"),
    "frontend": ("kind", "provenance", "embed_s", "search_base_s", "search_per_vector_s"),
    "cost": ("kind", "provenance", "gpu_hour_usd", "storage_gb_month_usd", "serverless_gpu_second_usd"),
    "quality": ("kind", "provenance", "metric", "by_k", "bins", "by_k_bin", "target", "thresholds", "by_outcome"),
    "similarity_map": ("kind", "version", "embedder", "target", "provenance", "fit", "x", "y"),
}


def check_fields(file: Path, where: str, data: dict[Any, Any], known: tuple[str, ...] | frozenset[str]) -> None:
    """Unknown keys in a profile mapping are errors naming the field (units are part of the names)."""
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        name = f"{where}.{unknown[0]}" if where else unknown[0]
        raise InputError(f"{file}: field '{name}': unknown field (units are part of the names: *_s seconds, "
                         f"*_bytes bytes); known: {', '.join(sorted(known))}")


def check_provenance(file: Path, prov: Any) -> None:
    if not isinstance(prov, dict) or prov.get("type") not in PROVENANCE_TYPES:
        raise InputError(f"{file}: field 'provenance.type': expected one of {PROVENANCE_TYPES}")
    for key in PROVENANCE_FIELDS[prov["type"]]:
        if not prov.get(key):
            raise InputError(f"{file}: field 'provenance.{key}': required for {prov['type']} profiles")


def read_profile(path: str, kind: str) -> tuple[Path, dict[str, Any]]:
    if not str(path).strip():
        raise InputError(f"{kind} profile: empty path")
    file = resolve(path)
    data = read_yaml_mapping(file, f"{kind} profile", InputError, shown=path)
    if data.get("kind") != kind:
        raise InputError(f"{file}: field 'kind': expected {kind!r}, got {data.get('kind')!r}")
    check_fields(file, "", data, PROFILE_FIELDS[kind])
    check_provenance(file, data.get("provenance"))
    return file, data


def profile_number(file: Path, where: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{file}: field '{where}': expected a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        sign = "positive" if positive else "non-negative"
        raise InputError(f"{file}: field '{where}': expected a {sign} number, got {value}")
    return float(value)
