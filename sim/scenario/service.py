"""GPU service time: one formula, text encoder + steps x step time + VAE decode, from the latency profiles."""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.hardware.profiles import LatencyTable, StepLatency


@dataclass(frozen=True)
class Gpu:
    """One GPU: its type, its latency table for every request class (model x shape), its batch limit."""

    kind: str
    tables: tuple[LatencyTable, ...]
    max_batch: int = 1


def service_s(lat: StepLatency, steps: int, step_factor: float = 1.0) -> float:
    """Seconds one request holds a GPU: text encoder + ``steps`` denoising steps + VAE decode.

    ``step_factor`` scales the step time (lognormal jitter; a batch runs at its slowest member's factor).
    """
    return lat.text_encoder_s + steps * (lat.step_s * step_factor) + lat.vae_decode_s


@dataclass
class ServiceModel:
    """Latencies of every GPU, resolved once per (GPU, request class, batch size) rather than per batch."""

    gpus: tuple[Gpu, ...]
    _resolved: dict[tuple[int, int, int], StepLatency] = field(default_factory=dict, repr=False)

    def latency(self, gpu: int, cls: int, batch: int) -> StepLatency:
        key = (gpu, cls, batch)
        lat = self._resolved.get(key)
        if lat is None:
            lat = self._resolved[key] = self.gpus[gpu].tables[cls].at(batch)
        return lat

    def expected_s(self, gpu: int, cls: int, steps: int) -> float:
        """Service time at batch size 1 without jitter: what routers compare."""
        return service_s(self.latency(gpu, cls, 1), steps)
