"""Experiment configuration: frozen, validated on load, unknown keys rejected with their dotted path."""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sim.cache.kselect import DEFAULT_KS, DEFAULT_THRESHOLDS, check_table
from sim.cache.params import AdmissionParams, PolicyParams
from sim.errors import ConfigError
from sim.fileio import parse_yaml, read_yaml_mapping
from sim.limits import (
    MAX_BATCH,
    MAX_CAPACITY_BYTES,
    MAX_CAPACITY_NOISES,
    MAX_GPUS_PER_POOL,
    MAX_LATENT_CHANNELS,
    MAX_RUN_FOLDER_NAME_BYTES,
    MAX_SIDE_PX,
    MAX_STEPS,
    MAX_VAE_SCALE,
)
from sim.schema import build, set_dotted, to_data

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
        if not self.time_scale > 0:
            out.append(("time_scale", f"a number > 0, got {self.time_scale}"))
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
    #: exact (blocked, complete: decisions equal the exact retriever's) | ivf (faiss IVF) | hnsw (hnswlib);
    #: the approximate ones can miss a neighbour (measured in benchmarks/README.md)
    method: Literal["exact", "ivf", "hnsw"] = "exact"
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
    #: what one eviction removes: a single noise, or a whole prompt with all its noises
    eviction_unit: Literal["noise", "prompt"] = "noise"
    capacity_noises: int | None = 1500
    capacity_bytes: int | None = None
    #: the K values at which a miss stores a latent (NIRVANA: 5, 10, 15, 20, 25)
    ks: tuple[int, ...] = DEFAULT_KS
    thresholds: tuple[Threshold, ...] = tuple(Threshold(a, k) for a, k in DEFAULT_THRESHOLDS)
    #: exact_cosine (numpy reference) | exact_key (identical text only) | candidates (precomputed fast path)
    retrieval: str = "exact_cosine"
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
            if self.eviction_unit not in units:
                out.append(("eviction_unit", f"one of {list(units)} for policy {self.policy}"))
        if self.admission not in ADMISSIONS:
            out.append(("admission", f"one of {', '.join(ADMISSIONS.names())}, got {self.admission!r}"))
        if self.retrieval not in RETRIEVERS:
            names = ", ".join(RETRIEVERS.names())
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
        if not self.batch_window_s >= 0:
            out.append(("batch_window_s", f"a number >= 0, got {self.batch_window_s}"))
        if not self.step_jitter_cv >= 0:
            out.append(("step_jitter_cv", f"a number >= 0, got {self.step_jitter_cv}"))
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
    #: engine: SimPy, timed (a miss admitted when generated and written) | sequential: no clock, a miss
    #: admitted before the next lookup (cache figures only; latency columns null) | sequential_fast: the
    #: same records from a compiled loop (nirvana with exact_key retrieval)
    executor: str = "engine"

    def problems(self) -> Problems:
        from sim.executors import EXECUTORS

        if self.executor not in EXECUTORS:
            return [("executor", f"one of {', '.join(EXECUTORS.names())}, got {self.executor!r}")]
        return []


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
        from sim.cache.offline import OFFLINE

        out: Problems = []
        if not self.name or "/" in self.name or self.name in (".", "..") or "\0" in self.name:
            out.append(("name", f"a non-empty name without '/', got {self.name!r}"))
        if self.seed < 0:
            out.append(("seed", f"an integer >= 0, got {self.seed}"))
        # K is the number of steps a hit skips: K >= N would leave nothing to run (service time 0).
        too_big = [k for k in self.cache.ks if k >= self.model.num_steps]
        if too_big:
            out.append(("cache.ks", f"every K below model.num_steps = {self.model.num_steps}, got {too_big[0]}"))
        if self.cache.policy in OFFLINE and self.serving.mode != "vanilla":
            # An offline reference reads request indices as its clock and K as NIRVANA's latent reuse.
            if self.run.executor != "sequential":
                out.append(("cache.policy", f"{self.cache.policy} (an offline reference) runs only with "
                                            f"run.executor: sequential, got {self.run.executor}"))
            elif self.serving.mode != "nirvana":
                out.append(("cache.policy", f"{self.cache.policy} (an offline reference) runs only with "
                                            f"serving.mode: nirvana, got {self.serving.mode}"))
        untimed = self.run.executor in ("sequential", "sequential_fast")
        if untimed and (self.hardware.batch_window_s > 0 or self.hardware.step_jitter_cv > 0):
            key = "batch_window_s" if self.hardware.batch_window_s > 0 else "step_jitter_cv"
            out.append((f"hardware.{key}", f"0 with run.executor {self.run.executor} (it keeps no clock: no "
                                           "latencies to shape)"))
        if self.run.executor == "sequential_fast":
            c = self.cache
            fast_ok = (self.serving.mode == "nirvana" and c.retrieval in ("exact_key", "candidates")
                       and c.policy in FAST_POLICIES and c.admission == "always")
            if not fast_ok:
                out.append(("run.executor", "serving.mode nirvana, cache.retrieval exact_key or candidates, "
                                            f"cache.policy one of {', '.join(FAST_POLICIES)} and cache.admission "
                                            "always for sequential_fast (sequential replays anything else)"))
        return out


