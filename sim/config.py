"""The run config: one simulation's frozen sections, validated on load, unknown keys rejected with their dotted path.

Below everything that uses it (the builder, the sweep grammar, the commands); it imports the registries of
the layers it names (policies, admission, retrieval, routing, serving modes) to check names, and never an
executor, SimPy, numba or torch: loading a config is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from sim.cache.kselect import DEFAULT_KS, DEFAULT_THRESHOLDS, check_table
from sim.cache.params import AdmissionParams, PolicyParams
from sim.errors import ConfigError
from sim.limits import (
    MAX_BATCH,
    MAX_BATCH_WINDOW_S,
    MAX_CAPACITY_BYTES,
    MAX_CAPACITY_NOISES,
    MAX_GPUS_PER_POOL,
    MAX_LATENT_CHANNELS,
    MAX_SIDE_PX,
    MAX_STEP_JITTER_CV,
    MAX_STEPS,
    MAX_TIME_SCALE,
    MAX_VAE_SCALE,
    MIN_TIME_SCALE,
)
from sim.schema import build, to_data

Problems = list[tuple[str, str]]



@dataclass(frozen=True)
class TraceConfig:
    path: str = "traces/tiny/trace.parquet"
    #: simulated arrival = trace arrival x time_scale (0.5 replays twice as fast: double the load)
    time_scale: float = 1.0
    #: replay only the first N requests (a limit above the trace's length replays all of it)
    limit: int | None = None

    def problems(self) -> Problems:
        out: Problems = []
        if not MIN_TIME_SCALE <= self.time_scale <= MAX_TIME_SCALE:
            out.append(("time_scale", f"a number in {MIN_TIME_SCALE:g}..{MAX_TIME_SCALE:g}, got {self.time_scale}"))
        if self.limit is not None and self.limit < 1:
            out.append(("limit", f"an integer >= 1 or null, got {self.limit}"))
        return out


@dataclass(frozen=True)
class ModelConfig:
    """The served model. Trace rows may override width, height, steps and sampler per request."""

    name: str = "sdxl"
    num_steps: int = 50  # NIRVANA: N = 50
    width: int = 1024
    height: int = 1024
    sampler: str = "ddim"
    # Latent shape: SD-1.5/SDXL VAEs give 4 channels at 1/8 resolution; fp16 = 2 bytes.
    latent_channels: int = 4
    vae_scale_factor: int = 8
    latent_dtype_bytes: int = 2

    def problems(self) -> Problems:
        out: Problems = []
        bounds = {"num_steps": MAX_STEPS, "width": MAX_SIDE_PX, "height": MAX_SIDE_PX,
                  "latent_channels": MAX_LATENT_CHANNELS, "vae_scale_factor": MAX_VAE_SCALE}
        for key, most in bounds.items():
            if not 1 <= getattr(self, key) <= most:
                out.append((key, f"an integer in 1..{most}, got {getattr(self, key)}"))
        if self.latent_dtype_bytes not in (1, 2, 4):
            out.append(("latent_dtype_bytes", f"1, 2 or 4, got {self.latent_dtype_bytes}"))
        return out


@dataclass(frozen=True)
class Threshold:
    """Similarity strictly above ``above`` selects ``k`` (the first matching row wins)."""

    above: float
    k: int


@dataclass(frozen=True)
class CandidatesConfig:
    """The candidate fast path (`cache.retrieval: candidates`, sim/retrieval/precompute.py): each request's
    earlier prompts above the K table's lowest threshold, precomputed once per trace and floor."""

    #: list length cap M; a request with more qualifying prompts falls back to an exact search when its
    #: M are all evicted (counted in the summary)
    max_candidates: int = 64
    #: auto (exact while affordable, else ivf, said in one line, its recall in the summary) | exact (blocked,
    #: complete: decisions equal the exact retriever's) | ivf (faiss IVF) | hnsw (hnswlib); the approximate
    #: ones can miss a neighbour (measured in benchmarks/README.md)
    method: Literal["auto", "exact", "ivf", "hnsw"] = "auto"
    #: where the lists are stored, keyed by a content hash of their inputs (null: ~/.cache/nirvana-sim)
    cache_dir: str | None = None

    def problems(self) -> Problems:
        if not 1 <= self.max_candidates <= 4096:
            return [("max_candidates", f"an integer in 1..4096, got {self.max_candidates}")]
        return []


