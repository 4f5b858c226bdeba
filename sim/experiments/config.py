"""Experiment configuration: frozen, validated on load, unknown keys rejected with their dotted path."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sim.cache.kselect import DEFAULT_KS, DEFAULT_THRESHOLDS, check_table
from sim.errors import ConfigError
from sim.fileio import parse_yaml, read_yaml_mapping
from sim.limits import (
    MAX_BATCH,
    MAX_CAPACITY_BYTES,
    MAX_CAPACITY_NOISES,
    MAX_GPUS_PER_POOL,
    MAX_LATENT_CHANNELS,
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
class CacheConfig:
    enabled: bool = True
    policy: str = "lcbfu"
    #: what one eviction removes: a single noise, or a whole prompt with all its noises
    eviction_unit: Literal["noise", "prompt"] = "noise"
    capacity_noises: int | None = 1500
    capacity_bytes: int | None = None
    #: the K values at which a miss stores a latent (NIRVANA: 5, 10, 15, 20, 25)
    ks: tuple[int, ...] = DEFAULT_KS
    thresholds: tuple[Threshold, ...] = tuple(Threshold(a, k) for a, k in DEFAULT_THRESHOLDS)
    retrieval: str = "exact_cosine"
    #: map from the trace embedder's cosine to the thresholds' (CLIP) scale: auto = the shipped map
    #: fitted for the trace's embedder (profiles/similarity/), none = raw cosine, or a map file path
    similarity_map: str = "auto"
    #: shared: one cache for all users (NIRVANA); user: retrieval partitioned per user
    scope: Literal["shared", "user"] = "shared"
    #: latents become usable only once the storage write finishes (else at generation end)
    write_delay: bool = True

    def problems(self) -> Problems:
        from sim.cache.policies import POLICIES
        from sim.retrieval import RETRIEVERS

        out: Problems = []
        if self.policy not in POLICIES:
            out.append(("policy", f"one of {', '.join(POLICIES.names())}, got {self.policy!r}"))
        elif self.eviction_unit not in POLICIES.get(self.policy).units:
            units = POLICIES.get(self.policy).units
            out.append(("eviction_unit", f"one of {list(units)} for policy {self.policy}"))
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
    #: one simulation event per denoising step (same results; lets a run be observed step by step)
    step_events: bool = False
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


@dataclass(frozen=True)
class Experiment:
    """A base run and an optional grid sweep over dotted keys (one run per combination)."""

    base: RunConfig
    sweep: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def runs(self) -> list[tuple[str, RunConfig]]:
        """(run folder name, config) per grid point; names come from the swept values (Hydra style)."""
        if not self.sweep:
            return [("run", self.base)]
        keys = [k for k, _ in self.sweep]
        out = []
        for values in itertools.product(*(v for _, v in self.sweep)):
            data = to_data(self.base)
            for key, value in zip(keys, values, strict=True):
                set_dotted(data, key, value)
            name = ",".join(f"{k}={_fmt(v)}" for k, v in zip(keys, values, strict=True))
            try:
                out.append((name, build(RunConfig, data)))
            except ConfigError as exc:
                raise ConfigError(f"sweep point {name}: {exc}") from None
        return out


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


def load_experiment(path: str | Path, overrides: list[tuple[str, Any]] = ()) -> Experiment:  # type: ignore[assignment]
    """Read, override and validate an experiment YAML; every error names the file and dotted key."""
    path = Path(path)
    raw = read_yaml_mapping(path, "experiment file", ConfigError)
    return experiment_from_data(raw, overrides, source=str(path))


def experiment_from_data(
    raw: dict[str, Any], overrides: list[tuple[str, Any]] = (), source: str = "<config>"  # type: ignore[assignment]
) -> Experiment:
    data = copy.deepcopy(raw)
    sweep_raw = data.pop("sweep", None) or {}
    try:
        for key, value in overrides:
            if key.startswith("sweep."):
                sweep_raw[key[len("sweep.") :]] = value
            else:
                set_dotted(data, key, value)
        base = build(RunConfig, data)
        if not isinstance(sweep_raw, dict):
            raise ConfigError("sweep: expected a mapping of dotted key -> list of values")
        sweep = []
        for key, values in sweep_raw.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"sweep.{key}: expected a non-empty list of values")
            sweep.append((str(key), tuple(values)))
        experiment = Experiment(base, tuple(sweep))
        experiment.runs()  # validates every grid point now, not halfway through a sweep
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return experiment


def dump_run_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_data(cfg), sort_keys=False)
