"""The composition root: run config + trace -> Scenario, with every profile loaded and checked before anything runs.

Imported by the sweeps, validation, calibration and tests alike. Request shape, partition and latency class
are derived once here, into the request arrays; each serving mode builds itself from its config section
(``MODES[name].from_config(parts)``); the executor and the implementation that will carry the run out are
chosen and checked here too (``plan``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sim.cache.kselect import KTable
from sim.cache.offline import OFFLINE
from sim.cache.policies import POLICIES
from sim.cache.spec import CacheSpec
from sim.config import RunConfig
from sim.embedding.simmap import SimilarityMap, find_map, load_map
from sim.errors import ConfigError, InputError
from sim.executors import EXECUTORS, Executor
from sim.executors.base import choose_implementation
from sim.hardware.profiles import load_cost, load_frontend, load_latency_table, load_storage_tier
from sim.limits import MAX_ARRIVAL_S
from sim.memo import Memo
from sim.metrics import RunCost
from sim.quality import QualityModel, load_quality
from sim.requests import Requests
from sim.retrieval.guarantee import check_partitions
from sim.rng import rng_stream
from sim.scenario import Gpu, Scenario
from sim.scenario.modes import MODES
from sim.scenario.modes.final_image import IMAGE_UNIT
from sim.trace import MAX_EXPECTED_VIOLATIONS, Trace

#: a request class: (model name, width, height); each GPU has one latency table per class
LatencyClass = tuple[str, int, int]


def _classes(model: str, width: np.ndarray, height: np.ndarray, classes: dict[LatencyClass, int]) -> np.ndarray:
    """Class index per request, numbering classes in order of first appearance."""
    return np.array([classes.setdefault((model, w, h), len(classes))
                     for w, h in zip(width.tolist(), height.tolist(), strict=True)], dtype=np.int64)


def build_requests(cfg: RunConfig, trace: Trace) -> tuple[Requests, dict[LatencyClass, int]]:
    """Per-request inputs (shape, partition, latent bytes, latency class, step jitter, derived once), and the
    latency class numbering (main-model classes first)."""
    m = cfg.model
    width = np.where(trace.width > 0, trace.width, m.width).astype(np.int64)
    height = np.where(trace.height > 0, trace.height, m.height).astype(np.int64)
    steps = np.where(trace.steps > 0, trace.steps, m.num_steps)
    sampler = [s if s is not None else m.sampler for s in trace.sampler]
    # A latent is reusable only for the same model, shape, sampler and N (DESIGN.md §4).
    compat = list(zip(width.tolist(), height.tolist(), steps.tolist(), sampler, strict=True))
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

    arrival_s = trace.arrival_s * cfg.trace.time_scale
    if len(arrival_s) and arrival_s[-1] > MAX_ARRIVAL_S:
        raise ConfigError(f"trace.time_scale: {cfg.trace.time_scale:g} puts the last arrival at {arrival_s[-1]:.3g} s, "
                          f"beyond the simulated clock's {MAX_ARRIVAL_S:g} s")
    cv = cfg.hardware.step_jitter_cv
    if cv > 0:
        sigma2 = np.log1p(cv * cv)
        step_factor = rng_stream(cfg.seed, "step_jitter").lognormal(-sigma2 / 2, np.sqrt(sigma2), len(trace))
    else:
        step_factor = np.ones(len(trace))
    requests = Requests(
        arrival_s=arrival_s,
        vectors=trace.vectors,
        prompt_index=trace.prompt_index,
        partition=partition,
        noise_bytes=noise_bytes.astype(np.int64),
        num_steps=steps.astype(np.int64),
        latency_class=latency_class,
        step_factor=step_factor,
        width=width,
        height=height,
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


def candidate_lists(cfg: RunConfig, requests: Requests, table: KTable, smap: SimilarityMap | None) -> Any:
    """The trace's candidate lists (built, or read from their cache) for the floor the K table and map imply,
    by the method cache.candidates.method names or (auto) the exact one where affordable."""
    from sim.retrieval.precompute import DEFAULT_DIR, build_candidates, choose_method, raw_floor

    floor = raw_floor(table.lowest, smap.x, smap.y) if smap is not None else raw_floor(table.lowest)
    cc = cfg.cache.candidates
    method = choose_method(cc.method, requests.prompt_index, requests.partition, requests.vectors.shape[1])
    return build_candidates(requests.vectors, requests.prompt_index, requests.partition, floor=floor,
                            max_candidates=cc.max_candidates, method=method,
                            cache_dir=Path(cc.cache_dir) if cc.cache_dir else DEFAULT_DIR)


@dataclass
class BuildParts:
    """What a serving mode builds itself from: the run config, its requests, the similarity map, and the latency
    class numbering (a mode may add classes, e.g. the small model's)."""

    cfg: RunConfig
    requests: Requests
    classes: dict[LatencyClass, int]
    smap: SimilarityMap | None

    def latency_classes(self, model: str) -> np.ndarray:
        """Each request's latency class when ``model`` serves it (numbered after the main model's)."""
        assert self.requests.width is not None and self.requests.height is not None
        return _classes(model, self.requests.width, self.requests.height, self.classes)

    def cache_spec(self, *, images: bool = False) -> CacheSpec:
        """The spec of the run's cache: latents at every cached K, or (``images``) one final image per prompt."""
        cfg, req = self.cfg, self.requests
        c = cfg.cache
        if images:
            fi = cfg.serving.final_image
            # s >= threshold serves the image: the K table's test is strict, so compare with the next float down.
            table = KTable(((float(np.nextafter(fi.threshold, -np.inf)), IMAGE_UNIT),))
            ks: tuple[int, ...] = (IMAGE_UNIT,)
            capacity_noises = fi.capacity_images
            if capacity_noises is None and c.capacity_noises is not None:
                capacity_noises = max(1, c.capacity_noises // len(c.ks))  # as many prompts as the latent cache
            unit_bytes = image_bytes(cfg, req)
        else:
            table = KTable(tuple((t.above, t.k) for t in c.thresholds))
            ks, capacity_noises, unit_bytes = tuple(sorted(c.ks)), c.capacity_noises, req.noise_bytes
        capacity_bytes = c.capacity_bytes
        if c.policy in OFFLINE:
            if images or cfg.serving.mode != "nirvana":
                # An offline reference reads K as NIRVANA's latent reuse.
                raise ConfigError(f"cache.policy: {c.policy} (an offline reference) runs only with serving.mode: "
                                  f"nirvana, got {cfg.serving.mode}")
            if c.policy == "infinite":  # room for a noise at every K of every request: nothing is ever evicted
                capacity_noises, capacity_bytes = len(req) * len(ks), None
        candidates = None
        retrieval = "candidates" if c.retrieval == "auto" else c.retrieval
        if c.policy in OFFLINE and OFFLINE.get(c.policy).preloads:
            if c.retrieval == "candidates":
                raise ConfigError(f"cache.retrieval: candidates lists hold each request's earlier prompts, but "
                                  f"{c.policy} caches later ones before the first request; use exact_cosine or auto")
            retrieval = "exact_cosine" if c.retrieval == "auto" else retrieval
        if retrieval == "candidates":
            smap = self.smap
            candidates = _LISTS.get((table.lowest, c.candidates), (req, smap),
                                    lambda: candidate_lists(cfg, req, table, smap))
        units = (OFFLINE if c.policy in OFFLINE else POLICIES).get(c.policy).units
        unit = units[0] if c.eviction_unit == "auto" else c.eviction_unit
        return CacheSpec(ks=ks, table=table, policy=c.policy, unit=unit, policy_params=c.policy_params,
                         admission=c.admission, admission_params=c.admission_params,
                         capacity_noises=capacity_noises, capacity_bytes=capacity_bytes, retrieval=retrieval,
                         unit_bytes=unit_bytes, seed=cfg.seed, capped=not images, similarity_map=self.smap,
                         candidates=candidates)


def image_bytes(cfg: RunConfig, requests: Requests) -> np.ndarray:
    """Bytes of each request's final image: configured, or uncompressed 8-bit RGB (our assumption)."""
    fixed = cfg.serving.final_image.image_bytes
    if fixed is not None:
        return np.full(len(requests), fixed, dtype=np.int64)
    assert requests.width is not None and requests.height is not None
    return (requests.width * requests.height * 3).astype(np.int64)


def build_quality(cfg: RunConfig) -> QualityModel:
    """The quality model of the run's mode: the per-K profile, plus the mode's own profile for its outcomes."""
    base = load_quality(cfg.quality.profile, usable_ks(cfg))
    key = MODES.get(cfg.serving.mode).quality_key
    if key == "quality.profile":
        return base
    section, _, name = key.removeprefix("serving.").partition(".")
    extra = load_quality(getattr(getattr(cfg.serving, section), name), ())
    return base.with_outcomes(extra)


def similarity_floor(cfg: RunConfig, smap: SimilarityMap | None) -> float:
    """The raw cosine below which no lookup of this run can select a K (or serve a final image)."""
    from sim.retrieval.precompute import raw_floor

    lowest = min(t.above for t in cfg.cache.thresholds)
    if cfg.serving.mode == "final_image":
        lowest = min(lowest, float(np.nextafter(cfg.serving.final_image.threshold, -np.inf)))
    return raw_floor(lowest, smap.x, smap.y) if smap is not None else raw_floor(lowest)


#: (trace, vectors, floor) whose partition guarantee this process has checked
_CHECKED: set[tuple[Path, int, float]] = set()


def by_topic(requests: Requests, trace: Trace, floor: float) -> Requests:
    """Retrieval partitions refined by the trace's topics, when its partition guarantee covers ``floor``:
    no prompt of another topic reaches the floor, so a lookup finds the same nearest prompt within its topic
    (exact candidate lists and fallbacks then stay within topics). The search scope (what the front end's
    search latency counts) stays the unrefined partition."""
    g = trace.guarantee
    if g is None or trace.topic is None or g.violation_bound(len(trace.vectors), floor) > MAX_EXPECTED_VIOLATIONS:
        return requests
    key = (trace.path, id(trace.vectors), floor)
    if key not in _CHECKED:  # once per loaded trace and floor in a process (a sweep builds every point)
        check_partitions(trace.vectors, trace.topic, floor, str(trace.path))
        _CHECKED.add(key)
    topic = np.unique(trace.topic, return_inverse=True)[1].reshape(-1)[requests.prompt_index]  # dense codes
    pair = requests.partition * (int(topic.max()) + 1) + topic  # (partition, topic) as one int64
    refined = np.unique(pair, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return replace(requests, partition=refined, scope=requests.partition)


#: a sweep's points share their trace: its requests are derived once per process (policy and capacity vary),
#: and so are their candidate lists
_REQUESTS: Memo[tuple[Requests, dict[LatencyClass, int]]] = Memo()
_LISTS: Memo[Any] = Memo()


def _requests(cfg: RunConfig, trace: Trace, smap: SimilarityMap | None) -> tuple[Requests, dict[LatencyClass, int]]:
    """build_requests (refined by topic where the trace guarantees it), once per trace and request settings."""
    floor = similarity_floor(cfg, smap) if searches(cfg) else None
    jitter = (cfg.hardware.step_jitter_cv, cfg.seed) if cfg.hardware.step_jitter_cv > 0 else None
    key = (cfg.model, cfg.cache.scope, cfg.trace.time_scale, jitter, floor)

    def make() -> tuple[Requests, dict[LatencyClass, int]]:
        requests, classes = build_requests(cfg, trace)
        return (by_topic(requests, trace, floor) if floor is not None else requests), classes

    requests, classes = _REQUESTS.get(key, (trace,), make)
    return requests, dict(classes)  # a mode may add classes (the small model's): never to the memo's


def build_scenario(cfg: RunConfig, trace: Trace) -> tuple[Scenario, QualityModel]:
    """The Scenario of one run and the quality model its records are scored with after execution."""
    smap = similarity_map(cfg, trace.embedder)
    requests, classes = _requests(cfg, trace, smap)
    mode = MODES.get(cfg.serving.mode).from_config(BuildParts(cfg, requests, classes, smap))
    hw = cfg.hardware
    scenario = Scenario(
        requests=requests,
        mode=mode,
        gpus=tuple(build_gpus(cfg, classes)),
        routing=hw.routing,
        frontend=load_frontend(cfg.frontend.profile),
        tier=load_storage_tier(cfg.storage.profile, cfg.storage.latent_tier),
        write_delay=cfg.cache.write_delay,
        batch_window_s=hw.batch_window_s,
        similarity_map=smap.source if smap is not None else None,
    )
    return scenario, build_quality(cfg)


@dataclass(frozen=True)
class Plan:
    """How a scenario will be carried out: the executor (the semantics the config asked for), the implementation
    chosen for its cache, and one-line notices of choices the user should know of (a forced implementation
    that could not be honoured; approximate candidate lists chosen because exact ones are unaffordable)."""

    executor: Executor
    implementation: str
    notices: tuple[str, ...] = ()


def plan(cfg: RunConfig, scenario: Scenario) -> Plan:
    """The executor and implementation of a run; refuses (ConfigError naming the key) a scenario the executor
    does not support."""
    executor = EXECUTORS.get(cfg.run.executor)()
    why = executor.supports(scenario)
    if why is not None:
        raise ConfigError(why)
    implementation, notice = choose_implementation(scenario, cfg.run.implementation)
    notices = [notice] if notice else []
    spec = scenario.mode.cache_spec
    lists = spec.candidates if spec is not None else None
    if lists is not None and lists.method != "exact" and cfg.cache.candidates.method == "auto":
        recall = "not measured" if lists.recall is None else f"{lists.recall:.4f}"
        notices.append(f"cache.candidates.method auto: exact lists are unaffordable for this trace; approximate "
                       f"{lists.method} lists (recall {recall} on a sample of requests) may miss a neighbour")
    return Plan(executor, implementation, tuple(notices))


def retrieval_summary(scenario: Scenario) -> dict[str, Any] | None:
    """How the run found the nearest cached prompt, for its summary (None: the mode does not search)."""
    spec = scenario.mode.cache_spec
    if spec is None or not scenario.mode.searches:
        return None
    out: dict[str, Any] = {"method": spec.retrieval, "partitioned_by_topic": scenario.requests.scope is not None}
    if spec.candidates is not None:
        out |= {"lists": spec.candidates.method, "max_candidates": spec.candidates.max_candidates,
                "recall": spec.candidates.recall}
    return out


def with_requests(scenario: Scenario, **changes: Any) -> Scenario:
    """The scenario with some request arrays replaced (e.g. a calibration's retrieval partition)."""
    return replace(scenario, requests=replace(scenario.requests, **changes))
