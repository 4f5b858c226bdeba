"""Run config + trace -> Scenario: every profile loaded and checked here, before anything is executed."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from sim.cache.admission import ADMISSIONS
from sim.cache.kselect import KTable
from sim.cache.offline import OFFLINE, Future
from sim.cache.policies import POLICIES, Policy
from sim.cache.store import CacheStore
from sim.errors import InputError
from sim.experiments.config import RunConfig
from sim.hardware.profiles import load_cost, load_frontend, load_latency_table, load_storage_tier
from sim.hardware.routing import ROUTERS
from sim.metrics import RunCost
from sim.quality import QualityModel, load_quality
from sim.retrieval import RETRIEVERS, Retriever
from sim.rng import rng_stream
from sim.scenario import Gpu, Requests, Scenario
from sim.scenario.modes import MODES, ServingMode
from sim.scenario.modes.final_image import IMAGE_UNIT
from sim.workload.simmap import SimilarityMap, find_map, load_map
from sim.workload.trace import Trace

#: a request class: (model name, width, height); each GPU has one latency table per class
LatencyClass = tuple[str, int, int]


def _shapes(cfg: RunConfig, trace: Trace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    m = cfg.model
    width = np.where(trace.width > 0, trace.width, m.width)
    height = np.where(trace.height > 0, trace.height, m.height)
    steps = np.where(trace.steps > 0, trace.steps, m.num_steps)
    sampler = np.array([s if s is not None else m.sampler for s in trace.sampler], dtype=object)
    return width, height, steps, sampler


def _classes(model: str, width: np.ndarray, height: np.ndarray, classes: dict[LatencyClass, int]) -> np.ndarray:
    """Class index per request, numbering classes in order of first appearance."""
    return np.array([classes.setdefault((model, w, h), len(classes))
                     for w, h in zip(width.tolist(), height.tolist(), strict=True)], dtype=np.int64)


def build_requests(cfg: RunConfig, trace: Trace) -> tuple[Requests, dict[LatencyClass, int]]:
    """Per-request inputs, and the latency class numbering (main-model classes first)."""
    m = cfg.model
    width, height, steps, sampler = _shapes(cfg, trace)
    # A latent is reusable only for the same model, shape, sampler and N (DESIGN.md §4).
    compat = list(zip(width.tolist(), height.tolist(), steps.tolist(), sampler.tolist(), strict=True))
    if cfg.cache.scope == "user":
        # Unknown users (null) share nothing: each such request is its own tenant.
        keys: list[Any] = [
            (c, u if u is not None else f"\0unknown-{i}")
            for i, (c, u) in enumerate(zip(compat, trace.user, strict=True))
        ]
    else:
        keys = compat
    codes: dict[Any, int] = {}
    partition = np.array([codes.setdefault(k, len(codes)) for k in keys], dtype=np.int64)

    f = m.vae_scale_factor
    noise_bytes = m.latent_channels * -(-height // f) * -(-width // f) * m.latent_dtype_bytes
    classes: dict[LatencyClass, int] = {}
    latency_class = _classes(m.name, width, height, classes)

    cv = cfg.hardware.step_jitter_cv
    if cv > 0:
        sigma2 = np.log1p(cv * cv)
        step_factor = rng_stream(cfg.seed, "step_jitter").lognormal(-sigma2 / 2, np.sqrt(sigma2), len(trace))
    else:
        step_factor = np.ones(len(trace))
    requests = Requests(
        arrival_s=trace.arrival_s * cfg.trace.time_scale,
        vectors=trace.vectors,
        prompt_index=trace.prompt_index,
        partition=partition,
        noise_bytes=noise_bytes.astype(np.int64),
        num_steps=steps.astype(np.int64),
        latency_class=latency_class,
        step_factor=step_factor,
    )
    return requests, classes


def build_gpus(cfg: RunConfig, classes: dict[LatencyClass, int]) -> list[Gpu]:
    """Every GPU of every pool with its latency table per request class; checks the batch range now,
    so a sweep fails before it starts, not halfway through."""
    hw = cfg.hardware
    profile_of = {cfg.model.name: None, cfg.serving.small_model.model: cfg.serving.small_model.latency_profile}
    gpus = []
    for pool in hw.pools:
        limit = pool.max_batch or hw.max_batch
        tables = tuple(
            load_latency_table(profile_of.get(model) or pool.latency_profile, model, pool.gpu, w, h)
            for model, w, h in classes
        )
        for table in tables:
            table.at(limit)
            table.at(1)
        gpus += [Gpu(pool.gpu, tables, limit)] * pool.count
    return gpus


def run_cost(cfg: RunConfig, capacity_bytes: int | None) -> RunCost | None:
    """Hourly price of the GPU fleet and monthly price of the cache's storage, from the cost profile."""
    if cfg.hardware.cost_profile is None:
        return None
    cost = load_cost(cfg.hardware.cost_profile)
    gpu_usd_per_h = sum(p.count * cost.gpu(p.gpu) for p in cfg.hardware.pools)
    tier_price = cost.storage_gb_month_usd.get(cfg.storage.latent_tier)
    storage = None if tier_price is None or capacity_bytes is None else tier_price * capacity_bytes / 1e9
    return RunCost(Path(cost.source).name, gpu_usd_per_h, storage, dict(cost.gpu_hour_usd),
                   dict(cost.serverless_gpu_second_usd))


