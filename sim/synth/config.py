"""Configuration of the synthetic DiffusionDB-style trace generator: frozen, validated, loaded from YAML.

Every field has a default; the comment above it says where the number comes from — a published
figure (DiffusionDB, NIRVANA's production log) or, marked *assumption*, a choice of ours with no
published counterpart. experiments/synth/default.yaml lists every field with its default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.errors import ConfigError
from sim.fileio import read_yaml_mapping
from sim.schema import build, to_data

Problems = list[tuple[str, str]]
SECONDS_PER_DAY = 86_400.0
# Bounds far above DiffusionDB's scale (10,380 users, 1.8M prompts), low enough that a typo is an
# error instead of an exhausted machine.
MAX_REQUESTS = 10**9
MAX_USERS = 10**8
MAX_SESSION_REQUESTS = 10**6
MAX_EDITS = 60  # a refinement that needs more edits than this to become new is refused by the realiser
MAX_VECTOR_DIM = 4_096
MAX_VECTOR_FLOATS = 2**28  # num_clusters x dim cluster centres (1 GiB of float32)


def _positive(obj: object, keys: tuple[str, ...]) -> Problems:
    return [(k, f"a number > 0, got {getattr(obj, k)}") for k in keys if not getattr(obj, k) > 0]


def _probability(obj: object, keys: tuple[str, ...]) -> Problems:
    return [(k, f"a probability in [0, 1], got {getattr(obj, k)}") for k in keys if not 0 <= getattr(obj, k) <= 1]


@dataclass(frozen=True)
class ArrivalConfig:
    """Session starts are a diurnal non-homogeneous Poisson process, sampled by thinning."""

    #: mean requests per day. DiffusionDB 2M: 2,000,000 requests whose timestamps span August 2022;
    #: we assume Aug 6–31 (26 days, the collection window as we recall DiffusionDB's paper; unverified
    #: here, no copy): 2M / 26 = 76.9K/day. Over all 31 days of August it would be 64.5K/day.
    requests_per_day: float = 76_923.0
    #: peak-hour rate / trough-hour rate of the sinusoidal day profile (assumption: no published figure)
    peak_to_trough: float = 2.0
    #: hour of day (UTC; arrival_s = 0 is midnight UTC of day 0) of the sinusoid's peak (assumption:
    #: Discord traffic from the Americas and Europe peaks in the UTC evening)
    peak_hour_utc: float = 18.0
    #: optional piecewise-constant profile: 24 relative hourly rates (UTC); when set, replaces the sinusoid
    hourly_weights: tuple[float, ...] = ()

    def problems(self) -> Problems:
        out = _positive(self, ("requests_per_day",))
        if not self.peak_to_trough >= 1:
            out.append(("peak_to_trough", f"a number >= 1 (1 = flat), got {self.peak_to_trough}"))
        if not 0 <= self.peak_hour_utc < 24:
            out.append(("peak_hour_utc", f"an hour in [0, 24), got {self.peak_hour_utc}"))
        w = self.hourly_weights
        if w and (len(w) != 24 or min(w) < 0 or not sum(w) > 0):
            out.append(("hourly_weights", "24 non-negative rates with a positive sum, or an empty list"))
        return out


@dataclass(frozen=True)
class SessionConfig:
    """A session is one user's burst of requests; a gap longer than ``max_gap_s`` would end it."""

    #: mean requests per session before the cap: length = min(Geometric(1 / mean), max) (assumption;
    #: with topic_switch, the main knob of the similarity calibration: see StartConfig)
    mean_requests: float = 3.0
    max_requests: int = 100
    #: gaps between a session's requests: exponential with this mean, truncated at max_gap_s (assumption:
    #: a Discord bot answered in well under a minute, users re-prompt right away)
    gap_mean_s: float = 90.0
    #: 30 minutes of inactivity ends a session (the usual web-log sessionisation cutoff)
    max_gap_s: float = 1_800.0
    #: chance that a later request of a session starts a new topic (a fresh cluster) instead of
    #: refining or repeating (assumption)
    topic_switch: float = 0.2

    def problems(self) -> Problems:
        out = _positive(self, ("gap_mean_s", "max_gap_s"))
        if not self.mean_requests >= 1:
            out.append(("mean_requests", f"a number >= 1, got {self.mean_requests}"))
        if not 1 <= self.max_requests <= MAX_SESSION_REQUESTS:
            out.append(("max_requests", f"an integer in 1..{MAX_SESSION_REQUESTS}, got {self.max_requests}"))
        return out + _probability(self, ("topic_switch",))

    def expected_length(self) -> float:
        """E[min(G, max)] for G ~ Geometric(p = 1 / mean) on {1, 2, ...}."""
        p = 1.0 / self.mean_requests
        return (1.0 - (1.0 - p) ** self.max_requests) / p


