"""Small builders shared by engine-level tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sim.cache.kselect import DEFAULT_KS, KTable
from sim.cache.params import AdmissionParams, PolicyParams
from sim.cache.policies import Item, Policy
from sim.cache.reference import ReferenceCache, new_store
from sim.cache.spec import CacheSpec, LiveCache
from sim.executors import EXECUTORS
from sim.executors.engine import Engine
from sim.hardware.profiles import Frontend, LatencyTable, StepLatency, StorageTier
from sim.hardware.routing import ROUTERS, Router
from sim.quality import QualityModel
from sim.retrieval import Retriever
from sim.retrieval.precompute import Candidates
from sim.scenario import Gpu, Requests, Scenario
from sim.scenario.modes.base import ServingMode
from sim.scenario.modes.vanilla import Vanilla
from sim.scenario.records import Records

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
    return Scenario(requests, mode if mode is not None else Vanilla(requests), tuple(gpus), routing,
                    frontend, tier, write_delay, batch_window_s)


def run_engine(sc: Scenario, implementation: str = "reference") -> dict:
    spec = sc.mode.cache_spec
    from sim.executors.base import open_cache

    return Engine(sc, open_cache(spec, sc.requests, implementation) if spec is not None else None).run()


def cache_spec(requests: Requests, policy: str = "lru", unit: str = "noise", *, ks: tuple[int, ...] = DEFAULT_KS,
               table: KTable | None = None, capacity_noises: int | None = None, capacity_bytes: int | None = None,
               retrieval: str = "exact_cosine", scale: Any = None, candidates: Candidates | None = None) -> CacheSpec:
    """A latent cache spec by hand (NIRVANA's K table unless given)."""
    return CacheSpec(ks=tuple(sorted(ks)), table=table or KTable(), policy=policy, unit=unit,  # type: ignore[arg-type]
                     policy_params=PolicyParams(), admission="always", admission_params=AdmissionParams(),
                     capacity_noises=capacity_noises, capacity_bytes=capacity_bytes, retrieval=retrieval,
                     unit_bytes=requests.noise_bytes, similarity_map=scale, candidates=candidates)


def reference_cache(spec: CacheSpec, requests: Requests, retriever: Callable[[], Retriever]) -> ReferenceCache:
    """The spec's reference cache with another retriever (e.g. one scoring with the canonical cosine)."""
    store = new_store(spec, requests)
    store._make_retriever = retriever
    return ReferenceCache(spec, requests, store)


def execute(executor: str, sc: Scenario, cache: LiveCache | None = None,
            implementation: str = "reference") -> tuple[Records, dict[str, int]]:
    """(records, stats) of one execution of ``sc``, on ``cache`` when given."""
    ex = EXECUTORS.get(executor)()
    rec = ex.run(sc, implementation, cache=cache)
    return rec, ex.stats