@dataclass(frozen=True)
class CacheConfig:
    """The cache of the serving mode: latents (nirvana, small_model with serve: misses) or images (final_image)."""

    #: an eviction policy (sim/cache/policies/) or an offline reference (sim/cache/offline/, sequential only)
    policy: str = "lcbfu"
    #: parameters some policies read (each policy's docstring names its own)
    policy_params: PolicyParams = field(default_factory=PolicyParams)
    #: whether a miss enters the cache at all: always | probabilistic | second_hit (sim/cache/admission/)
    admission: str = "always"
    admission_params: AdmissionParams = field(default_factory=AdmissionParams)
    #: what one eviction removes: a single noise, or a whole prompt with all its noises; auto: the policy's own
    #: default (prompt for FIFO/LRU/LFU, as the paper's baselines in its public re-implementations; noise for
    #: LCBFU and its variants, which are defined per noise)
    eviction_unit: Literal["auto", "noise", "prompt"] = "auto"
    capacity_noises: int | None = 1500
    capacity_bytes: int | None = None
    #: the K values at which a miss stores a latent (NIRVANA: 5, 10, 15, 20, 25)
    ks: tuple[int, ...] = DEFAULT_KS
    thresholds: tuple[Threshold, ...] = tuple(Threshold(a, k) for a, k in DEFAULT_THRESHOLDS)
    #: auto (candidate lists, the method cache.candidates.method picks: exact ones where affordable) |
    #: candidates (the same, named) | exact_cosine (the reference: a search over the cached prompts per lookup) |
    #: exact_key (identical text only)
    retrieval: str = "auto"
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    #: map from the trace embedder's cosine to the thresholds' (CLIP) scale: auto = the shipped map
    #: fitted for the trace's embedder (profiles/similarity/), none = raw cosine, or a map file path
    similarity_map: str = "auto"
    #: shared: one cache for all users (NIRVANA); user: retrieval partitioned per user
    scope: Literal["shared", "user"] = "shared"
    #: latents become usable only once the storage write finishes (else at generation end)
    write_delay: bool = True

    def problems(self) -> Problems:
        from sim.cache.admission import ADMISSIONS
        from sim.cache.offline import OFFLINE
        from sim.cache.policies import POLICIES
        from sim.retrieval import RETRIEVERS

        out: Problems = []
        if self.policy not in POLICIES and self.policy not in OFFLINE:
            out.append(("policy", f"one of {', '.join(POLICIES.names())}, or an offline reference "
                                  f"({', '.join(OFFLINE.names())}), got {self.policy!r}"))
        else:
            units = (OFFLINE if self.policy in OFFLINE else POLICIES).get(self.policy).units
            if self.eviction_unit != "auto" and self.eviction_unit not in units:
                out.append(("eviction_unit", f"one of {list(units)} for policy {self.policy}"))
        if self.admission not in ADMISSIONS:
            out.append(("admission", f"one of {', '.join(ADMISSIONS.names())}, got {self.admission!r}"))
        if self.retrieval not in RETRIEVERS and self.retrieval != "auto":
            names = ", ".join(("auto", *RETRIEVERS.names()))
            out.append(("retrieval", f"one of {names}, got {self.retrieval!r}"))
        if self.capacity_noises is None and self.capacity_bytes is None:
            out.append(("capacity_noises", "capacity_noises or capacity_bytes to be set"))
        for key, most in (("capacity_noises", MAX_CAPACITY_NOISES), ("capacity_bytes", MAX_CAPACITY_BYTES)):
            value = getattr(self, key)
            if value is not None and value <= 0:
                out.append((key, f"a positive integer or null, got {value}"))
            elif value is not None and value > most:
                out.append((key, f"at most {most} (2**{most.bit_length() - 1}), got {value}"))
        if not self.ks or any(k < 1 for k in self.ks) or len(set(self.ks)) != len(self.ks):
            out.append(("ks", f"distinct positive integers, got {list(self.ks)}"))
        why = check_table([(t.above, t.k) for t in self.thresholds], self.ks)
        if why is not None:
            out.append(("thresholds", why))
        return out


@dataclass(frozen=True)
class GpuPool:
    """``count`` GPUs of one type, with the latency profile that has their entries."""

    gpu: str = "a10g"
    count: int = 4
    latency_profile: str = "profiles/latency/sdxl-1024-a10g-published.yaml"
    #: this pool's batch limit (null: hardware.max_batch), e.g. a smaller GPU that fits fewer images
    max_batch: int | None = None

    def problems(self) -> Problems:
        out: Problems = []
        if self.count < 1:
            out.append(("count", f"an integer >= 1, got {self.count}"))
        elif self.count > MAX_GPUS_PER_POOL:
            out.append(("count", f"at most {MAX_GPUS_PER_POOL} GPUs per pool, got {self.count}"))
        if self.max_batch is not None and not 1 <= self.max_batch <= MAX_BATCH:
            out.append(("max_batch", f"an integer in 1..{MAX_BATCH} or null, got {self.max_batch}"))
        return out


