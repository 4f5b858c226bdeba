"""Small builders shared by engine-level tests."""

from __future__ import annotations

from sim.cache.policies import Item, Policy
from sim.executors.engine import Engine
from sim.hardware.profiles import Frontend, LatencyTable, StepLatency, StorageTier
from sim.hardware.routing import ROUTERS, Router
from sim.quality import QualityModel
from sim.scenario import Gpu, Requests, Scenario
from sim.scenario.modes.base import ServingMode
from sim.scenario.modes.vanilla import Vanilla

#: a front end and a storage tier that cost nothing (for tests about the GPU queue)
FREE_FRONTEND = Frontend(0.0, 0.0, 0.0)
FREE_TIER = StorageTier(0.0, 1e9, 0.0, 1e9)


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


def scenario(requests: Requests, gpus: list[Gpu], *, routing: str = "central", mode: ServingMode | None = None,
             frontend: Frontend = FREE_FRONTEND, tier: StorageTier = FREE_TIER, write_delay: bool = False,
             batch_window_s: float = 0.0) -> Scenario:
    """A Scenario from parts; vanilla serving unless a mode is given."""
    return Scenario(requests, mode if mode is not None else Vanilla(requests), tuple(gpus), router(routing),
                    frontend, tier, write_delay, batch_window_s)


def run_engine(sc: Scenario) -> dict:
    return Engine(sc).run()
