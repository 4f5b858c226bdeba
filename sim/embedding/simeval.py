"""Time-consistent check of an embedder and its similarity map against a CLIP retrieval log, and its CV refit.

The pairs file (``../shared/data/clip_pairs_calibration.csv``) is a production retrieval log in log
order: per row, a query, CLIP's top-1 cosine against the production cache, and the matched cached
prompt when that was a hit. Each query is looked up here, under the embedder, against a pool that
holds only what the production cache could hold *before* that query (time-consistent):

* ``inserted`` (default): the matched cached prompts of its own and earlier rows, and the queries of
  earlier rows that CLIP scored as misses. Only misses insert (DESIGN.md §1), and the log agrees:
  in this pool 3.3% of queries find their own text and CLIP scores every one of them above 0.95;
* ``all-queries``: the matched cached prompts so far and every earlier query. Here 11% of queries
  find their own text, but CLIP scores only 34% of those above 0.95: the production cache did not
  hold most earlier hits, so this pool is wider than the cache was.

Each query's top-1 cosine over its pool goes through the similarity map to CLIP's scale and then
through the K table; CLIP's own score gives the reference K. A query with an empty pool is a miss.
Rows whose query is blank (the calibration file has one, a single space) are left out and named;
their matched cached prompt still enters the pool, as it was cached at that time.

Refit (`trace calibrate-similarity`): folds by a hash of the query, log order kept, the pool built
from the whole file (the held-out half of the log is judged against its own half-log pool, the
same size). Measured on the calibration file, 5 folds, held out (accuracy / exact K / hit rate vs
CLIP's 0.774 / mean K vs 7.06 / K-mix TV / joint TV of (raw-score decile, K)):

* deterministic quantile map: 0.740 / 0.487 / 0.773 / 7.05 / 0.002 / 0.40;
* stochastic map (score drawn from CLIP's binned conditional quantiles given the raw score):
  0.688 / 0.398 / 0.772 / 7.07 / 0.009 / 0.03.

The deterministic map is kept: both meet the aggregate targets, and only the stochastic one
reproduces P(K | embedder score), but its draws cost 5 points of accuracy and 9 of exact K (below
the 0.73 / 0.49 floors). A monotone map that matches the K mix has its five thresholds fixed by
the mix, so exact K cannot rise above ~0.49 without giving up the mix (thresholds searched for
exact K under TV <= 0.015 gain 0.002 held out). With the ``all-queries`` pool the deterministic
map cannot reach TV <= 0.03 (0.055): its 11% exact repeats tie at cosine 1 and all map to K=25.
Pool size matters: judged on each half of the file as its own log (half the pool), the refitted
map's hit rate is 0.743 / 0.732 against CLIP's 0.780 / 0.768.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.cache.kselect import MISS, KTable
from sim.embedding.embed import DEFAULT_CACHE
from sim.embedding.simmap import top1_over
from sim.errors import InputError

POOLS = ("inserted", "all-queries")
COLUMNS = ("clip_score", "query_prompt", "cached_prompt")
SCORE_TOLERANCE = 1e-5  # the log's cosines exceed 1 by float32 rounding (up to 1.0000005)
_BLOCK = 256


@dataclass(frozen=True)
class PairsLog:
    """One retrieval log in log order; ``cached`` is '' where the row was a miss."""

    source: str
    clip: np.ndarray  # float64, CLIP top-1 cosine per row, clipped to [-1, 1]
    queries: tuple[str, ...]
    cached: tuple[str, ...]
    blank_rows: tuple[int, ...]  # 1-based data rows whose query is blank: not evaluated

    @property
    def evaluated(self) -> np.ndarray:
        """Indices of the rows that are looked up (non-blank queries)."""
        blank = {r - 1 for r in self.blank_rows}
        return np.array([i for i in range(len(self.queries)) if i not in blank], dtype=np.int64)


def read_pairs(path: Path) -> PairsLog:
    """Read and validate a pairs file; every error names the file and the row (1-based, header excluded)."""
    try:
        # utf-8-sig: a BOM from a spreadsheet export is not part of the first column's name.
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
            clip: list[float] = []
            queries: list[str] = []
            cached: list[str] = []
            blank: list[int] = []
            for row_no, row in enumerate(reader, start=1):
                raw = row["clip_score"]
                try:
                    score = float(raw)
                except (TypeError, ValueError):
                    raise InputError(f"{path}: row {row_no}: clip_score {raw!r} is not a number") from None
                if not math.isfinite(score) or abs(score) > 1.0 + SCORE_TOLERANCE:
                    raise InputError(f"{path}: row {row_no}: clip_score {raw!r} is outside [-1, 1]")
                query, match = row["query_prompt"] or "", row["cached_prompt"] or ""
                if not query.strip():
                    blank.append(row_no)
                clip.append(min(1.0, max(-1.0, score)))
                queries.append(query)
                cached.append(match if match.strip() else "")
    except FileNotFoundError:
        raise InputError(f"{path}: pairs file not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a readable CSV file ({exc})") from None
    if len(queries) == len(blank):
        raise InputError(f"{path}: no row with a non-blank query_prompt")
    return PairsLog(str(path), np.asarray(clip, dtype=np.float64), tuple(queries), tuple(cached), tuple(blank))


@dataclass(frozen=True)
class PoolPlan:
    """Distinct prompts (pool prompts first, in insertion order) and, per evaluated row, its query and pool size."""

    prompts: tuple[str, ...]
    query_index: np.ndarray  # per evaluated row, index of its query in ``prompts``
    pool_size: np.ndarray  # per evaluated row, how many of the first prompts its pool holds


def plan_pool(log: PairsLog, pool: str = "inserted", table: KTable | None = None) -> PoolPlan:
    """Which prompts each evaluated query may match: a prefix of the prompts in insertion order."""
    if pool not in POOLS:
        raise InputError(f"pool {pool!r}: expected one of {', '.join(POOLS)}")
    lowest = (table or KTable()).lowest
    order: dict[str, int] = {}
    sizes: list[int] = []
    evaluated = log.evaluated
    blank = set(int(i) for i in np.setdiff1d(np.arange(len(log.queries)), evaluated))
    for i, (query, match) in enumerate(zip(log.queries, log.cached, strict=True)):
        if match:
            order.setdefault(match, len(order))  # the row's own match was cached before the lookup
        if i in blank:
            continue
        sizes.append(len(order))
        if pool == "all-queries" or log.clip[i] <= lowest:
            order.setdefault(query, len(order))  # inserted after its own lookup
    pool_prompts = list(order)
    extra = [q for q in dict.fromkeys(log.queries[i] for i in evaluated) if q not in order]
    index = {p: j for j, p in enumerate(pool_prompts + extra)}
    return PoolPlan(tuple(pool_prompts + extra), np.array([index[log.queries[i]] for i in evaluated], np.int64),
                    np.asarray(sizes, np.int64))


def time_consistent_top1(plan: PoolPlan, vectors: np.ndarray) -> np.ndarray:
    """Each evaluated query's top-1 cosine over its own pool prefix (NaN where the pool is empty).

    Pool sizes never shrink along the log, so a block of queries shares the prefix of its first
    query (one matmul) and each query adds only the few prompts inserted since then.
    """
    q = vectors[plan.query_index]
    out = np.full(len(q), -np.inf)
    for a in range(0, len(q), _BLOCK):
        b = min(a + _BLOCK, len(q))
        base = int(plan.pool_size[a])
        if base:
            out[a:b] = top1_over(q[a:b], vectors[:base])
        for j in range(a, b):
            size = int(plan.pool_size[j])
            if size > base:
                out[j] = max(out[j], float(top1_over(q[j:j + 1], vectors[base:size])[0]))
    out[~np.isfinite(out)] = np.nan
    return out


def ks_of(table: KTable) -> tuple[int, ...]:
    return (MISS, *sorted({k for _, k in table.thresholds}))


def select_k(scores: np.ndarray, table: KTable) -> np.ndarray:
    """K per score on the table's scale (NaN, i.e. no candidate, is a miss)."""
    return np.array([table.select(float(s)) if np.isfinite(s) else MISS for s in scores], dtype=np.int64)