@dataclass(frozen=True)
class UserConfig:
    #: DiffusionDB: its 14M images come from 10,380 distinct (hashed) user names
    num_users: int = 10_380
    #: Zipf exponent of sessions per user (assumption: a few heavy users, a long tail)
    activity_zipf: float = 1.0

    def problems(self) -> Problems:
        out: Problems = []
        if not 1 <= self.num_users <= MAX_USERS:
            out.append(("num_users", f"an integer in 1..{MAX_USERS}, got {self.num_users}"))
        if not self.activity_zipf >= 0:
            out.append(("activity_zipf", f"a number >= 0, got {self.activity_zipf}"))
        return out


@dataclass(frozen=True)
class PopularityConfig:
    """Topic clusters have Zipf popularity whose ranking drifts from day to day.

    Day 0 ranks the clusters by a random permutation; rank r has weight r^-zipf_s. Each later day,
    ``daily_drift`` of the rank positions (chosen uniformly) exchange their clusters by a random
    permutation: most of yesterday's ranking survives, some popular topics fall and some rise.
    """

    #: Zipf exponent over clusters (assumption; prompt popularity in DiffusionDB is heavy-tailed)
    zipf_s: float = 1.0
    daily_drift: float = 0.2
    #: text mode: the log's (query, cached) pairs with CLIP score above this join one cluster
    #: (0.65 = every matched pair of NIRVANA's production log)
    link_above: float = 0.65

    def problems(self) -> Problems:
        out = [] if self.zipf_s >= 0 else [("zipf_s", f"a number >= 0, got {self.zipf_s}")]
        return out + _probability(self, ("daily_drift",))


@dataclass(frozen=True)
class ReuseConfig:
    """Which topic a new topic segment (a session start or a topic switch) takes, and so how far back reuse reaches.

    ``ranking`` (the default): topics are a fixed set of clusters drawn by the day's drifting Zipf
    ranking (PopularityConfig). A finite set is used up: the share of first appearances falls over
    the trace, so long traces are not stationary.

    ``copy`` (stationary): a segment opens a brand-new topic with probability ``new_topic``; otherwise
    it takes the topic of the request ``D`` requests earlier, D = ceil(gap_scale_requests x (U^(-1/gap_alpha)
    - 1)), U uniform — a Pareto (Lomax) gap in requests, so a topic is reused in proportion to its
    recent requests (rich get richer, popularity drifts as activity moves on) and the reach of reuse
    is scale-free (gap_alpha < 1: infinite mean). A gap reaching before the first request takes a
    uniformly chosen earlier request instead, so the share of reuse is the same all through the trace.
    The copied request is the segment's *anchor*: its prompt is what the new prompt varies
    (text: ``starts.personalise_edits`` word edits; vectors: a rotation, VectorConfig). Cross-user
    repeats (REPEAT_CROSS) copy the anchor's prompt exactly, drawn with the same gap. All three numbers
    are assumptions, fitted to NIRVANA's LCBFU capacity row (``python -m sim trace calibrate``).
    """

    model: str = "ranking"
    new_topic: float = 0.3
    gap_scale_requests: float = 1_000.0
    gap_alpha: float = 0.5
    #: copy: an evergreen head — with probability head_share a cross-user repeat copies the first prompt of
    #: one of head_topics evergreen topics, drawn by Zipf(head_zipf), instead of the request a gap earlier;
    #: with probability head_start_share a START of a reused topic varies that prompt instead of its gap
    #: anchor (assumption: prompts that stay popular all month, such as shared templates; 0 = no head)
    head_share: float = 0.0
    head_start_share: float = 0.0
    head_topics: int = 1_000
    head_zipf: float = 1.0

    def problems(self) -> Problems:
        out: Problems = []
        if self.model not in ("ranking", "copy"):
            out.append(("model", f"'ranking' or 'copy', got {self.model!r}"))
        if not 1 <= self.head_topics <= MAX_USERS:
            out.append(("head_topics", f"an integer in 1..{MAX_USERS}, got {self.head_topics}"))
        if not self.head_zipf >= 0:
            out.append(("head_zipf", f"a number >= 0, got {self.head_zipf}"))
        return out + _probability(self, ("new_topic", "head_share", "head_start_share")) + _positive(self, (
            "gap_scale_requests",
                                                                                         "gap_alpha"))


