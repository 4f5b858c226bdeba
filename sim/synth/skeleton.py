"""The reuse structure of a synthetic trace, vectorised: arrivals, sessions, users, topics, repeats and edits.

Both generator modes share it; text mode turns it into prompts, vectors mode into unit vectors.
Request kinds (per request, in arrival order):

* START — a new topic: the first prompt of a session (or a topic switch inside one), made from a
  cluster drawn by the day's drifting Zipf popularity;
* REFINE — the session's previous prompt with a few word edits;
* REPEAT_SESSION — the session's previous prompt again (a user re-rolling the seed);
* REPEAT_CROSS — a session that opens with another request's prompt from the same cluster within
  ``repeats.window_s`` (cross-user reuse of popular prompts; if the cluster has none there, one from
  earlier; if it has none at all, the session STARTs the topic instead).

Under ``reuse.model: copy`` (stationary; see ReuseConfig) clusters are topics born during the trace:
a START either opens a new topic or takes the topic of an *anchor*, the request a Pareto gap earlier,
and a REPEAT_CROSS copies the prompt of the request such a gap earlier.

``source`` points at the earlier request a non-START request copies or edits, so following it from
a request always reaches a START: the variant tree that both realisations walk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.synth.config import SECONDS_PER_DAY, ArrivalConfig, SynthConfig

START, REFINE, REPEAT_SESSION, REPEAT_CROSS = 0, 1, 2, 3
KIND_NAMES = ("start", "refine", "repeat_session", "repeat_cross")


@dataclass(frozen=True)
class Skeleton:
    arrival_s: np.ndarray  # float64, non-decreasing
    session: np.ndarray  # int64, numbered by session start
    position: np.ndarray  # int64, 0-based position in the session
    user: np.ndarray  # int64 user index
    kind: np.ndarray  # int8, START / REFINE / REPEAT_SESSION / REPEAT_CROSS
    cluster: np.ndarray  # int64, the cluster drawn for the request's topic (START requests own theirs)
    source: np.ndarray  # int64, earlier request copied or edited; -1 for START
    edits: np.ndarray  # int64, REFINE: number of word edits (vectors: perturbation steps); else 0
    topic_step: np.ndarray  # int64, REFINE: 1-based count of refinements since the topic started
    anchor: np.ndarray  # int64, reuse.model copy: START of a reused topic -> the earlier request it varies; else -1

    def __len__(self) -> int:
        return len(self.arrival_s)


def day_shape(cfg: ArrivalConfig, t_s: np.ndarray) -> np.ndarray:
    """Relative arrival rate at times ``t_s`` (mean 1 over a day)."""
    hour = (t_s % SECONDS_PER_DAY) / 3600.0
    if cfg.hourly_weights:
        w = np.asarray(cfg.hourly_weights, dtype=float)
        return np.asarray(w[np.minimum(hour.astype(np.int64), 23)] / w.mean())
    a = (cfg.peak_to_trough - 1.0) / (cfg.peak_to_trough + 1.0)
    return np.asarray(1.0 + a * np.cos(2 * np.pi * (hour - cfg.peak_hour_utc) / 24.0))


def _shape_max(cfg: ArrivalConfig) -> float:
    if cfg.hourly_weights:
        w = np.asarray(cfg.hourly_weights, dtype=float)
        return float(w.max() / w.mean())
    return 2.0 * cfg.peak_to_trough / (cfg.peak_to_trough + 1.0)


def zipf_cdf(n: int, s: float) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=float) ** -s
    cdf = np.cumsum(w)
    return np.asarray(cdf / cdf[-1])


def draw_ranks(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1).astype(np.int64)


def _sessions(cfg: SynthConfig, num_requests: int,
              rngs: dict[str, np.random.Generator]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Day by day until ``num_requests`` requests arrive before a day's end: per-request
    (arrival, session, position, user) in session order, sessions numbered by start time."""
    arr, ses = cfg.arrivals, cfg.sessions
    session_rate_s = arr.requests_per_day / ses.expected_length() / SECONDS_PER_DAY
    peak = _shape_max(arr)
    user_cdf = zipf_cdf(cfg.users.num_users, cfg.users.activity_zipf)
    trunc = -np.expm1(-ses.max_gap_s / ses.gap_mean_s)  # P(exponential gap < max_gap_s)
    chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    done, pending, day, first_session = 0, np.empty(0), 0, 0
    while done < num_requests:
        lo = day * SECONDS_PER_DAY
        num_candidates = rngs["arrivals"].poisson(session_rate_s * peak * SECONDS_PER_DAY)
        cand = lo + np.sort(rngs["arrivals"].random(num_candidates)) * SECONDS_PER_DAY
        keep = rngs["arrivals"].random(len(cand)) * peak < day_shape(arr, cand)
        starts = cand[keep]
        length = np.minimum(rngs["sessions"].geometric(1.0 / ses.mean_requests, len(starts)), ses.max_requests)
        users = draw_ranks(user_cdf, rngs["users"].random(len(starts)))
        total = int(length.sum())
        offsets = np.cumsum(length) - length
        local = np.repeat(np.arange(len(starts)), length)
        position = np.arange(total) - np.repeat(offsets, length)
        gap = -ses.gap_mean_s * np.log1p(-rngs["sessions"].random(total) * trunc)
        gap[position == 0] = 0.0
        csum = np.cumsum(gap)
        t = starts[local] + csum - np.repeat(csum[offsets], length) if total else np.empty(0)
        chunks.append((t, local + first_session, position, users[local]))
        first_session += len(starts)
        day += 1
        end = day * SECONDS_PER_DAY
        both = np.concatenate([pending, t])
        done += int(np.count_nonzero(both < end))
        pending = both[both >= end]
    t, session, position, user = (np.concatenate([c[k] for c in chunks]) for k in range(4))
    return t, session, position, user


