"""Embed a trace's prompts once: an on-disk cache keyed by (embedder tag, prompt SHA-1) is shared
across traces, and `python -m sim trace embed T.parquet` writes T.embeddings.parquet beside it."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sim.errors import InputError
from sim.workload.trace import embeddings_path, prompt_sha1, write_embeddings

DEFAULT_CACHE = Path(os.environ.get("NIRVANA_SIM_CACHE", Path.home() / ".cache" / "nirvana-sim")) / "embeddings"


def _slug(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", tag)


def embed_prompts(prompts: list[str], embedder_name: str, cache_dir: Path | None = DEFAULT_CACHE,
                  **embedder_args: object) -> tuple[np.ndarray, str]:
    """Unit vectors for ``prompts`` (and the embedder's tag); only prompts not in the cache are embedded."""
    from sim.workload.embedders import EMBEDDERS

    embedder = EMBEDDERS.get(embedder_name)(**embedder_args)
    tag = embedder.tag
    known: dict[str, np.ndarray] = {}
    folder = cache_dir / _slug(tag) if cache_dir is not None else None
    if folder is not None and folder.is_dir():
        for shard in sorted(folder.glob("shard-*.parquet")):
            table = pq.read_table(shard)
            dim = table.schema.field("vector").type.list_size
            mat = np.asarray(table.column("vector").combine_chunks().flatten().to_numpy(), np.float32).reshape(-1, dim)
            known.update(zip(table.column("prompt_sha1").to_pylist(), mat, strict=True))
    hashes = [prompt_sha1(p) for p in prompts]
    todo = list(dict.fromkeys(h for h in hashes if h not in known))
    if todo:
        text_of = dict(zip(hashes, prompts, strict=True))
        fresh = embedder.embed([text_of[h] for h in todo])
        known.update(zip(todo, fresh, strict=True))
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            shard = folder / f"shard-{len(list(folder.glob('shard-*.parquet'))):05d}.parquet"
            tmp = shard.with_suffix(".partial")
            write_embeddings([text_of[h] for h in todo], fresh, tag, tmp)
            tmp.replace(shard)
    return np.stack([known[h] for h in hashes]).astype(np.float32), tag


def embed_trace(trace: Path, embedder_name: str, cache_dir: Path | None = DEFAULT_CACHE) -> Path:
    """Write ``T.embeddings.parquet`` for the distinct prompts of trace ``T.parquet``."""
    try:
        prompts_col = pq.read_table(trace, columns=["prompt"]).column("prompt")
    except FileNotFoundError:
        raise InputError(f"{trace}: trace file not found") from None
    except (pa.ArrowInvalid, KeyError) as exc:
        raise InputError(f"{trace}: cannot read column 'prompt' ({exc})") from None
    prompts = [p for p in dict.fromkeys(prompts_col.to_pylist()) if p]
    vectors, tag = embed_prompts(prompts, embedder_name, cache_dir)
    out = embeddings_path(trace)
    write_embeddings(prompts, vectors, tag, out)
    return out


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "embed", help="write T.embeddings.parquet for a trace",
        description="Embed every distinct prompt of a trace (cached on disk across traces).",
    )
    cmd.add_argument("trace", help="canonical trace parquet")
    cmd.add_argument("--embedder", default="minilm", help="registered embedder (default minilm)")
    cmd.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="embedding cache ('' disables it)")
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    out = embed_trace(Path(args.trace), args.embedder, Path(args.cache_dir) if args.cache_dir else None)
    print(f"wrote {out}")
    return 0