def compare_k(k_clip: np.ndarray, k_pred: np.ndarray, ks: tuple[int, ...]) -> dict[str, Any]:
    """Per-query agreement and aggregate mix of predicted K against CLIP's K (0 = miss)."""
    if len(k_clip) != len(k_pred) or len(k_clip) == 0:
        raise ValueError("compare_k needs two equal, non-empty K arrays")
    hit_c, hit_p = k_clip != MISS, k_pred != MISS
    mix_c = np.array([(k_clip == k).mean() for k in ks])
    mix_p = np.array([(k_pred == k).mean() for k in ks])
    confusion = [[int(((k_clip == kc) & (k_pred == kp)).sum()) for kp in ks] for kc in ks]
    return {
        "queries": len(k_clip),
        "hit_miss_accuracy": float((hit_c == hit_p).mean()),
        "false_hit_rate": float(hit_p[~hit_c].mean()) if (~hit_c).any() else None,
        "hit_recall": float(hit_p[hit_c].mean()) if hit_c.any() else None,
        "exact_k_agreement": float((k_clip == k_pred).mean()),
        "hit_rate": {"clip": float(hit_c.mean()), "embedder": float(hit_p.mean())},
        "mean_k": {"clip": float(k_clip.mean()), "embedder": float(k_pred.mean())},
        "k_mix": {"k": list(ks), "clip": mix_c.tolist(), "embedder": mix_p.tolist()},
        "k_mix_tv_distance": float(0.5 * np.abs(mix_c - mix_p).sum()),
        "confusion": {"rows": "CLIP K", "columns": "embedder K", "k": list(ks), "counts": confusion},
    }