def usable_ks(cfg: RunConfig) -> tuple[int, ...]:
    """The K a hit can use: cached K up to the largest K the threshold table selects (holes round down)."""
    top = max(t.k for t in cfg.cache.thresholds)
    return tuple(k for k in cfg.cache.ks if k <= top)


def searches(cfg: RunConfig) -> bool:
    """Whether the run's mode looks requests up by similarity (and so applies a similarity map)."""
    mode = cfg.serving.mode
    return mode != "vanilla" and not (mode == "small_model" and cfg.serving.small_model.serve == "all")


def similarity_map(cfg: RunConfig, embedder: str) -> SimilarityMap | None:
    """The map the run applies: by the trace's embedder tag (auto), none, or a file that must match it;
    None for a mode that does not search."""
    choice = cfg.cache.similarity_map
    if choice == "none" or not searches(cfg):
        return None
    if choice == "auto":
        return find_map(embedder)
    smap = load_map(choice)
    if smap.embedder != embedder:
        raise InputError(f"{smap.source}: fitted for embedder {smap.embedder!r}, but the trace was embedded "
                         f"with {embedder!r} (cache.similarity_map)")
    return smap


def make_retriever(cfg: RunConfig, dim: int, table: KTable, smap: SimilarityMap | None,
                   requests: Requests | None) -> Callable[[], Retriever]:
    """The store's per-partition retriever factory (picklable). With ``candidates``, the trace's candidate
    lists are built (or read from their cache) here, for the floor the K table and map imply."""
    c = cfg.cache
    if c.retrieval != "candidates":
        return partial(RETRIEVERS.get(c.retrieval), dim)
    if requests is None:
        raise InputError("cache.retrieval: candidates needs the trace's requests")
    from sim.retrieval.candidates import CandidatesFactory
    from sim.retrieval.precompute import DEFAULT_DIR, build_candidates, raw_floor

    floor = raw_floor(table.lowest, smap.x, smap.y) if smap is not None else raw_floor(table.lowest)
    cc = c.candidates
    lists = build_candidates(requests.vectors, requests.prompt_index, requests.partition, floor=floor,
                             max_candidates=cc.max_candidates, method=cc.method,
                             cache_dir=Path(cc.cache_dir) if cc.cache_dir else DEFAULT_DIR)
    return CandidatesFactory(lists, dim)


