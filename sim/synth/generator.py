"""Synthetic DiffusionDB-style traces: `python -m sim trace synth` in text mode (real prompts) or vectors mode.

Text mode grows prompts from the real pool of NIRVANA's production log (sim/synth/text.py);
vectors mode draws unit vectors clustered on the sphere for scale tests (no text, no embedder).
Both share one reuse structure (sim/synth/skeleton.py) whose every knob is in
sim/synth/config.py. One seed feeds named random streams, so a seed gives a byte-identical
trace. Outputs — T.parquet, T.embeddings.parquet and T.synth.json (statistics, published targets
and the resolved config) — are written under temporary names and renamed when complete.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sim.embedding.embed import DEFAULT_CACHE, embed_trace
from sim.errors import ConfigError
from sim.fileio import atomic_path, check_output_file, writing
from sim.paths import resolve
from sim.rng import rng_stream
from sim.synth.config import (
    MAX_REQUESTS,
    SECONDS_PER_DAY,
    SynthConfig,
    VectorConfig,
    config_data,
    load_synth_config,
)
from sim.synth.skeleton import (
    KIND_NAMES,
    REFINE,
    START,
    Skeleton,
    build_skeleton,
    depth_levels,
    resolve_variants,
)
from sim.trace import PartitionGuarantee, embeddings_path, write_embeddings, write_trace

Mode = Literal["text", "vectors"]
STREAMS = ("arrivals", "sessions", "users", "kinds", "popularity", "edits", "text", "vectors")

#: the published numbers the defaults are calibrated to (also written into every T.synth.json)
TARGETS: dict[str, Any] = {
    "exact_repeat_share": {"value": 0.25, "source": "DiffusionDB 2M: 2M rows, 1.5M unique prompts"},
    "requests_per_day": {
        "range": [64_516, 76_923],
        "source": "DiffusionDB 2M: 2M requests over August 2022; 2M/31 days (whole month) to 2M/26 days "
                  "(Aug 6-31, the assumed collection window, the default)",
    },
    "nearest_earlier_similarity": {
        "share_above_0.65_clip": 0.775,
        "k_mix_clip": {"5": 0.426, "10": 0.213, "15": 0.046, "20": 0.032, "25": 0.059, "miss": 0.225},
        "source": "NIRVANA's production retrieval log, top-1 CLIP text cosine against its cache "
                  "(../shared/data/README.md); measure a trace with an embedder and its similarity map",
    },
}


@dataclass(frozen=True)
class SynthResult:
    skeleton: Skeleton
    mode: str
    prompt: pa.Array  # string, one per request
    label: np.ndarray  # content cluster of each request's prompt
    edits_applied: np.ndarray  # word edits (text) or perturbation steps (vectors) that made the prompt
    origin: np.ndarray | None  # text mode: how each prompt was made (synth_text.ORIGINS index)
    num_users: int = 1  # the configured population: user ids are zero-padded to its width
    distinct_prompts: list[str] | None = None  # vectors mode: one per vector row
    vectors: np.ndarray | None = None


def _streams(seed: int) -> dict[str, np.random.Generator]:
    return {name: rng_stream(seed, f"synth.{name}") for name in STREAMS}


def generate(cfg: SynthConfig, num_requests: int, seed: int, mode: Mode = "text") -> SynthResult:
    """Generate ``num_requests`` requests (no files written)."""
    if num_requests < 1:
        raise ConfigError(f"requests: expected an integer >= 1, got {num_requests}")
    rngs = _streams(seed)
    if mode == "text":
        from sim.synth.text import TextRealiser, load_pool

        pool = load_pool(cfg)
        sk = build_skeleton(cfg, num_requests, len(pool.clusters), rngs)
        _variant, root = resolve_variants(sk)
        # The per-request text loop draws scalars; a local random.Random seeded from the named
        # stream is ~20x faster per draw than numpy's Generator, and just as reproducible.
        rnd = random.Random(int(rngs["text"].integers(2**63)))
        prompts, applied, origin = TextRealiser(pool, cfg, rnd).realise(sk)
        return SynthResult(sk, mode, pa.array(prompts, pa.string()), sk.cluster[root], applied, origin,
                           cfg.users.num_users)
    if mode != "vectors":
        raise ConfigError(f"mode: expected 'text' or 'vectors', got {mode!r}")
    if cfg.reuse.model == "copy" and cfg.vectors.model != "tree":
        raise ConfigError("vectors.model: reuse.model 'copy' in vectors mode needs vectors.model 'tree' (its topics "
                          "are born during the trace, they have no fixed cluster centres)")
    sk = build_skeleton(cfg, num_requests, cfg.vectors.num_clusters, rngs)
    variant, root = resolve_variants(sk)
    label = sk.cluster[root]
    realise = _realise_tree if cfg.vectors.model == "tree" else _realise_vectors
    ids, vectors, slot = realise(sk, variant, label, cfg.vectors, rngs["vectors"])
    applied = np.where(sk.kind == REFINE, sk.edits, 0)
    return SynthResult(sk, mode, ids.take(pa.array(slot[variant])), label, applied, None,
                       cfg.users.num_users, ids.to_pylist(), vectors)


def _normalised(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _realise_vectors(sk: Skeleton, variant: np.ndarray, label: np.ndarray, vc: VectorConfig,
                     rng: np.random.Generator) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(id string per new prompt, its unit vector, request -> row) for the START and REFINE requests.

    A START is a member of its cluster: normalise(centre + g / sqrt(concentration)); a REFINE with e
    edits is normalise(parent + sqrt(e) * refine_noise * g), g ~ N(0, I / dim). Parents come first,
    so rows are filled level by level of the refinement forest."""
    new, slot = _new_rows(sk)
    parent = np.where(sk.kind[new] == START, new, variant[np.maximum(sk.source[new], 0)])
    parent_row = slot[parent]
    centres = _normalised(rng.standard_normal((vc.num_clusters, vc.dim)))
    vectors = np.empty((len(new), vc.dim), dtype=np.float32)
    scale = 1.0 / np.sqrt(vc.dim)
    for d, r in _level_chunks(parent_row):
        g = rng.standard_normal((len(r), vc.dim)) * scale
        if d == 0:
            base, step = centres[label[new[r]]], 1.0 / np.sqrt(vc.concentration)
            vectors[r] = _normalised(base + step * g)
        else:
            step_e = vc.refine_noise * np.sqrt(sk.edits[new[r]])[:, None]
            vectors[r] = _normalised(vectors[parent_row[r]] + step_e * g)
    return _vector_ids(new, label), vectors, slot