@dataclass(frozen=True)
class HardwareConfig:
    pools: tuple[GpuPool, ...] = (GpuPool(),)
    #: central (one FCFS queue) | round_robin | least_loaded | shortest_expected_wait (sim/hardware/routing/)
    routing: str = "central"
    #: static batching: a GPU starts up to max_batch requests of one shape together (pools may override)
    max_batch: int = 1
    #: a GPU with a partial batch waits this long for more requests before starting
    batch_window_s: float = 0.0
    #: coefficient of variation of a lognormal factor on each request's step time (0 = deterministic)
    step_jitter_cv: float = 0.0
    #: public prices per GPU-hour and GB-month; null = no cost in the summary
    cost_profile: str | None = "profiles/cost/aws-on-demand-published.yaml"

    def problems(self) -> Problems:
        from sim.hardware.routing import ROUTERS

        out: Problems = []
        if not self.pools:
            out.append(("pools", "at least one GPU pool"))
        if self.routing not in ROUTERS:
            out.append(("routing", f"one of {', '.join(ROUTERS.names())}, got {self.routing!r}"))
        if self.max_batch < 1:
            out.append(("max_batch", f"an integer >= 1, got {self.max_batch}"))
        elif self.max_batch > MAX_BATCH:
            out.append(("max_batch", f"an integer in 1..{MAX_BATCH}, got {self.max_batch}"))
        if not 0 <= self.batch_window_s <= MAX_BATCH_WINDOW_S:
            out.append(("batch_window_s", f"a number in 0..{MAX_BATCH_WINDOW_S:g} s, got {self.batch_window_s}"))
        if not 0 <= self.step_jitter_cv <= MAX_STEP_JITTER_CV:
            out.append(("step_jitter_cv", f"a number in 0..{MAX_STEP_JITTER_CV:g}, got {self.step_jitter_cv}"))
        return out

    @property
    def num_gpus(self) -> int:
        return sum(p.count for p in self.pools)


@dataclass(frozen=True)
class StorageConfig:
    profile: str = "profiles/storage/local-measured.yaml"
    #: tier (named in the storage profile) that holds cached latents
    latent_tier: str = "local_disk"


@dataclass(frozen=True)
class FrontendConfig:
    """Prompt embedding and vector search, which run before a request reaches a GPU."""

    profile: str = "profiles/frontend/cpu-minilm-numpy-measured.yaml"


@dataclass(frozen=True)
class QualityConfig:
    profile: str = "profiles/quality/nirvana-relative-published.yaml"


@dataclass(frozen=True)
class FinalImageConfig:
    """GPTCache-style final-image retrieval (`serving.mode: final_image`)."""

    #: serve the nearest cached prompt's image when its similarity (on the K table's scale) is >= this.
    #: 0.95 is our assumption (NIRVANA's own K=25 threshold: only near-identical prompts), not a published value.
    threshold: float = 0.95
    #: images the cache holds; null = as many prompts as the latent cache holds (capacity_noises / len(ks))
    capacity_images: int | None = None
    #: bytes of one stored image; null = uncompressed 8-bit RGB, width x height x 3 (our assumption)
    image_bytes: int | None = None
    quality_profile: str = "profiles/quality/gptcache-relative-published.yaml"

    def problems(self) -> Problems:
        out: Problems = []
        if not -1.0 <= self.threshold <= 1.0:
            out.append(("threshold", f"a cosine similarity in [-1, 1], got {self.threshold}"))
        for key in ("capacity_images", "image_bytes"):
            value = getattr(self, key)
            if value is not None and value < 1:
                out.append((key, f"a positive integer or null, got {value}"))
        return out


@dataclass(frozen=True)
class SmallModelConfig:
    """A smaller distilled model (`serving.mode: small_model`), with its own latency and quality profiles."""

    #: the small model's name in its latency profile (an entry per GPU type of the pools and resolution)
    model: str = "ssd-1b"
    latency_profile: str = "profiles/latency/ssd1b-1024-published.yaml"
    #: all: every request on the small model, no cache; misses: NIRVANA's cache, misses on the small model
    serve: Literal["all", "misses"] = "all"
    quality_profile: str = "profiles/quality/smallmodel-relative-published.yaml"