def make_store(cfg: RunConfig, dim: int, smap: SimilarityMap | None = None, *, images: bool = False,
               requests: Requests | None = None) -> CacheStore:
    """The cache store of a run: latents at every cached K, or (``images``) one final image per prompt.

    Offline references (cache.policy in sim/cache/offline/) and the candidates retriever read the whole
    trace: ``requests``."""
    c = cfg.cache
    if images:
        fi = cfg.serving.final_image
        # s >= threshold serves the image: the K table's test is strict, so compare with the next float down.
        table = KTable(((float(np.nextafter(fi.threshold, -np.inf)), IMAGE_UNIT),))
        ks: tuple[int, ...] = (IMAGE_UNIT,)
        capacity_noises = fi.capacity_images
        if capacity_noises is None and c.capacity_noises is not None:
            capacity_noises = max(1, c.capacity_noises // len(c.ks))  # as many prompts as the latent cache
    else:
        table = KTable(tuple((t.above, t.k) for t in c.thresholds))
        ks, capacity_noises = c.ks, c.capacity_noises
    retriever = make_retriever(cfg, dim, table, smap, requests)
    policy: Policy
    rng = rng_stream(cfg.seed, "policy")
    if c.policy in OFFLINE:
        if requests is None:
            raise InputError(f"cache.policy: {c.policy} is an offline reference and needs the trace")
        future = Future(requests.vectors, requests.prompt_index, requests.partition, requests.num_steps,
                        requests.noise_bytes, table, tuple(sorted(ks)), smap.apply_array if smap is not None else None)
        policy = OFFLINE.get(c.policy)(c.eviction_unit, c.policy_params, rng, future=future)
        if c.policy == "infinite":
            # Room for a noise at every K of every request: nothing is ever evicted.
            return CacheStore(ks=ks, table=table, policy=policy, make_retriever=retriever,
                              capacity_noises=len(requests) * len(ks),
                              similarity_scale=smap.apply if smap is not None else None)
    else:
        policy = POLICIES.get(c.policy)(c.eviction_unit, c.policy_params, rng)
    return CacheStore(
        ks=ks,
        table=table,
        admission=ADMISSIONS.get(c.admission)(c.admission_params, rng_stream(cfg.seed, "admission")),
        policy=policy,
        make_retriever=retriever,
        capacity_noises=capacity_noises,
        capacity_bytes=c.capacity_bytes,
        similarity_scale=smap.apply if smap is not None else None,
    )


def image_bytes(cfg: RunConfig, trace: Trace) -> np.ndarray:
    """Bytes of each request's final image: configured, or uncompressed 8-bit RGB (our assumption)."""
    fixed = cfg.serving.final_image.image_bytes
    if fixed is not None:
        return np.full(len(trace), fixed, dtype=np.int64)
    width, height, _, _ = _shapes(cfg, trace)
    return (width * height * 3).astype(np.int64)


def build_mode(cfg: RunConfig, trace: Trace, requests: Requests, classes: dict[LatencyClass, int],
               smap: SimilarityMap | None) -> ServingMode:
    name = cfg.serving.mode
    mode_cls = MODES.get(name)
    dim = trace.vectors.shape[1]
    if name == "vanilla":
        return mode_cls(requests)  # type: ignore[call-arg]
    if name == "nirvana":
        return mode_cls(requests, make_store(cfg, dim, smap, requests=requests))  # type: ignore[call-arg]
    if name == "final_image":
        images = make_store(cfg, dim, smap, images=True, requests=requests)
        return mode_cls(requests, images, image_bytes(cfg, trace))  # type: ignore[call-arg]
    sm = cfg.serving.small_model
    width, height, _, _ = _shapes(cfg, trace)
    small = _classes(sm.model, width, height, classes)
    store = make_store(cfg, dim, smap, requests=requests) if sm.serve == "misses" else None
    return mode_cls(requests, small, sm.serve, store)  # type: ignore[call-arg]


def build_quality(cfg: RunConfig) -> QualityModel:
    """The quality model of the run's mode: the per-K profile, plus the mode's own profile for its outcomes."""
    base = load_quality(cfg.quality.profile, usable_ks(cfg))
    key = MODES.get(cfg.serving.mode).quality_key
    if key == "quality.profile":
        return base
    section, _, field = key.removeprefix("serving.").partition(".")
    extra = load_quality(getattr(getattr(cfg.serving, section), field), ())
    return base.with_outcomes(extra)


def build_scenario(cfg: RunConfig, trace: Trace) -> tuple[Scenario, QualityModel]:
    """The Scenario of one run and the quality model its records are scored with after execution."""
    requests, classes = build_requests(cfg, trace)
    smap = similarity_map(cfg, trace.embedder)
    mode = build_mode(cfg, trace, requests, classes, smap)
    hw = cfg.hardware
    scenario = Scenario(
        requests=requests,
        mode=mode,
        gpus=tuple(build_gpus(cfg, classes)),
        router=ROUTERS.get(hw.routing)(),
        frontend=load_frontend(cfg.frontend.profile),
        tier=load_storage_tier(cfg.storage.profile, cfg.storage.latent_tier),
        write_delay=cfg.cache.write_delay,
        batch_window_s=hw.batch_window_s,
        similarity_map=smap.source if smap is not None else None,
    )
    return scenario, build_quality(cfg)
