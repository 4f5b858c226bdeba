"""Profile files (latency, storage, frontend, cost): strict loading; every file carries provenance."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.errors import InputError
from sim.limits import MAX_BATCH
from sim.profile_io import check_fields, profile_number, read_profile


@dataclass(frozen=True)
class StepLatency:
    """Seconds at one batch size: text encoder + steps x step_s + VAE decode."""

    step_s: float
    text_encoder_s: float
    vae_decode_s: float


@dataclass(frozen=True)
class LatencyTable:
    """Latencies of one (model, GPU, resolution) at the batch sizes measured or published.

    Between measured batch sizes every figure is interpolated linearly; outside them is an error
    (extrapolating a GPU's batching curve is a guess, not a profile).
    """

    source: str
    key: str  # model/gpu/WxH, for messages
    batches: tuple[int, ...]
    points: tuple[StepLatency, ...]

    @property
    def max_batch(self) -> int:
        return self.batches[-1]

    def at(self, batch: int) -> StepLatency:
        if not self.batches[0] <= batch <= self.batches[-1]:
            raise InputError(
                f"{self.source}: batch {batch} is outside the measured range "
                f"{self.batches[0]}..{self.batches[-1]} for {self.key}"
            )
        b = np.asarray(self.batches, dtype=float)
        values = [
            float(np.interp(batch, b, [getattr(p, f) for p in self.points]))
            for f in ("step_s", "text_encoder_s", "vae_decode_s")
        ]
        return StepLatency(*values)


LATENCY_FIELDS = frozenset({
    "model", "gpu", "width", "height", "batch", "step_s", "text_encoder_s", "vae_decode_s",
    # written by `python -m sim profile latency`, informative only
    "step_p50_s", "step_p99_s", "load_s", "steps_per_pass", "step_samples", "unet_batch", "peak_gpu_memory_bytes",
})


def load_latency_table(path: str, model: str, gpu: str, width: int, height: int) -> LatencyTable:
    file, data = read_profile(path, "latency")
    rows = data.get("entries")
    if not isinstance(rows, list) or not rows:
        raise InputError(f"{file}: field 'entries': expected a non-empty list")
    known: set[str] = set()
    found: dict[int, StepLatency] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InputError(f"{file}: field 'entries[{i}]': expected a mapping")
        unknown = sorted(set(row) - LATENCY_FIELDS)
        if unknown:
            raise InputError(
                f"{file}: field 'entries[{i}].{unknown[0]}': unknown field (units are part of the names: "
                f"*_s seconds, *_bytes bytes); known: {', '.join(sorted(LATENCY_FIELDS))}"
            )
        key = (row.get("model"), row.get("gpu"), row.get("width"), row.get("height"))
        known.add(f"{key[0]}/{key[1]}/{key[2]}x{key[3]}")
        if key != (model, gpu, width, height):
            continue
        batch = row.get("batch", 1)
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
            raise InputError(f"{file}: field 'entries[{i}].batch': expected an integer in 1..{MAX_BATCH}, "
                             f"got {batch!r}")
        if batch in found:
            raise InputError(f"{file}: field 'entries[{i}]': batch {batch} of {model}/{gpu}/{width}x{height} twice")
        for optional in ("step_p50_s", "step_p99_s", "load_s"):
            if optional in row:
                profile_number(file, f"entries[{i}].{optional}", row[optional])
        found[batch] = StepLatency(
            step_s=profile_number(file, f"entries[{i}].step_s", row.get("step_s"), positive=True),
            text_encoder_s=profile_number(file, f"entries[{i}].text_encoder_s", row.get("text_encoder_s")),
            vae_decode_s=profile_number(file, f"entries[{i}].vae_decode_s", row.get("vae_decode_s")),
        )
    if not found:
        raise InputError(
            f"{file}: no entry for model {model} on GPU {gpu} at {width}x{height}; known: {'; '.join(sorted(known))}"
        )
    batches = tuple(sorted(found))
    return LatencyTable(str(file), f"{model}/{gpu}/{width}x{height}", batches, tuple(found[b] for b in batches))


def load_latency(path: str, model: str, gpu: str, width: int, height: int) -> StepLatency:
    """Batch-1 figures of one (model, GPU, resolution)."""
    return load_latency_table(path, model, gpu, width, height).at(1)


@dataclass(frozen=True)
class StorageTier:
    read_latency_s: float
    read_bytes_per_s: float
    write_latency_s: float
    write_bytes_per_s: float

    def read_s(self, num_bytes: int) -> float:
        return self.read_latency_s + num_bytes / self.read_bytes_per_s

    def write_s(self, num_bytes: int) -> float:
        return self.write_latency_s + num_bytes / self.write_bytes_per_s


STORAGE_FIELDS = ("read_latency_s", "read_bytes_per_s", "write_latency_s", "write_bytes_per_s")


def load_storage_tier(path: str, tier: str) -> StorageTier:
    file, data = read_profile(path, "storage")
    tiers = data.get("tiers")
    if not isinstance(tiers, dict) or not tiers:
        raise InputError(f"{file}: field 'tiers': expected a mapping of tier name -> figures")
    if tier not in tiers:
        raise InputError(f"{file}: no tier {tier!r}; known: {', '.join(sorted(tiers))}")
    for name, row in tiers.items():
        if not isinstance(row, dict):
            raise InputError(f"{file}: field 'tiers.{name}': expected a mapping")
        check_fields(file, f"tiers.{name}", row, STORAGE_FIELDS)
    row = tiers[tier]
    f = {
        name: profile_number(file, f"tiers.{tier}.{name}", row.get(name), positive=name.endswith("bytes_per_s"))
        for name in STORAGE_FIELDS
    }
    return StorageTier(**f)


@dataclass(frozen=True)
class Frontend:
    """Embedding one prompt, and exact top-1 search whose cost grows with the number of cached prompts."""

    embed_s: float
    search_base_s: float
    search_per_vector_s: float

    def search_s(self, num_vectors: int) -> float:
        return self.search_base_s + self.search_per_vector_s * num_vectors


def load_frontend(path: str) -> Frontend:
    file, data = read_profile(path, "frontend")
    return Frontend(
        embed_s=profile_number(file, "embed_s", data.get("embed_s")),
        search_base_s=profile_number(file, "search_base_s", data.get("search_base_s")),
        search_per_vector_s=profile_number(file, "search_per_vector_s", data.get("search_per_vector_s")),
    )


@dataclass(frozen=True)
class Cost:
    """Public list prices: dollars per GPU-hour by GPU type, per GB-month by storage tier."""

    source: str
    gpu_hour_usd: dict[str, float]
    storage_gb_month_usd: dict[str, float]
    #: serverless billing: dollars per second a GPU is in use (optional section)
    serverless_gpu_second_usd: dict[str, float] = field(default_factory=dict)

    def gpu(self, gpu: str) -> float:
        if gpu not in self.gpu_hour_usd:
            known = ", ".join(sorted(self.gpu_hour_usd))
            raise InputError(f"{self.source}: no price for GPU {gpu!r}; known: {known}")
        return self.gpu_hour_usd[gpu]


def load_cost(path: str) -> Cost:
    """Every price carries its own source and date (prices change; a run says which it used)."""
    file, data = read_profile(path, "cost")
    out: dict[str, dict[str, float]] = {}
    for section in ("gpu_hour_usd", "storage_gb_month_usd", "serverless_gpu_second_usd"):
        table = data.get(section)
        if table is None and section == "serverless_gpu_second_usd":
            table = {}
        if not isinstance(table, dict):
            raise InputError(f"{file}: field '{section}': expected a mapping of name -> {{usd, source, date}}")
        out[section] = {}
        for name, entry in table.items():
            where = f"{section}.{name}"
            if not isinstance(entry, dict):
                raise InputError(f"{file}: field '{where}': expected a mapping with usd, source, date")
            check_fields(file, where, entry, ("usd", "source", "date"))
            for key in ("source", "date"):
                if not entry.get(key):
                    raise InputError(f"{file}: field '{where}.{key}': required (where and when the price was read)")
            out[section][str(name)] = profile_number(file, f"{where}.usd", entry.get("usd"))
    return Cost(str(file), out["gpu_hour_usd"], out["storage_gb_month_usd"], out["serverless_gpu_second_usd"])