@dataclass(frozen=True)
class ServingConfig:
    #: vanilla | nirvana | final_image | small_model (sim/scenario/modes/<name>.py)
    mode: str = "nirvana"
    final_image: FinalImageConfig = field(default_factory=FinalImageConfig)
    small_model: SmallModelConfig = field(default_factory=SmallModelConfig)

    def problems(self) -> Problems:
        from sim.scenario.modes import MODES

        if self.mode not in MODES:
            return [("mode", f"one of {', '.join(MODES.names())}, got {self.mode!r}")]
        return []


@dataclass(frozen=True)
class ExecutionConfig:
    #: the semantics (the executor registry, sim/executors/, has exactly these names; a test checks it):
    #: engine (SimPy, timed: a miss admitted when it has been generated and written) | sequential (no clock:
    #: a miss admitted before the next lookup; cache figures only, latency columns null)
    executor: Literal["engine", "sequential"] = "engine"
    #: how they are carried out: auto (the fastest implementation that supports the run and gives identical
    #: records; the summary names it) | reference (the Python store and policies) | compiled (the compiled cache
    #: core; a run it does not support falls back to the reference with a notice)
    implementation: Literal["auto", "reference", "compiled"] = "auto"


@dataclass(frozen=True)
class MetricsConfig:
    """Warm-up: requests excluded from summary statistics (still simulated, flagged in the records)."""

    warmup_requests: int = 0
    #: and/or every request arriving within this many seconds of the first
    warmup_s: float = 0.0

    def problems(self) -> Problems:
        out: Problems = []
        if self.warmup_requests < 0:
            out.append(("warmup_requests", f"an integer >= 0, got {self.warmup_requests}"))
        if not self.warmup_s >= 0:
            out.append(("warmup_s", f"a number >= 0, got {self.warmup_s}"))
        return out


@dataclass(frozen=True)
class RunConfig:
    """One fully resolved simulation: what ``config.yaml`` beside every result holds."""

    name: str = "experiment"
    seed: int = 0
    trace: TraceConfig = field(default_factory=TraceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    run: ExecutionConfig = field(default_factory=ExecutionConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def problems(self) -> Problems:
        out: Problems = []
        if not self.name or "/" in self.name or self.name in (".", "..") or "\0" in self.name:
            out.append(("name", f"a non-empty name without '/', got {self.name!r}"))
        if self.seed < 0:
            out.append(("seed", f"an integer >= 0, got {self.seed}"))
        # K is the number of steps a hit skips: K >= N would leave nothing to run (service time 0).
        too_big = [k for k in self.cache.ks if k >= self.model.num_steps]
        if too_big:
            out.append(("cache.ks", f"every K below model.num_steps = {self.model.num_steps}, got {too_big[0]}"))
        return out


#: keys that existed once, with what replaced them (a clearer message than "unknown key")
REMOVED_KEYS = {
    ("cache", "enabled"): "removed; use serving.mode: vanilla for no cache (nirvana is the default)",
    ("hardware", "step_events"): "removed: per-step times follow from the records (start_s + text encoder + "
                                 "s x step time) and the latency profile; no per-step events are simulated",
}


#: values that existed once, with what replaced them
REMOVED_VALUES = {
    ("run", "executor", "sequential_fast"): "sequential_fast is now run.executor: sequential (the semantics) with "
                                            "run.implementation: auto, which picks the compiled replay when it "
                                            "supports the run (or compiled, to ask for it)",
}


def check_removed(data: dict[str, Any]) -> None:
    """Raise ConfigError for a key or value a run config no longer has, saying what replaced it."""
    for (section, key), why in REMOVED_KEYS.items():
        node = data.get(section)
        if isinstance(node, dict) and key in node:
            raise ConfigError(f"{section}.{key}: {why}")
    for (section, key, value), why in REMOVED_VALUES.items():
        node = data.get(section)
        if isinstance(node, dict) and node.get(key) == value:
            raise ConfigError(f"{section}.{key}: {why}")


def dump_run_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_data(cfg), sort_keys=False)


def run_config_from_data(data: dict[str, Any], source: str = "<config>") -> RunConfig:
    """A RunConfig from plain data (a config.yaml, or a run of a sweep); errors name ``source`` and the key."""
    try:
        check_removed(data)
        return build(RunConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