def joint_tv(raw: np.ndarray, k_clip: np.ndarray, k_pred: np.ndarray, ks: tuple[int, ...],
             num_bins: int = 10) -> float:
    """TV distance between the joint distributions of (embedder raw-score decile, K), CLIP's vs predicted.

    A map that reproduces P(K | embedder score) scores 0 here even where it cannot match queries one by one.
    """
    finite = np.where(np.isfinite(raw), raw, -2.0)
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, num_bins + 1)[1:-1]))
    bins = np.searchsorted(edges, finite, side="right")
    cells = len(edges) + 1
    kpos = {k: j for j, k in enumerate(ks)}
    def joint(k: np.ndarray) -> np.ndarray:
        counts = np.zeros((cells, len(ks)))
        np.add.at(counts, (bins, np.array([kpos[int(v)] for v in k])), 1)
        return counts / len(k)
    return float(0.5 * np.abs(joint(k_clip) - joint(k_pred)).sum())


def fold_of(queries: list[str] | tuple[str, ...], folds: int) -> np.ndarray:
    """Fold per query by a hash of its text, so repeats of one query never straddle train and test."""
    return np.array([int(hashlib.sha1(q.encode("utf-8")).hexdigest()[:8], 16) % folds for q in queries], np.int64)


MapFit = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray, np.random.Generator], np.ndarray]]


def cross_validate(raw: np.ndarray, clip: np.ndarray, folds: np.ndarray, fit: MapFit, seed: int = 0) -> np.ndarray:
    """CLIP-scale scores for every query, each from a map fitted on the other folds only (log order kept)."""
    out = np.full(len(raw), np.nan)
    for f in np.unique(folds):
        train = (folds != f) & np.isfinite(raw)
        test = folds == f
        scale = fit(raw[train], clip[train])
        out[test] = scale(raw[test], np.random.default_rng([seed, int(f)]))
    return out


def fit_deterministic(raw: np.ndarray, clip: np.ndarray) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """The quantile map (sim/embedding/simmap.py), as a scale function for cross_validate."""
    from sim.embedding.simmap import fit_quantile_map

    x, y = fit_quantile_map(raw, clip)
    return lambda r, _rng: np.interp(r, x, y)