def _new_rows(sk: Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """(the START and REFINE requests, which make every new prompt; request -> their row or -1)."""
    new = np.flatnonzero((sk.kind == START) | (sk.kind == REFINE))
    slot = np.full(len(sk), -1, dtype=np.int64)
    slot[new] = np.arange(len(new))
    return new, slot


def _level_chunks(parent_row: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(depth, rows) of the forest ``parent_row`` level by level, parents before children, in chunks of
    2^18 rows (bounded temporaries at 14M requests)."""
    level = depth_levels(parent_row)
    by_level = np.argsort(level, kind="stable")
    bounds = np.searchsorted(level[by_level], np.arange(int(level.max()) + 2))
    for d in range(len(bounds) - 1):
        rows = by_level[bounds[d] : bounds[d + 1]]
        for lo in range(0, len(rows), 1 << 18):
            yield d, rows[lo : lo + (1 << 18)]


def _rotated(parent: np.ndarray, s: np.ndarray, g: np.ndarray) -> np.ndarray:
    """s p + sqrt(1 - s^2) u with u the unit part of g orthogonal to p: cosine s to the unit vector p."""
    u = g - np.einsum("ij,ij->i", g, parent)[:, None] * parent
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return _normalised(s[:, None] * parent + np.sqrt(1.0 - s * s)[:, None] * u)


def _realise_tree(sk: Skeleton, variant: np.ndarray, label: np.ndarray, vc: VectorConfig,
                  rng: np.random.Generator) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """vectors.model tree: (ids, unit vectors, request -> row) for the START and REFINE requests.

    A new topic's START is a random direction; a START of a reused topic is its anchor's prompt rotated
    to cosine 1 - start_distance exp(start_sigma Z); a REFINE with e edits is its parent rotated to
    1 - refine_distance e^refine_exponent exp(refine_sigma Z), Z ~ N(0, 1), cosines kept in [-1, 0.999].
    Rows are filled level by level of the forest."""
    new, slot = _new_rows(sk)
    is_start = sk.kind[new] == START
    anchored = is_start & (sk.anchor[new] >= 0)
    parent = np.where(is_start, new, variant[np.maximum(sk.source[new], 0)])
    parent[anchored] = variant[sk.anchor[new[anchored]]]
    parent_row = slot[parent]
    z = rng.standard_normal(len(new))
    dist = vc.refine_distance * sk.edits[new].astype(np.float64) ** vc.refine_exponent * np.exp(vc.refine_sigma * z)
    dist[anchored] = vc.start_distance * np.exp(vc.start_sigma * z[anchored])
    s = np.clip(1.0 - dist, -1.0, 0.999)
    vectors = np.empty((len(new), vc.dim), dtype=np.float32)
    for d, r in _level_chunks(parent_row):
        g = rng.standard_normal((len(r), vc.dim))
        vectors[r] = _normalised(g) if d == 0 else _rotated(vectors[parent_row[r]].astype(np.float64), s[r], g)
    return _vector_ids(new, label), vectors, slot


def _vector_ids(new: np.ndarray, label: np.ndarray) -> pa.Array:
    """Ids "v:<cluster>:<n-th variant of that cluster>", numbered in order of appearance."""
    lab = label[new]
    order = np.lexsort((new, lab))
    sorted_lab = lab[order]
    group_start = np.searchsorted(sorted_lab, sorted_lab, side="left")
    nth = np.empty(len(new), dtype=np.int64)
    nth[order] = np.arange(len(new)) - group_start
    return pc.binary_join_element_wise("v", pc.cast(pa.array(lab), pa.string()),
                                       pc.cast(pa.array(nth), pa.string()), ":")


def _padded(prefix: str, values: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(values), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def trace_table(res: SynthResult) -> pa.Table:
    """The trace's columns; in vectors mode each request's topic too (see ``guarantee``)."""
    sk = res.skeleton
    n = len(sk)
    columns = {
        "request_id": _padded("synth-", np.arange(n), max(7, len(str(n - 1)))),
        "arrival_s": pa.array(sk.arrival_s, pa.float64()),
        "prompt": res.prompt,
        "user": _padded("u", sk.user, len(str(res.num_users - 1))),
    }
    if res.mode == "vectors":
        columns["topic"] = pa.array(res.label, pa.int64())
    return pa.table(columns)


def guarantee(res: SynthResult) -> PartitionGuarantee | None:
    """Vectors mode: every topic grows from its own random direction (a tree root, or a cluster centre), by
    rotations and noise independent of other topics, and the law of a topic's vectors is invariant under
    rotation: prompts of different topics are independent uniform unit vectors (PartitionGuarantee)."""
    if res.mode != "vectors" or res.vectors is None:
        return None
    return PartitionGuarantee("independent_uniform", int(res.vectors.shape[1]))


def statistics(res: SynthResult) -> dict[str, Any]:
    sk = res.skeleton
    n = len(sk)
    days = float(sk.arrival_s[-1]) / SECONDS_PER_DAY
    unique = int(pc.count_distinct(res.prompt).as_py())
    sessions = int(np.unique(sk.session).size)
    refine = sk.kind == REFINE
    out: dict[str, Any] = {
        "mode": res.mode,
        "requests": n,
        "days": round(days, 4),
        "requests_per_day": round(n / days, 1) if days > 0 else None,
        "exact_repeat_share": round(1 - unique / n, 4),
        "unique_prompts": unique,
        "users": int(np.unique(sk.user).size),
        "sessions": sessions,
        "mean_session_length": round(n / sessions, 3),
        "kinds": {name: round(float(np.mean(sk.kind == k)), 4) for k, name in enumerate(KIND_NAMES)},
        "mean_edits_per_refinement": round(float(res.edits_applied[refine].mean()), 3) if refine.any() else None,
    }
    if res.origin is not None:
        from sim.synth.text import ORIGINS

        out["origins"] = {name: round(float(np.mean(res.origin == k)), 4) for k, name in enumerate(ORIGINS)}
    out["diurnal"] = _diurnal(sk.arrival_s)
    out["popularity"] = _drift(sk.arrival_s, res.label)
    return out


def _diurnal(t: np.ndarray) -> dict[str, Any]:
    """Hour-of-day counts over whole days and the peak/trough ratio of their first harmonic."""
    whole = int(t[-1] // SECONDS_PER_DAY)
    if whole < 1:
        return {"whole_days": 0, "fitted_peak_to_trough": None, "fitted_peak_hour_utc": None}
    use = t[t < whole * SECONDS_PER_DAY]
    counts = np.bincount(((use % SECONDS_PER_DAY) // 3600).astype(np.int64), minlength=24)[:24]
    angle = 2 * np.pi * (np.arange(24) + 0.5) / 24
    c0, c1, s1 = counts.mean(), 2 * np.mean(counts * np.cos(angle)), 2 * np.mean(counts * np.sin(angle))
    a = min(float(np.hypot(c1, s1) / c0), 0.999) if c0 > 0 else 0.0
    return {
        "whole_days": whole,
        "fitted_peak_to_trough": round((1 + a) / (1 - a), 3),
        "fitted_peak_hour_utc": round(float(np.degrees(np.arctan2(s1, c1)) / 15 % 24), 2),
        "hourly_counts": counts.tolist(),
    }


def _drift(t: np.ndarray, label: np.ndarray, top: int = 20) -> dict[str, Any]:
    """How much the top clusters change from one day to the next (mean Jaccard of top-20 sets)."""
    day = (t // SECONDS_PER_DAY).astype(np.int64)
    width = int(label.max()) + 1
    counts = np.bincount(day * width + label, minlength=(int(day[-1]) + 1) * width).reshape(-1, width)
    tops = [set(np.argsort(-c, kind="stable")[:top].tolist()) for c in counts]
    pairs = [len(a & b) / len(a | b) for a, b in itertools.pairwise(tops) if a and b]
    return {
        "clusters_used": int(np.unique(label).size),
        f"top{top}_jaccard_day_to_day": round(float(np.mean(pairs)), 4) if pairs else None,
    }


def synth_json_path(trace: Path) -> Path:
    return trace.with_name(trace.name.removesuffix(".parquet") + ".synth.json")


def write_synth_trace(cfg: SynthConfig, num_requests: int, seed: int, out: Path, mode: Mode = "text",
                      embedder: str | None = "minilm", cache_dir: Path | None = DEFAULT_CACHE,
                      inputs: Sequence[Path] = ()) -> dict[str, Any]:
    """Generate and write T.parquet, T.embeddings.parquet (unless ``embedder`` is None in text mode)
    and T.synth.json atomically; returns the statistics. ``cache_dir`` None disables the embedding cache.
    An output path that is one of the generator's inputs (``inputs``, the pool, the calibration log)
    is refused before anything is generated."""
    sources = [*inputs, resolve(cfg.pool)] + ([resolve(cfg.calibration)] if cfg.calibration else [])
    for path in (out, embeddings_path(out), synth_json_path(out)):
        check_output_file(path, sources)
    started = time.perf_counter()
    res = generate(cfg, num_requests, seed, mode)
    generate_s = time.perf_counter() - started
    stats = statistics(res)
    with writing(out.parent):
        out.parent.mkdir(parents=True, exist_ok=True)
    # The three files are written under temporary names and renamed on success, inner first: the embeddings,
    # the trace, then its statistics (as before: a reader of the new trace finds its embeddings).
    with atomic_path(synth_json_path(out)) as tmp_json, atomic_path(out) as tmp, \
            atomic_path(embeddings_path(out)) as tmp_emb:
        write_trace(trace_table(res), tmp, guarantee(res))
        tag = None
        if mode == "vectors":
            assert res.distinct_prompts is not None and res.vectors is not None
            tag = f"synth-vectors:dim={cfg.vectors.dim}"
            write_embeddings(res.distinct_prompts, res.vectors, tag, tmp_emb)
        elif embedder is not None:
            _, report = embed_trace(tmp, embedder, cache_dir, out=tmp_emb)
            tag = report.tag
            stats["embedding"] = {"embedded_now": report.num_embedded, "from_cache": report.num_prompts -
                                  report.num_embedded, "truncated_to_window": report.num_truncated}
        stats.update(seed=seed, embedder=tag, generate_s=round(generate_s, 2),
                     total_s=round(time.perf_counter() - started, 2), targets=TARGETS, config=config_data(cfg))
        tmp_json.write_text(json.dumps(stats, indent=2) + "\n")
        if tag is None:  # an embeddings file of an earlier trace at this path no longer matches
            embeddings_path(out).unlink(missing_ok=True)
    return stats


REPORT_KEYS = ("mode", "requests", "days", "requests_per_day", "exact_repeat_share", "unique_prompts",
               "users", "sessions", "mean_session_length", "mean_edits_per_refinement", "generate_s")


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "synth", help="generate a synthetic DiffusionDB-style trace",
        description="Generate a trace from real prompts (text mode) or clustered unit vectors (vectors mode); "
                    "every knob is in the --config YAML (defaults: experiments/synth/default.yaml).",
    )
    cmd.add_argument("--requests", type=int, required=True, help="number of requests")
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--out", required=True,
                     help="trace parquet to write (T.embeddings.parquet and T.synth.json beside it)")
    cmd.add_argument("--config", help="generator YAML (default: built-in defaults)")
    cmd.add_argument("--mode", choices=("text", "vectors"), default="text")
    cmd.add_argument("--embedder", default="minilm",
                     help="text mode: registered embedder (default minilm; hash for tests)")
    cmd.add_argument("--no-embed", action="store_true",
                     help="text mode: skip embeddings (`trace embed` adds them later)")
    cmd.add_argument("--cache-dir", help="embedding cache folder ('' disables it; default ~/.cache/nirvana-sim)")
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    if not 1 <= args.requests <= MAX_REQUESTS:
        raise ConfigError(f"--requests: expected an integer in 1..{MAX_REQUESTS}, got {args.requests}")
    if not args.out.strip():
        raise ConfigError("--out: expected a trace file path, got an empty path")
    cfg = load_synth_config(args.config)
    cache = DEFAULT_CACHE if args.cache_dir is None else (Path(args.cache_dir) if args.cache_dir else None)
    out = Path(args.out)
    stats = write_synth_trace(cfg, args.requests, args.seed, out, args.mode,
                              None if args.no_embed else args.embedder, cache,
                              inputs=[Path(args.config)] if args.config else [])
    for key in REPORT_KEYS:
        print(f"{key:28s} {stats.get(key)}")
    print(f"{'diurnal peak/trough (fit)':28s} {stats['diurnal']['fitted_peak_to_trough']}")
    print(f"wrote {out}" + ("" if stats["embedder"] is None else f" and {embeddings_path(out)}")
          + f" and {synth_json_path(out)}")
    return 0
