"""Similarity scale maps: put an embedder's cosine on the CLIP text-cosine scale of NIRVANA's thresholds.

NIRVANA's K table (0.65 ... 0.95) is in CLIP text cosine. Another embedder's cosines have another
distribution, so its raw values would choose K wrongly. A map is fitted on the production retrieval
log in ../shared/data/clip_pairs_calibration.csv (each query's CLIP top-1 score against that cache):

* quantile map on top-1 scores: each query's top-1 cosine under the embedder, searched over the
  log's distinct cached prompts (a proxy for the production cache, which is not published), is
  mapped to the CLIP top-1 score at the same quantile of the log's score distribution;
* the map is monotone piecewise linear between knots; outside the fitted range it is clamped.

The fitted map is a small versioned YAML artefact under profiles/similarity/ (kind:
similarity_map) with its provenance and fit statistics; `cache.similarity_map: auto` applies the
map whose `embedder` tag equals the trace's embedder tag.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sim.errors import InputError
from sim.fileio import read_yaml_mapping, write_text_atomic
from sim.paths import resolve
from sim.retrieval.cosine import top1_rows

MAP_DIR = "profiles/similarity"
MAP_VERSION = 1


@dataclass(frozen=True)
class SimilarityMap:
    """Monotone piecewise-linear map from an embedder's cosine to the CLIP text-cosine scale."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    embedder: str
    source: str

    def apply(self, similarity: float) -> float:
        return float(np.interp(similarity, self.x, self.y))

    def apply_array(self, similarity: np.ndarray) -> np.ndarray:
        return np.interp(similarity, self.x, self.y)