@dataclass(frozen=True)
class RepeatConfig:
    #: share of requests whose prompt exactly repeats an earlier one (DiffusionDB 2M: 2M rows,
    #: 1.5M unique prompts, so ~25% repeat an earlier prompt)
    share: float = 0.25
    #: of those repeats, the share that open a session with another request's prompt from the same
    #: topic cluster (cross-user reuse); the rest re-run the session's previous prompt (assumption)
    cross_user_fraction: float = 0.3
    #: cross-user repeats pick uniformly among the cluster's requests of this recent window, so
    #: reuse follows today's popularity (assumption: one day)
    window_s: float = SECONDS_PER_DAY

    def problems(self) -> Problems:
        return _probability(self, ("share", "cross_user_fraction")) + _positive(self, ("window_s",))


@dataclass(frozen=True)
class EditConfig:
    """A refinement edits the previous prompt of its session word by word.

    Words are classed with closed lists (sim/synth/text.py): stopwords, *modifiers* (a
    closed list of adjectives and style tags, kept if the pool uses them) and everything else,
    treated as nouns. The first ``noun_phase`` refinements of a topic edit nouns, later ones edit
    modifiers (DESIGN §2: users refine nouns first, then adjectives).
    """

    #: probability of 1, 2, 3, ... edits in one refinement (assumption: mostly one or two words)
    count_weights: tuple[float, ...] = (0.5, 0.3, 0.15, 0.05)
    #: relative weights of substitution, addition and deletion (assumption)
    substitute: float = 0.5
    add: float = 0.3
    delete: float = 0.2
    noun_phase: int = 2
    #: words seen fewer times than this in the pool are not drawn as replacements or additions
    min_word_count: int = 2

    def problems(self) -> Problems:
        out: Problems = []
        w = self.count_weights
        if not w or min(w) < 0 or not sum(w) > 0 or len(w) > MAX_EDITS:
            out.append(("count_weights", f"non-negative weights for 1, 2, ... edits (at most {MAX_EDITS}) with a "
                                         "positive sum"))
        if min(self.substitute, self.add, self.delete) < 0 or not self.substitute + self.add + self.delete > 0:
            out.append(("substitute", "substitute, add and delete to be >= 0 with a positive sum"))
        if self.noun_phase < 0:
            out.append(("noun_phase", f"an integer >= 0, got {self.noun_phase}"))
        if self.min_word_count < 1:
            out.append(("min_word_count", f"an integer >= 1, got {self.min_word_count}"))
        return out


@dataclass(frozen=True)
class StartConfig:
    """How a new topic's first prompt is made in text mode (the calibration knob for similarity).

    With probability ``remix`` the prompt is a real member of the cluster with ``remix_fraction`` of
    its nouns replaced by random pool nouns: a new subject in a familiar style, usually far from every
    earlier prompt (the misses of NIRVANA's log). Otherwise it is a real member not used yet, and once
    the cluster is used up, a used member with ``personalise_edits`` word edits.
    """

    remix: float = 0.6
    remix_fraction: float = 1.0
    personalise_edits: int = 2

    def problems(self) -> Problems:
        out = _probability(self, ("remix",))
        if not 0 < self.remix_fraction <= 1:
            out.append(("remix_fraction", f"a number in (0, 1], got {self.remix_fraction}"))
        if not 1 <= self.personalise_edits <= MAX_EDITS:
            out.append(("personalise_edits", f"an integer in 1..{MAX_EDITS}, got {self.personalise_edits}"))
        return out