def fit_stochastic(raw: np.ndarray, clip: np.ndarray, num_bins: int = 20, num_levels: int = 21
                   ) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """CLIP-scale score drawn from its conditional quantiles given the embedder's score (binned by its quantiles).

    Exact repeats (raw >= 0.99999) get a bin of their own where they are over 1% of the queries.
    """
    edges = np.unique(np.round(np.quantile(raw, np.linspace(0, 1, num_bins + 1)[1:-1]), 5))
    if (raw >= 0.99999).mean() > 0.01:
        edges = np.unique(np.r_[edges[edges < 0.99999], 0.99999])
    bins = np.searchsorted(edges, raw, side="right")
    levels = np.linspace(0, 1, num_levels)
    filled = [j for j in range(len(edges) + 1) if (bins == j).any()]
    # An empty bin (possible only through rounding of the edges) borrows its nearest filled bin's quantiles.
    table = [np.quantile(clip[bins == min(filled, key=lambda f: abs(f - j))], levels) for j in range(len(edges) + 1)]

    def draw(r: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b = np.searchsorted(edges, r, side="right")
        u = rng.random(len(r))
        out = np.full(len(r), np.nan)
        for j, quantiles in enumerate(table):
            rows = (b == j) & np.isfinite(r)
            out[rows] = np.interp(u[rows], levels, quantiles)
        return out

    return draw


@dataclass(frozen=True)
class LookedUp:
    """A pairs log looked up under one embedder: raw top-1 per evaluated row, CLIP's score and the query."""

    log: PairsLog
    pool: str
    embedder: str
    raw: np.ndarray
    clip: np.ndarray
    queries: tuple[str, ...]


def look_up(log: PairsLog, embedder_name: str, pool: str = "inserted", cache_dir: Path | None = DEFAULT_CACHE,
            vectors: Callable[[list[str]], tuple[np.ndarray, str]] | None = None) -> LookedUp:
    """Embed every distinct prompt once (through the on-disk cache; None: no cache) and take each query's
    time-consistent top-1; ``vectors`` replaces the embedder (tests)."""
    from sim.embedding.embed import embed_prompts

    plan = plan_pool(log, pool)
    if vectors is None:
        vecs, tag = embed_prompts(list(plan.prompts), embedder_name, cache_dir)
    else:
        vecs, tag = vectors(list(plan.prompts))
    ev = log.evaluated
    return LookedUp(log, pool, tag, time_consistent_top1(plan, vecs), log.clip[ev],
                    tuple(log.queries[i] for i in ev))


def evaluate(looked: LookedUp, scores: np.ndarray, scale: str, table: KTable | None = None) -> dict[str, Any]:
    """All figures for one set of CLIP-scale scores (one per evaluated row)."""
    table = table or KTable()
    ks = ks_of(table)
    k_clip, k_pred = select_k(looked.clip, table), select_k(scores, table)
    result = {
        "pairs": looked.log.source,
        "embedder": looked.embedder,
        "scale": scale,
        "pool": looked.pool,
        "rows": len(looked.log.queries),
        "blank_query_rows_left_out": list(looked.log.blank_rows),
        "no_candidate": int(np.isnan(looked.raw).sum()),
        **compare_k(k_clip, k_pred, ks),
        "joint_tv_raw_decile_x_k": joint_tv(looked.raw, k_clip, k_pred, ks),
    }
    return result


def refit(looked: LookedUp, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Deterministic and stochastic maps, cross-validated by query hash; the deterministic fit on all rows."""
    from sim.embedding.simmap import fit_quantile_map

    if folds < 2:
        raise InputError(f"--folds {folds}: need at least 2")
    fold = fold_of(looked.queries, folds)
    held_out = {}
    for name, fit in (("deterministic", fit_deterministic), ("stochastic", fit_stochastic)):
        scores = cross_validate(looked.raw, looked.clip, fold, fit, seed)
        held_out[name] = evaluate(looked, scores, f"{name} map, {folds}-fold cross-validated")
    finite = np.isfinite(looked.raw)
    x, y = fit_quantile_map(looked.raw[finite], looked.clip[finite])
    fitted = evaluate(looked, np.interp(looked.raw, x, y), "deterministic map, fitted on all rows")
    return {"x": x, "y": y, "held_out": held_out, "fitted": fitted, "folds": folds, "seed": seed}


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The figures of one evaluation, as the CLI prints them."""
    mix = r["k_mix"]
    fh = "n/a" if r["false_hit_rate"] is None else f"{r['false_hit_rate']:.3f}"
    rec = "n/a" if r["hit_recall"] is None else f"{r['hit_recall']:.3f}"
    blank = r["blank_query_rows_left_out"]
    lines = [
        f"{r['pairs']}: {r['queries']:,} queries ({len(blank)} with a blank query left out"
        f"{': rows ' + ', '.join(map(str, blank[:5])) if blank else ''}"
        f"), pool {r['pool']}, {r['embedder']}, scale: {r['scale']}",
        f"per query: hit/miss accuracy {r['hit_miss_accuracy']:.3f}  false-hit rate {fh}  hit recall {rec}  "
        f"exact K {r['exact_k_agreement']:.3f}",
        f"aggregate: hit rate {r['hit_rate']['embedder']:.3f} (CLIP {r['hit_rate']['clip']:.3f})  mean K "
        f"{r['mean_k']['embedder']:.2f} (CLIP {r['mean_k']['clip']:.2f})  K-mix TV {r['k_mix_tv_distance']:.3f}  "
        f"joint TV (raw decile x K) {r['joint_tv_raw_decile_x_k']:.3f}",
        "K mix      " + "  ".join(f"{'miss' if k == MISS else f'K={k}':>6s}" for k in mix["k"]),
        "  CLIP     " + "  ".join(f"{v:6.3f}" for v in mix["clip"]),
        "  embedder " + "  ".join(f"{v:6.3f}" for v in mix["embedder"]),
        "confusion (rows CLIP K, columns embedder K)",
    ]
    for k, counts in zip(mix["k"], r["confusion"]["counts"], strict=True):
        lines.append(f"  {'miss' if k == MISS else f'K={k}':>5s}  " + " ".join(f"{c:6d}" for c in counts))
    return lines


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "evaluate", help="judge an embedder and its similarity map against a CLIP retrieval log",
        description="Time-consistent check: each query of the pairs file (in log order) is looked up under the "
                    "embedder against only what the cache could hold before it; its mapped top-1 chooses K, "
                    "compared with the K of CLIP's logged score.",
    )
    cmd.add_argument("--pairs", required=True, help="CSV with clip_score, query_prompt, cached_prompt in log order")
    cmd.add_argument("--embedder", default="minilm", help="registered embedder (default minilm)")
    cmd.add_argument("--map", default="auto",
                     help="similarity map YAML, 'auto' (the shipped map for the embedder's tag) or 'none' (raw cosine)")
    cmd.add_argument("--pool", choices=POOLS, default="inserted",
                     help="what the cache holds before each query (default inserted: matched prompts and earlier "
                          "CLIP misses)")
    cmd.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="embedding cache ('' disables it)")
    cmd.add_argument("--json", action="store_true", help="print the figures as JSON")
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    import json

    from sim.embedding.simmap import find_map, load_map

    log = read_pairs(Path(args.pairs))
    smap = None
    if args.map not in ("auto", "none"):
        smap = load_map(args.map)  # a bad map file fails before any embedding work
    looked = look_up(log, args.embedder, args.pool, Path(args.cache_dir) if args.cache_dir else None)
    if args.map == "auto":
        smap = find_map(looked.embedder)
    if smap is not None and smap.embedder != looked.embedder:
        raise InputError(f"{smap.source}: fitted for embedder {smap.embedder!r}, but --embedder {args.embedder} "
                         f"is {looked.embedder!r}")
    if smap is None:
        scores, scale = looked.raw, ("raw cosine (no map for this embedder)" if args.map == "auto" else "raw cosine")
    else:
        scores, scale = smap.apply_array(looked.raw), f"CLIP text cosine via {Path(smap.source).name}"
    result = evaluate(looked, scores, scale)
    print(json.dumps(result, indent=2) if args.json else "\n".join(summary_lines(result)))
    return 0
