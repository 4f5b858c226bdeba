"""Embed a trace's prompts once: an on-disk cache keyed by (embedder tag, prompt SHA-1) is shared
across traces, and `python -m sim trace embed T.parquet` writes T.embeddings.parquet beside it.

Bad input: a null, empty or whitespace-only prompt, or one whose bytes are not UTF-8, is an error
naming the trace file and row (never skipped: every request needs a vector to be simulated).
Prompts longer than the encoder's token window are embedded from their first tokens, as the
encoder itself does; `trace embed` reports how many of the trace's prompts that affects.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sim.errors import InputError, SimError
from sim.fileio import atomic_path
from sim.trace import embeddings_path, prompt_sha1, read_parquet, utf8_strings, write_embeddings

DEFAULT_CACHE = Path(os.environ.get("NIRVANA_SIM_CACHE", Path.home() / ".cache" / "nirvana-sim")) / "embeddings"


@dataclass(frozen=True)
class EmbedReport:
    """What one embed_prompts call did: for the `trace embed` summary and for tests."""

    tag: str
    num_prompts: int  # distinct prompts asked for
    num_embedded: int  # of those, not found in the cache and run through the model now
    num_truncated: int | None  # distinct prompts longer than the window, cached ones too; None: not counted
    window_tokens: int | None  # the encoder's window; None: the embedder has none


def _slug(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", tag)


def check_prompts(prompts: Sequence[str | None], where: Callable[[int], str] = lambda i: f"prompt #{i}") -> None:
    """Every prompt is a non-blank string that encodes as UTF-8; else an InputError naming ``where(i)``."""
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise InputError(f"{where(i)} is {'null' if p is None else type(p).__name__}, expected text")
        if not p.strip():
            raise InputError(f"{where(i)} is empty")
        try:
            p.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates, e.g. from bytes decoded with 'surrogateescape'
            raise InputError(f"{where(i)} is not valid UTF-8 ({exc.reason} at character {exc.start})") from None


def _read_cache(folder: Path, dim: int) -> dict[str, np.ndarray]:
    known: dict[str, np.ndarray] = {}
    for shard in sorted(folder.glob("shard-*.parquet")):
        try:
            table = pq.read_table(shard)
            width = table.schema.field("vector").type.list_size
            hashes = table.column("prompt_sha1").to_pylist()
        except (pa.ArrowInvalid, OSError, KeyError, AttributeError) as exc:
            raise InputError(f"{shard}: unreadable embedding cache shard ({exc}); delete it to re-embed") from None
        if width != dim:
            raise InputError(f"{shard}: cached vectors have {width} values, the embedder makes {dim}; "
                             "delete the shard to re-embed")
        mat = np.asarray(table.column("vector").combine_chunks().flatten().to_numpy(), np.float32).reshape(-1, dim)
        known.update(zip(hashes, mat, strict=True))
    return known


def embed_with_report(prompts: list[str], embedder_name: str, cache_dir: Path | None = DEFAULT_CACHE,
                      *, count_truncated: bool = True, **embedder_args: object) -> tuple[np.ndarray, EmbedReport]:
    """Unit vectors for ``prompts`` and a report; only prompts not in the cache are embedded.

    Truncations are counted by tokenizing every distinct prompt, cached or not, so a rerun reports
    the same number (~5K prompts/s for minilm on 2 cores: skip it where nobody reads the count).
    """
    from sim.embedding.embedders import EMBEDDERS

    check_prompts(prompts)
    embedder = EMBEDDERS.get(embedder_name)(**embedder_args)
    tag = embedder.tag
    folder = cache_dir / _slug(tag) if cache_dir is not None else None
    known = _read_cache(folder, embedder.dim) if folder is not None and folder.is_dir() else {}
    hashes = [prompt_sha1(p) for p in prompts]
    text_of = dict(zip(hashes, prompts, strict=True))
    todo = list(dict.fromkeys(h for h in hashes if h not in known))
    if todo:
        fresh = np.asarray(embedder.embed([text_of[h] for h in todo]), dtype=np.float32)
        norms = np.linalg.norm(fresh, axis=1) if fresh.ndim == 2 else np.zeros(0)
        if fresh.shape != (len(todo), embedder.dim) or not np.all(np.abs(norms - 1.0) <= 1e-3):
            # A model that yields NaN or zero vectors (broken weights) must not reach the cache.
            raise SimError(f"embedder {tag} returned vectors of shape {fresh.shape} that are not all unit-norm; "
                           f"expected ({len(todo)}, {embedder.dim})")
        known.update(zip(todo, fresh, strict=True))
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            shard = folder / f"shard-{len(list(folder.glob('shard-*.parquet'))):05d}.parquet"
            with atomic_path(shard) as tmp:
                write_embeddings([text_of[h] for h in todo], fresh, tag, tmp)
    vectors = np.stack([known[h] for h in hashes]).astype(np.float32) if prompts else np.zeros((0, embedder.dim),
                                                                                              np.float32)
    num_truncated = embedder.count_truncated(list(text_of.values())) if count_truncated else None
    report = EmbedReport(tag, len(text_of), len(todo), num_truncated, embedder.window_tokens)
    return vectors, report


def embed_prompts(prompts: list[str], embedder_name: str, cache_dir: Path | None = DEFAULT_CACHE,
                  **embedder_args: object) -> tuple[np.ndarray, str]:
    """Unit vectors for ``prompts`` (and the embedder's tag); only prompts not in the cache are embedded."""
    vectors, report = embed_with_report(prompts, embedder_name, cache_dir, count_truncated=False, **embedder_args)
    return vectors, report.tag


def read_trace_prompts(trace: Path) -> list[str]:
    """The distinct prompts of a trace, in first-use order; bad rows are errors naming file and row."""
    if not str(trace).strip() or str(trace) == ".":
        raise InputError("trace: empty path (name a trace parquet file)")
    prompts_col = read_parquet(trace, "trace", columns=["prompt"]).column("prompt")
    if not (pa.types.is_string(prompts_col.type) or pa.types.is_large_string(prompts_col.type)):
        raise InputError(f"{trace}: column 'prompt': expected string, got {prompts_col.type}")
    rows = utf8_strings(prompts_col, "prompt", trace)
    check_prompts(rows, lambda i: f"{trace}: column 'prompt': row {i}")
    return list(dict.fromkeys(cast(list[str], rows)))


def embed_trace(trace: Path, embedder_name: str, cache_dir: Path | None = DEFAULT_CACHE, *, out: Path | None = None,
                **embedder_args: object) -> tuple[Path, EmbedReport]:
    """Write ``T.embeddings.parquet`` (or ``out``) for the distinct prompts of trace ``T.parquet``."""
    prompts = read_trace_prompts(trace)
    vectors, report = embed_with_report(prompts, embedder_name, cache_dir, count_truncated=True, **embedder_args)
    out = out if out is not None else embeddings_path(trace)
    with atomic_path(out) as tmp:
        write_embeddings(prompts, vectors, report.tag, tmp)
    return out, report


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "embed", help="write T.embeddings.parquet for a trace",
        description="Embed every distinct prompt of a trace (cached on disk across traces). Prompts longer "
                    "than the encoder's window are embedded from their first tokens and counted.",
    )
    cmd.add_argument("trace", help="canonical trace parquet")
    cmd.add_argument("--embedder", default="minilm", help="registered embedder (default minilm)")
    cmd.add_argument("--model-path", metavar="DIR",
                     help="local model folder, for embedders that load one (clip); nothing is downloaded")
    cmd.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="embedding cache ('' disables it)")
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from sim.embedding.embedders import EMBEDDERS

    embedder_args: dict[str, Any] = {}
    if args.model_path is not None:
        if "model_path" not in inspect.signature(EMBEDDERS.get(args.embedder)).parameters:
            raise SimError(f"embedder '{args.embedder}' takes no --model-path")
        embedder_args["model_path"] = args.model_path
    out, report = embed_trace(Path(args.trace), args.embedder, Path(args.cache_dir) if args.cache_dir else None,
                              **embedder_args)
    print(f"wrote {out}: {report.num_prompts} distinct prompts, {report.num_embedded} embedded now, "
          f"{report.num_prompts - report.num_embedded} from the cache ({report.tag})")
    if report.window_tokens is None:
        print(f"truncated: 0 ({args.embedder} has no token window)")
    else:
        print(f"truncated: {report.num_truncated} of {report.num_prompts} prompts exceed the "
              f"{report.window_tokens}-token window; each is embedded from its first {report.window_tokens} tokens")
    return 0
