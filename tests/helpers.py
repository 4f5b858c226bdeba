"""Small builders shared by engine-level tests."""

from __future__ import annotations

from sim.cache.policies import Item, Policy
from sim.engine import Gpu
from sim.hardware.profiles import LatencyTable, StepLatency
from sim.hardware.routing import ROUTERS, Router
from sim.quality import QualityModel


def uniform_gpus(latency: StepLatency, count: int, kind: str = "test", max_batch: int = 1) -> list[Gpu]:
    """``count`` identical GPUs whose one request shape has ``latency`` at every batch size up to max_batch."""
    batches = tuple(range(1, max_batch + 1))
    table = LatencyTable("test", f"test/{kind}", batches, tuple(latency for _ in batches))
    return [Gpu(kind, (table,), max_batch)] * count


def flat_quality() -> QualityModel:
    """Quality 1.0 at every K (for tests about time, not quality)."""
    return QualityModel("test", "relative_quality", dict.fromkeys((0, 5, 10, 15, 20, 25), 1.0))


def router(name: str = "central") -> Router:
    return ROUTERS.get(name)()


def drain(policy: Policy) -> list[Item]:
    """Evict everything, returning the victims in order."""
    order: list[Item] = []
    while len(policy):
        item = policy.victim()
        policy.on_remove(item)
        order.append(item)
    return order