def _prev_in_session(session: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(previous request of the same session or -1, session order) for requests in arrival order."""
    so = np.lexsort((position, session))
    prev = np.full(len(session), -1, dtype=np.int64)
    same = session[so[1:]] == session[so[:-1]]
    prev[so[1:][same]] = so[:-1][same]
    return prev, so


def drifting_ranking(num_clusters: int, num_days: int, drift: float, rng: np.random.Generator) -> np.ndarray:
    """[day, rank] -> cluster: a random day-0 ranking; each day ``drift`` of the rank positions
    exchange their clusters by a random permutation."""
    perms = np.empty((num_days, num_clusters), dtype=np.int64)
    perms[0] = rng.permutation(num_clusters)
    m = round(drift * num_clusters)
    for d in range(1, num_days):
        perms[d] = perms[d - 1]
        idx = rng.choice(num_clusters, m, replace=False)
        perms[d, idx] = perms[d - 1, idx[rng.permutation(m)]]
    return perms


def build_skeleton(cfg: SynthConfig, num_requests: int, num_clusters: int,
                   rngs: dict[str, np.random.Generator]) -> Skeleton:
    """Everything about ``num_requests`` requests except their content; ``rngs`` are named streams."""
    t_all, ses_all, pos_all, user_all = _sessions(cfg, num_requests, rngs)
    order = np.lexsort((pos_all, ses_all, t_all))[:num_requests]
    t, session, position, user = t_all[order], ses_all[order], pos_all[order], user_all[order]
    n = len(t)
    prev, so = _prev_in_session(session, position)

    # Kinds, in three steps so that repeats hit the configured share in expectation:
    # 1. a later request switches topic with probability topic_switch; a session start is offered
    #    as a cross-user repeat with the probability that carries cross_user_fraction of the repeats;
    # 2. topics get their clusters, and each offered cross-user repeat its source — or, when its
    #    cluster has no earlier request, it becomes a START (the first appearance of that topic);
    # 3. the remaining later requests repeat the session's previous prompt with the probability
    #    that makes up the rest of the share, and refine it otherwise.
    rep = cfg.repeats
    first = position == 0
    n0 = int(first.sum())
    u = rngs["kinds"].random(n)
    q0 = min(1.0, rep.share * rep.cross_user_fraction * n / n0)
    switch = ~first & (rngs["kinds"].random(n) < cfg.sessions.topic_switch)
    offered = first & (u < q0)
    offered[0] = False
    kind = np.full(n, REFINE, dtype=np.int8)
    kind[first | switch] = START
    kind[offered] = REPEAT_CROSS

    source = np.full(n, -1, dtype=np.int64)
    anchor = np.full(n, -1, dtype=np.int64)
    cross = np.flatnonzero(offered)
    if cfg.reuse.model == "copy":
        found, cluster, seg_so = _copy_topics(cfg, kind, so, cross, anchor, rngs["popularity"])
    else:
        # Topics: a START or REPEAT_CROSS opens a segment of one session; its cluster comes from the
        # ranking of the day it opens on.
        boundary_so = (kind[so] == START) | (kind[so] == REPEAT_CROSS)
        seg_so = np.cumsum(boundary_so) - 1
        seg = np.empty(n, dtype=np.int64)
        seg[so] = seg_so
        seg_first = so[boundary_so]
        num_days = int(t[-1] // SECONDS_PER_DAY) + 1
        ranking = drifting_ranking(num_clusters, num_days, cfg.popularity.daily_drift, rngs["popularity"])
        rank = draw_ranks(zipf_cdf(num_clusters, cfg.popularity.zipf_s), rngs["popularity"].random(len(seg_first)))
        seg_cluster = ranking[(t[seg_first] // SECONDS_PER_DAY).astype(np.int64), rank]
        cluster = seg_cluster[seg]
        found = _cross_sources(t, cluster, cross, rep.window_s, rngs["kinds"].random(len(cross)))
    kind[cross[found < 0]] = START
    source[cross] = found

    rest = np.flatnonzero(kind == REFINE)
    q1 = min(1.0, max(0.0, (rep.share * n - int((found >= 0).sum())) / max(1, len(rest))))
    kind[rest[u[rest] < q1]] = REPEAT_SESSION
    source[rest] = prev[rest]

    boundary_so = (kind[so] == START) | (kind[so] == REPEAT_CROSS)
    is_refine_so = (kind[so] == REFINE).astype(np.int64)
    cum = np.cumsum(is_refine_so)
    topic_step = np.zeros(n, dtype=np.int64)
    topic_step[so] = (cum - (cum - is_refine_so)[np.flatnonzero(boundary_so)][seg_so]) * is_refine_so

    edits = np.zeros(n, dtype=np.int64)
    refine = np.flatnonzero(kind == REFINE)
    w = np.asarray(cfg.edits.count_weights, dtype=float)
    edit_cdf = np.cumsum(w) / w.sum()
    edits[refine] = 1 + draw_ranks(edit_cdf, rngs["edits"].random(len(refine)))
    return Skeleton(t, session, position, user, kind, cluster, source, edits, topic_step, anchor)


def pareto_gaps(cfg: SynthConfig, m: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` gaps in requests, D = ceil(scale x (U^(-1/alpha) - 1)) >= 1, capped at ``limit`` (ReuseConfig)."""
    r = cfg.reuse
    with np.errstate(over="ignore"):
        d = np.ceil(r.gap_scale_requests * (rng.random(m) ** (-1.0 / r.gap_alpha) - 1.0))
    return np.clip(np.nan_to_num(d, nan=limit, posinf=limit), 1, limit).astype(np.int64)


def _reach_back(at: np.ndarray, gap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Request ``gap`` before each of ``at``; a gap reaching before the first request takes a uniformly
    chosen earlier one instead (so the share of reuse does not depend on the position in the trace),
    and the first request has none (-1)."""
    back = at - gap
    early = back < 0
    back[early] = (rng.random(int(early.sum())) * at[early]).astype(np.int64)
    back[at == 0] = -1
    return back


def _copy_topics(cfg: SynthConfig, kind: np.ndarray, so: np.ndarray, cross: np.ndarray, anchor: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """reuse.model copy: (source of each offered cross-user repeat or -1, topic per request, segment per
    request in session order). Fills ``anchor`` for the STARTs of reused topics.

    An offered repeat copies the request a Pareto gap earlier (_reach_back). A START opens a new topic
    with probability new_topic, else anchors at the request a gap earlier. The evergreen head then takes
    a share of both (head_share of the repeats, head_start_share of the reusing STARTs). A segment's
    topic is its anchor's (or copied request's) topic, so following segment owners back ends at a new
    topic's START: topics are numbered in order of birth."""
    n = len(kind)
    idx = np.arange(n)
    r = cfg.reuse
    found = _reach_back(cross, pareto_gaps(cfg, len(cross), n + 1, rng), rng)
    starts = np.flatnonzero(kind == START)
    starts = np.union1d(starts, cross[found < 0])
    reuse = rng.random(len(starts)) >= r.new_topic
    back = _reach_back(starts, pareto_gaps(cfg, len(starts), n + 1, rng), rng)
    anchored = reuse & (back >= 0)
    anchor[starts[anchored]] = back[anchored]
    pick = h = np.zeros(0, dtype=np.int64)
    if r.head_share > 0 or r.head_start_share > 0:
        # Evergreen head: the first segment to pick head topic h opens it (a new topic); later ones
        # anchor at (START) or copy (repeat) that first request.
        seg = np.concatenate([starts[reuse], cross[found >= 0]])
        p_head = np.r_[np.full(int(reuse.sum()), r.head_start_share), np.full(int((found >= 0).sum()), r.head_share)]
        pick = np.sort(seg[rng.random(len(seg)) < p_head])
        h = draw_ranks(zipf_cdf(r.head_topics, r.head_zipf), rng.random(len(pick)))
    if len(pick):
        order = np.lexsort((pick, h))
        pick, h = pick[order], h[order]
        first = np.r_[True, h[1:] != h[:-1]]
        opener = pick[first][np.cumsum(first) - 1]
        later = pick[~first]
        opened = pick[first]
        anchor[opened] = -1
        was_cross = np.isin(opened, cross)
        if was_cross.any():  # a repeat of a topic nobody has asked for yet starts it instead
            gone = np.searchsorted(cross, opened[was_cross])
            found[gone] = -1
            starts = np.union1d(starts, opened[was_cross])
        later_cross = np.isin(later, cross[found >= 0])
        found[np.searchsorted(cross, later[later_cross])] = opener[~first][later_cross]
        anchor[later[~later_cross]] = opener[~first][~later_cross]
    is_cross = np.zeros(n, dtype=bool)
    is_cross[cross[found >= 0]] = True
    boundary_so = (kind[so] == START) | is_cross[so] | np.isin(so, starts)
    seg_so = np.cumsum(boundary_so) - 1
    owner = np.empty(n, dtype=np.int64)
    owner[so] = so[boundary_so][seg_so]
    ptr = owner.copy()
    copied = np.where(anchor >= 0, anchor, -1)
    copied[cross[found >= 0]] = found[found >= 0]
    has = copied >= 0
    ptr[idx[has]] = owner[copied[has]]
    root = _jump(ptr)
    _, topic = np.unique(root, return_inverse=True)
    return found, topic.astype(np.int64), seg_so


def _cross_sources(t: np.ndarray, cluster: np.ndarray, cross: np.ndarray, window_s: float,
                   u: np.ndarray) -> np.ndarray:
    """For each request in ``cross`` an earlier request of the same cluster — uniformly among those
    within the window, else among all earlier ones — or -1 when the cluster has none yet."""
    n = len(t)
    key = np.sort(cluster * n + np.arange(n))
    by_cluster = key % n
    c = cluster[cross]
    window_lo = np.searchsorted(t, t[cross] - window_s, side="left")
    hi = np.searchsorted(key, c * n + cross)
    lo_w = np.searchsorted(key, c * n + window_lo)
    lo_all = np.searchsorted(key, c * n)
    lo = np.where(hi > lo_w, lo_w, lo_all)
    pick = by_cluster[np.minimum(lo + (u * (hi - lo)).astype(np.int64), n - 1)]
    return np.where(hi > lo, pick, -1)


def resolve_variants(sk: Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """(variant, root): the request that created each request's prompt (repeats point to it), and
    the START at the root of its refinement chain (whose cluster the prompt belongs to)."""
    n = len(sk)
    idx = np.arange(n)
    repeat = (sk.kind == REPEAT_SESSION) | (sk.kind == REPEAT_CROSS)
    variant = np.where(repeat, sk.source, idx)
    variant = _jump(variant)
    up = np.where(sk.kind == START, idx, variant[np.maximum(sk.source, 0)])
    up = np.where(repeat, variant, up)
    return variant, _jump(up)


def _jump(ptr: np.ndarray) -> np.ndarray:
    """Follow pointers (each to itself or an earlier index) to their fixed points by doubling."""
    while True:
        nxt = ptr[ptr]
        if np.array_equal(nxt, ptr):
            return ptr
        ptr = nxt


def depth_levels(parent: np.ndarray) -> np.ndarray:
    """Depth of each node of a forest given parents (roots point to themselves), by list ranking."""
    d = (parent != np.arange(len(parent))).astype(np.int64)
    nxt = parent.copy()
    while True:
        nn = nxt[nxt]
        if np.array_equal(nn, nxt):
            return d
        d = d + d[nxt]
        nxt = nn