@dataclass(frozen=True)
class VectorConfig:
    """Vectors mode: clusters on the unit sphere instead of text (scale tests, no embedder)."""

    #: 64 keeps 14M requests within a few GB; 384 matches MiniLM's width
    dim: int = 64
    #: topic clusters (DiffusionDB Large: 1.8M unique prompts; the clusters of the log: ~3.8K)
    num_clusters: int = 10_000
    #: member = normalise(centre + g / sqrt(concentration)), g ~ N(0, I / dim): cosine to the centre
    #: ≈ 1 / sqrt(1 + 1 / concentration), between two members ≈ 1 / (1 + 1 / concentration)
    concentration: float = 3.0
    #: a refinement with e edits adds sqrt(e) * refine_noise * g to the previous vector
    refine_noise: float = 0.3
    #: ``clusters`` (members scattered around fixed cluster centres; the fields above) or ``tree``
    #: (needs reuse.model copy): every new prompt is its parent rotated to an exact cosine s —
    #: v = s p + sqrt(1 - s^2) u, u a random unit vector orthogonal to p — so similarities are on the
    #: scale the K table reads (CLIP's: no similarity map applies to vectors), and prompts of different
    #: topics are random directions (cosine ~ N(0, 1/dim): far below 0.65 at dim >= 128)
    model: str = "clusters"
    #: tree, REFINE with e word edits: 1 - s = refine_distance x e^refine_exponent x exp(refine_sigma Z),
    #: Z ~ N(0, 1), s capped to [-1, 0.999]. Defaults fitted to the text generator at 50K requests (copy, no head)
    #: (minilm mapped to CLIP; median 1 - s per refinement: 0.067 / 0.138 / 0.186 / 0.225 for 1-4
    #: edits, 10-90% of one edit 0.016-0.196): traces/README.md gives the command and the figures
    refine_distance: float = 0.067
    refine_exponent: float = 0.9
    refine_sigma: float = 1.0
    #: tree, the first prompt of a reused topic to its anchor's: 1 - s = start_distance x exp(start_sigma Z)
    #: (text generator, `starts.personalise_edits` = 2 edits of the anchor: median 1 - s 0.154, 10-90%
    #: 0.054-0.344)
    start_distance: float = 0.154
    start_sigma: float = 0.75

    def problems(self) -> Problems:
        out: Problems = []
        if self.model not in ("clusters", "tree"):
            out.append(("model", f"'clusters' or 'tree', got {self.model!r}"))
        for key in ("refine_distance", "start_distance"):
            if not 0 < getattr(self, key) <= 2:
                out.append((key, f"a cosine distance in (0, 2], got {getattr(self, key)}"))
        for key in ("refine_exponent", "refine_sigma", "start_sigma"):
            if not 0 <= getattr(self, key) <= 10:
                out.append((key, f"a number in [0, 10], got {getattr(self, key)}"))
        for key in ("dim", "num_clusters"):
            if getattr(self, key) < 1:
                out.append((key, f"an integer >= 1, got {getattr(self, key)}"))
        if self.dim > MAX_VECTOR_DIM:
            out.append(("dim", f"an integer in 1..{MAX_VECTOR_DIM}, got {self.dim}"))
        elif self.num_clusters * self.dim > MAX_VECTOR_FLOATS:
            out.append(("num_clusters", f"num_clusters x dim <= 2**28 (1 GiB of centres), got {self.num_clusters}"))
        return out + _positive(self, ("concentration", "refine_noise"))


@dataclass(frozen=True)
class SynthConfig:
    #: text mode: the real prompt pool and its clusters, built from NIRVANA's production log by
    #: `python -m sim trace build-pool` (committed; resolved like sim.paths.resolve)
    pool: str = "traces/pool/prompts.parquet"
    #: text mode, alternative: the log CSV itself (../shared/data/clip_pairs_calibration.csv), clustered
    #: at popularity.link_above; when set, ``pool`` is not read
    calibration: str | None = None
    arrivals: ArrivalConfig = field(default_factory=ArrivalConfig)
    sessions: SessionConfig = field(default_factory=SessionConfig)
    users: UserConfig = field(default_factory=UserConfig)
    popularity: PopularityConfig = field(default_factory=PopularityConfig)
    reuse: ReuseConfig = field(default_factory=ReuseConfig)
    repeats: RepeatConfig = field(default_factory=RepeatConfig)
    edits: EditConfig = field(default_factory=EditConfig)
    starts: StartConfig = field(default_factory=StartConfig)
    vectors: VectorConfig = field(default_factory=VectorConfig)

    def problems(self) -> Problems:
        if self.vectors.model == "tree" and self.reuse.model != "copy":
            return [("vectors.model", "'tree' needs reuse.model 'copy' (its prompts vary their anchors), got "
                                      f"reuse.model {self.reuse.model!r}")]
        # Cross-user repeats happen only at session starts: the share they need must fit there.
        need = self.repeats.share * self.repeats.cross_user_fraction * self.sessions.expected_length()
        if need > 1:
            return [("repeats.cross_user_fraction",
                     f"share x cross_user_fraction x mean session length <= 1 (session starts cannot "
                     f"carry all cross-user repeats), got {need:.2f}")]
        if self.repeats.share * (1 - self.repeats.cross_user_fraction) > 1 - 1 / self.sessions.expected_length():
            return [("repeats.share", "a share that in-session repeats can reach with this session length")]
        return []


def synth_config_from_data(data: dict[str, Any], source: str = "<config>") -> SynthConfig:
    try:
        return build(SynthConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_synth_config(path: str | Path | None) -> SynthConfig:
    """Read and validate a generator YAML; ``None`` gives the defaults. Errors name the file and key."""
    if path is None:
        return SynthConfig()
    path = Path(path)
    return synth_config_from_data(read_yaml_mapping(path, "generator config", ConfigError), str(path))


def config_data(cfg: SynthConfig) -> dict[str, Any]:
    data = to_data(cfg)
    assert isinstance(data, dict)
    return data