def fit_quantile_map(
    raw_top1: np.ndarray, clip_top1: np.ndarray, num_knots: int = 101
) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x, y): the q-quantile of the raw scores maps to the q-quantile of the CLIP scores."""
    q = np.linspace(0.0, 1.0, num_knots)
    # Knots are stored with 5 decimals: round before merging so the stored map stays strictly increasing.
    x = np.round(np.quantile(raw_top1, q), 5)
    y = np.round(np.quantile(clip_top1, q), 5)
    # np.interp needs increasing x: merge knots that tie, keeping the last (highest) y of each run.
    # Ties come mostly from exact repeats (raw cosine 1.0), whose CLIP cosine is 1.0 too: keeping the
    # first knot of that run would cap the map below CLIP's K=20/25 thresholds.
    keep = np.concatenate([np.diff(x) > 1e-9, [True]])
    x, y = x[keep], y[keep]
    return np.maximum.accumulate(x), np.maximum.accumulate(y)


def load_map(path: str | Path) -> SimilarityMap:
    file = resolve(path)
    data = read_yaml_mapping(file, "similarity map", InputError, shown=path)
    if data.get("kind") != "similarity_map":
        raise InputError(f"{file}: field 'kind': expected 'similarity_map'")
    for key in ("embedder", "x", "y", "provenance"):
        if key not in data:
            raise InputError(f"{file}: field '{key}': required")
    x = np.asarray(data["x"], dtype=float)
    y = np.asarray(data["y"], dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise InputError(f"{file}: fields 'x' and 'y': expected two lists of equal length >= 2")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError(f"{file}: fields 'x'/'y': NaN or infinite knot")
    if np.any(np.diff(x) <= 0) or np.any(np.diff(y) < 0):
        raise InputError(f"{file}: fields 'x'/'y': expected strictly increasing x and non-decreasing y")
    return SimilarityMap(tuple(x.tolist()), tuple(y.tolist()), str(data["embedder"]), str(file))


def find_map(embedder_tag: str, folder: str = MAP_DIR) -> SimilarityMap | None:
    """The shipped map fitted for exactly this embedder tag, if any."""
    root = resolve(folder)
    if not root.is_dir():
        return None
    for file in sorted(root.glob("*.yaml")):
        data = yaml.safe_load(file.read_text())
        if isinstance(data, dict) and data.get("embedder") == embedder_tag:
            return load_map(file)
    return None


def top1_over(
    queries: np.ndarray, pool: np.ndarray, exclude: np.ndarray | None = None, chunk: int = 2048
) -> np.ndarray:
    """Exact (canonical) top-1 cosine of each query row over the pool rows, chunked to bound memory.

    ``exclude[i]`` is a pool row query i may not match (-1: none).
    """
    return top1_rows(queries, pool, exclude=exclude, chunk=chunk)[1]


def calibrate(calibration: Path, embedder_name: str, out: Path, command: str) -> dict[str, Any]:
    """Fit and write the map for one embedder; returns the fit statistics."""
    import datetime as dt
    import platform
    import sys
    from importlib.metadata import version

    from sim.cache.kselect import KTable
    from sim.workload.embed import embed_prompts
    from sim.workload.tiny import read_calibration

    rows = read_calibration(calibration)
    clip = np.array([r[0] for r in rows])
    queries = [r[1] for r in rows]
    cached = sorted({r[2] for r in rows if r[2].strip()})
    qv, tag = embed_prompts(queries, embedder_name)
    cv, _ = embed_prompts(cached, embedder_name)
    index_of = {p: j for j, p in enumerate(cached)}
    # The proxy cache holds prompts that came later in the log too. A query may match its own exact
    # text only where the log says it did (its matched prompt is that text); otherwise the proxy
    # would hand it a cosine-1 duplicate its real cache did not hold.
    exclude = np.array([index_of.get(q, -1) if r[2] != q else -1 for q, r in zip(queries, rows, strict=True)])
    raw_top1 = top1_over(qv, cv, exclude)
    x, y = fit_quantile_map(raw_top1, clip)
    smap = SimilarityMap(tuple(x), tuple(y), tag, str(out))

    # How well the mapped embedder reproduces CLIP's K decisions on the log's matched pairs.
    pair_idx = [i for i, r in enumerate(rows) if r[2].strip()]
    pair_raw = np.array([float(qv[i] @ cv[index_of[rows[i][2]]]) for i in pair_idx])
    pair_mapped = smap.apply_array(pair_raw)
    pair_clip = clip[pair_idx]
    table = KTable()
    k_clip = np.array([table.select(s) for s in clip])
    k_mapped = np.array([table.select(s) for s in smap.apply_array(raw_top1)])
    from scipy.stats import spearmanr

    stats = {
        "queries": len(rows),
        "proxy_cache_prompts": len(cached),
        "matched_pairs": len(pair_idx),
        "pair_spearman_raw_vs_clip": round(float(spearmanr(pair_raw, pair_clip).statistic), 4),
        "pair_mean_abs_error_mapped_vs_clip": round(float(np.abs(pair_mapped - pair_clip).mean()), 4),
        "share_above_0.65_clip": round(float((clip > 0.65).mean()), 4),
        "share_above_0.65_mapped": round(float((smap.apply_array(raw_top1) > 0.65).mean()), 4),
        "k_decision_agreement_top1": round(float((k_clip == k_mapped).mean()), 4),
        "k_mix_clip": {str(k): round(float((k_clip == k).mean()), 4) for k in (0, 5, 10, 15, 20, 25)},
        "k_mix_mapped": {str(k): round(float((k_mapped == k).mean()), 4) for k in (0, 5, 10, 15, 20, 25)},
    }
    doc = {
        "kind": "similarity_map",
        "version": MAP_VERSION,
        "embedder": tag,
        "target": "CLIP text cosine, top-1 against a production approximate cache",
        "provenance": {
            "type": "measured",
            "command": command,
            "date": dt.date.today().isoformat(),
            "hardware": f"{platform.machine()} CPU",
            "versions": {"python": sys.version.split()[0], "numpy": version("numpy")},
            "data": "../shared/data/clip_pairs_calibration.csv (skejriwal44/argus, "
            "pipeline/cache_logs/log_prompts_sample.csv; 9,873 of 20,000 rows)",
            "method": "quantile map of each query's top-1 cosine over the log's distinct cached prompts "
            "(its own exact text excluded unless the log matched it to that text) onto the log's CLIP "
            "top-1 scores; 101 quantile knots, tied knots merged to their highest, clamped outside",
        },
        "fit": stats,
        "x": [round(float(v), 5) for v in x],
        "y": [round(float(v), 5) for v in y],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, yaml.safe_dump(doc, sort_keys=False, width=100))
    return stats


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "calibrate-similarity", help="fit an embedder's map to the CLIP similarity scale",
        description="Fit a quantile map from an embedder's top-1 cosine to CLIP's on the production log.",
    )
    cmd.add_argument("--embedder", default="minilm")
    cmd.add_argument("--calibration", default="../shared/data/clip_pairs_calibration.csv")
    cmd.add_argument("--out", default=f"{MAP_DIR}/minilm-to-clip.yaml")
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    command = (f"python -m sim trace calibrate-similarity --embedder {args.embedder} "
               f"--calibration {args.calibration} --out {args.out}")
    stats = calibrate(Path(args.calibration), args.embedder, Path(args.out), command)
    print(yaml.safe_dump(stats, sort_keys=False))
    return 0
