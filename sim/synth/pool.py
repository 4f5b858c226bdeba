"""The synthetic generator's prompt pool: distinct real prompts and their topic clusters, built from the log.

Derivation (traces/README.md repeats it): every distinct prompt of NIRVANA's production retrieval log
(../shared/data/clip_pairs_calibration.csv; query prompts, and cached prompts that are not blank),
sorted; the log's own matches — a query and the cached prompt it hit with CLIP score above
``link_above`` — joined by union-find into clusters, ordered largest first (ties: smallest member).
The committed file (traces/pool/prompts.parquet) holds the prompts and each one's cluster number,
never the CLIP scores; its schema metadata says the source and the ``link_above`` it was built with.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sim.errors import InputError
from sim.fileio import atomic_path, same_file, writing
from sim.paths import resolve

POOL_PATH = "traces/pool/prompts.parquet"
DEFAULT_CALIBRATION = "../shared/data/clip_pairs_calibration.csv"
SOURCE = ("NIRVANA's production retrieval log: skejriwal44/argus, pipeline/cache_logs/log_prompts_sample.csv "
          "(../shared/data/clip_pairs_calibration.csv, 9,873 of its 20,000 rows)")


def clusters_from_calibration(path: Path, link_above: float) -> tuple[list[str], list[list[int]]]:
    """(sorted distinct prompts, member indices per cluster: largest first, members ascending)."""
    from sim.synth.tiny import read_calibration

    rows = read_calibration(path)
    if not rows:
        raise InputError(f"{path}: no prompts (column 'query_prompt' is empty)")
    prompts = sorted({q for _, q, _ in rows} | {c for _, _, c in rows if c.strip()})
    index = {p: i for i, p in enumerate(prompts)}
    parent = list(range(len(prompts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for score, query, cached in rows:
        if cached.strip() and score > link_above:
            a, b = find(index[query]), find(index[cached])
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(prompts)):
        groups.setdefault(find(i), []).append(i)
    return prompts, sorted(groups.values(), key=lambda m: (-len(m), m[0]))


def write_pool(prompts: list[str], clusters: list[list[int]], link_above: float, source: str, out: Path) -> None:
    """Write the pool parquet atomically (zstd): one row per prompt, sorted, with its cluster number."""
    cluster = np.empty(len(prompts), dtype=np.int32)
    for c, members in enumerate(clusters):
        cluster[members] = c
    schema = pa.schema([("prompt", pa.string()), ("cluster", pa.int32())], metadata={
        "link_above": repr(float(link_above)), "source": source,
        "derivation": "sim/synth/pool.py (distinct prompts; union-find of the log's matches above link_above)",
    })
    table = pa.Table.from_arrays([pa.array(prompts, pa.string()), pa.array(cluster)], schema=schema)
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp, compression="zstd", compression_level=19)


@functools.lru_cache(maxsize=4)
def _read_pool(file: Path, _mtime_ns: int) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...], float]:
    try:
        table = pq.read_table(file)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{file}: not a readable prompt-pool parquet ({type(exc).__name__})") from None
    for name, dtype in (("prompt", pa.string()), ("cluster", pa.int32())):
        if name not in table.column_names or table.schema.field(name).type != dtype:
            raise InputError(f"{file}: column '{name}': expected {dtype} "
                             "(rebuild with `python -m sim trace build-pool`)")
    meta = table.schema.metadata or {}
    try:
        link_above = float(meta.get(b"link_above", b"").decode())
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{file}: schema metadata 'link_above' is missing or not a number") from None
    try:
        prompts = table.column("prompt").to_pylist()
    except UnicodeDecodeError:
        raise InputError(f"{file}: column 'prompt' is not valid UTF-8") from None
    cluster = table.column("cluster").to_numpy(zero_copy_only=False)
    if not prompts:
        raise InputError(f"{file}: the prompt pool is empty")
    for i, p in enumerate(prompts):
        if p is None or not p.strip():
            raise InputError(f"{file}: column 'prompt': row {i} is empty or null")
        if i and not prompts[i - 1] < p:
            raise InputError(f"{file}: column 'prompt': row {i} is not after row {i - 1} (expected sorted, distinct)")
    if table.column("cluster").null_count or cluster.min() < 0 or cluster.max() >= len(prompts):
        raise InputError(f"{file}: column 'cluster': expected numbers in 0..{len(prompts) - 1} without nulls")
    order = np.argsort(cluster, kind="stable")
    bounds = np.flatnonzero(np.diff(cluster[order])) + 1
    clusters = [tuple(m.tolist()) for m in np.split(order, bounds)]
    if len(clusters) != int(cluster.max()) + 1:
        raise InputError(f"{file}: column 'cluster': numbers 0..{int(cluster.max())} are not all used")
    return tuple(prompts), tuple(clusters), link_above


def read_pool(path: str | Path) -> tuple[list[str], list[list[int]], float]:
    """(sorted prompts, clusters, link_above) from a pool parquet; every problem names the file."""
    file = resolve(path)
    if not file.is_file():
        what = "is a directory" if file.is_dir() else "not found"
        raise InputError(f"{path}: prompt pool {what} (synth config key 'pool'; rebuild it with "
                         "`python -m sim trace build-pool`)")
    prompts, clusters, link_above = _read_pool(file, file.stat().st_mtime_ns)
    return list(prompts), [list(m) for m in clusters], link_above


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "build-pool", help="rebuild the synthetic generator's prompt pool from the calibration log",
        description="Distinct prompts of the log and their clusters (union-find of matches above --link-above); "
                    "no CLIP scores are written.",
    )
    cmd.add_argument("--calibration", default=DEFAULT_CALIBRATION, help="the log CSV (clip_score, query_prompt, "
                     "cached_prompt)")
    cmd.add_argument("--out", default=POOL_PATH)
    cmd.add_argument("--link-above", type=float, default=0.65,
                     help="log pairs with CLIP score above this join one cluster (default 0.65)")
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from sim.errors import ConfigError

    if not -1.0 <= args.link_above <= 1.0:
        raise ConfigError(f"--link-above: expected a similarity in [-1, 1], got {args.link_above}")
    if not args.out.strip():
        raise ConfigError("--out: expected a file path, got an empty path")
    src, out = Path(args.calibration), Path(args.out)
    if same_file(src, out):
        raise ConfigError(f"--out {out}: is the input file; choose another path")
    prompts, clusters = clusters_from_calibration(src, args.link_above)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    write_pool(prompts, clusters, args.link_above, f"{SOURCE}; sha256 {digest}", out)
    print(f"wrote {out}: {len(prompts)} prompts in {len(clusters)} clusters (link_above {args.link_above})")
    return 0