#: the policies the sequential_fast replay has integer-array versions of (sim/executors/replay_loop.py)
FAST_POLICIES = ("fifo", "lru", "lfu", "lcbfu")

#: a sweep of more points than this needs an explicit yes (`python -m sim run --yes`)
MAX_POINTS = 10_000
SWEEP_SECTIONS = ("sweep", "grid", "zip", "seeds")

Axis = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Experiment:
    """A base run swept three ways: a cartesian grid over dotted keys (``sweep`` holds the grid's axes,
    from ``grid:`` or the older ``sweep:``), ``zipped`` lists that vary together, and seed replicas.
    Point order: the grid's product (first key outermost), then the zip rows, then the seeds."""

    base: RunConfig
    sweep: tuple[Axis, ...] = ()
    zipped: tuple[Axis, ...] = ()
    seeds: tuple[int, ...] = ()

    def num_points(self) -> int:
        n = len(self.zipped[0][1]) if self.zipped else 1
        for _, values in self.sweep:
            n *= len(values)
        return n * (len(self.seeds) or 1)

    def swept_keys(self) -> list[str]:
        """The dotted keys that vary, in run-name order (``seed`` last when replicated)."""
        return [k for k, _ in self.sweep] + [k for k, _ in self.zipped] + (["seed"] if self.seeds else [])

    def spec(self) -> dict[str, Any]:
        """The plain-data form of the whole experiment (what a results folder's experiment.yaml holds)."""
        out: dict[str, Any] = {"base": to_data(self.base), "sweep": {k: list(v) for k, v in self.sweep}}
        if self.zipped:
            out["zip"] = {k: list(v) for k, v in self.zipped}
        if self.seeds:
            out["seeds"] = list(self.seeds)
        return out

    def points(self) -> list[list[tuple[str, Any]]]:
        """(dotted key, value) assignments per point, in run order."""
        rows = [list(zip([k for k, _ in self.zipped], vals, strict=True))
                for vals in zip(*(v for _, v in self.zipped), strict=True)] if self.zipped else [[]]
        seeds: list[list[tuple[str, Any]]] = [[("seed", s)] for s in self.seeds] or [[]]
        keys = [k for k, _ in self.sweep]
        return [list(zip(keys, values, strict=True)) + row + seed
                for values in itertools.product(*(v for _, v in self.sweep)) for row in rows for seed in seeds]

    def runs(self) -> list[tuple[str, RunConfig]]:
        """(run folder name, config) per point; names come from the swept values (Hydra style)."""
        if not (self.sweep or self.zipped or self.seeds):
            return [("run", self.base)]
        out = []
        seen: dict[str, str] = {}
        for assignment in self.points():
            data = to_data(self.base)
            for key, value in assignment:
                set_dotted(data, key, value)
            name = ",".join(f"{k}={_fmt(v)}" for k, v in assignment)
            _check_folder_name(name, seen, assignment)
            try:
                _check_removed(data)
                out.append((name, build(RunConfig, data)))
            except ConfigError as exc:
                raise ConfigError(f"sweep point {name}: {exc}") from None
        return out


def _check_folder_name(name: str, seen: dict[str, str], assignment: list[tuple[str, Any]]) -> None:
    """Two points may not share a run folder (the second would silently replace the first: duplicate values in
    a list, or values whose names collide such as ``a/b`` and ``a_b``), and a name must fit the file system."""
    point = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in assignment)
    if name in seen:
        raise ConfigError(f"sweep: the points {seen[name]} and {point} would both write run folder {name!r} "
                          "(a value listed twice, or values whose folder names collide); make them distinct")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_RUN_FOLDER_NAME_BYTES:
        raise ConfigError(f"sweep point {point}: its run folder name is {len(name.encode())} bytes, over the file "
                          f"system's limit ({MAX_RUN_FOLDER_NAME_BYTES}); sweep fewer keys or shorter values")
    seen[name] = point


def _fmt(value: Any) -> str:
    return "null" if value is None else str(value).replace("/", "_")


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    """``key.sub=value`` strings; the value is parsed as YAML (numbers, lists, null)."""
    out = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE with a dotted key")
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as exc:
            why = " ".join(str(exc).split())
            raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({why})") from None
        out.append((key, value))
    return out


def load_experiment(
    path: str | Path, overrides: list[tuple[str, Any]] = (), max_points: int | None = MAX_POINTS  # type: ignore[assignment]
) -> Experiment:
    """Read, override and validate an experiment YAML; every error names the file and dotted key.
    ``max_points=None`` accepts a sweep of any size (the CLI's ``--yes``)."""
    path = Path(path)
    raw = read_yaml_mapping(path, "experiment file", ConfigError)
    return experiment_from_data(raw, overrides, source=str(path), max_points=max_points)


def experiment_from_data(
    raw: dict[str, Any], overrides: list[tuple[str, Any]] = (), source: str = "<config>",  # type: ignore[assignment]
    max_points: int | None = MAX_POINTS,
) -> Experiment:
    """An experiment from its data: either ``base`` (a run config) beside ``grid``/``zip``/``seeds``, or a
    run config at the top level with those sections (and the older ``sweep:``, a grid) beside it."""
    data = copy.deepcopy(raw)
    try:
        if "base" in data:
            unknown = sorted(set(data) - {"base", *SWEEP_SECTIONS})
            if unknown:
                raise ConfigError(f"{unknown[0]}: unknown key beside base (known: base, grid, zip, seeds, sweep)")
            if not isinstance(data["base"], dict):
                raise ConfigError("base: expected a mapping (a complete run config)")
        sections = {name: data.pop(name, None) for name in SWEEP_SECTIONS}
        run_data = data.pop("base") if "base" in data else data
        for name in ("sweep", "grid", "zip"):
            if sections[name] is None:
                sections[name] = {}
            elif not isinstance(sections[name], dict):
                raise ConfigError(f"{name}: expected a mapping of dotted key -> list of values")
        if sections["sweep"] and sections["grid"]:
            raise ConfigError("sweep: give the grid as grid: or as sweep:, not both")
        grid_name = "grid" if sections["grid"] else "sweep"
        grid_raw, zip_raw = sections[grid_name], sections["zip"]
        for key, value in overrides:
            head, _, rest = key.partition(".")
            if head in ("sweep", "grid") and rest:
                grid_raw[rest] = value  # sweep.KEY=[..] adds a grid axis, whichever name the file uses
            elif head == "zip" and rest:
                zip_raw[rest] = value
            elif key == "seeds":
                sections["seeds"] = value
            else:
                set_dotted(run_data, key[len("base."):] if head == "base" and rest else key, value)
        _check_removed(run_data)
        base = build(RunConfig, run_data)
        known = to_data(base)
        grid = _axes(grid_name, grid_raw, known)
        zipped = _axes("zip", zip_raw, known)
        if len({len(v) for _, v in zipped}) > 1:
            lengths = ", ".join(f"{k}: {len(v)}" for k, v in zipped)
            raise ConfigError(f"zip: lists must have equal lengths, got {lengths}")
        seeds = _seeds(sections["seeds"], base.seed)
        keys = [k for k, _ in grid] + [k for k, _ in zipped] + (["seed"] if seeds else [])
        for key in keys:
            if keys.count(key) > 1:
                raise ConfigError(f"{key}: swept twice (in more than one of grid, zip, seeds)")
        experiment = Experiment(base, grid, zipped, seeds)
        n = experiment.num_points()
        if max_points is not None and n > max_points:
            raise ConfigError(f"{grid_name}: {n:,} sweep points exceed {max_points:,}; pass --yes to run them all")
        experiment.runs()  # validates every point now, not halfway through a sweep
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return experiment


#: keys that existed once, with what replaced them (a clearer message than "unknown key")
REMOVED_KEYS = {
    ("cache", "enabled"): "removed; use serving.mode: vanilla for no cache (nirvana is the default)",
    ("hardware", "step_events"): "removed: per-step times follow from the records (start_s + text encoder + "
                                 "s x step time) and the latency profile; no per-step events are simulated",
}


def _check_removed(data: dict[str, Any]) -> None:
    for (section, key), why in REMOVED_KEYS.items():
        node = data.get(section)
        if isinstance(node, dict) and key in node:
            raise ConfigError(f"{section}.{key}: {why}")

def _axes(section: str, raw: dict[Any, Any], known: dict[str, Any]) -> tuple[Axis, ...]:
    """Validated (dotted key, values) axes of one sweep section; each key must be a key of the run config."""
    out = []
    for key, values in raw.items():
        key = str(key)
        node: Any = known
        for i, part in enumerate(key.split(".")):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(key.split(".")[:i]) or "the run config"
                raise ConfigError(f"{section}.{key}: unknown key (no {part!r} in {where})")
            node = node[part]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{section}.{key}: expected a non-empty list of values")
        out.append((key, tuple(values)))
    return tuple(out)


def _seeds(raw: Any, first: int) -> tuple[int, ...]:
    """``seeds: [3, 7]`` (those seeds) or ``seeds: 4`` (four replicas from the base seed up)."""
    if raw is None:
        return ()
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 1:
            raise ConfigError(f"seeds: expected a count >= 1 or a list of seeds, got {raw}")
        return tuple(range(first, first + raw))
    if (not isinstance(raw, list) or not raw
            or any(not isinstance(s, int) or isinstance(s, bool) for s in raw) or len(set(raw)) != len(raw)):
        raise ConfigError(f"seeds: expected a count >= 1 or a non-empty list of distinct integers, got {raw!r}")
    return tuple(raw)


def dump_run_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_data(cfg), sort_keys=False)
