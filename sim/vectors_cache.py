"""Decoded trace embeddings kept as memory-mapped .npy files, so a trace is decoded and validated once.

Decoding a 2M-request trace's embeddings (2.3 GB of parquet) takes ~14 s here; reading them back from an
.npy memory map is instant, and every process of a sweep then shares one copy in the page cache instead of
holding its own. The cache key is a content hash of the trace file, its embeddings file and the request
limit (the rows kept decide which prompts, in which order, the vectors are of), so a changed file is never
served stale. ``NIRVANA_SIM_CACHE`` moves the folder; ``NIRVANA_SIM_VECTOR_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sim.fileio import atomic_path

VERSION = 1
DEFAULT_DIR = Path(os.environ.get("NIRVANA_SIM_CACHE", Path.home() / ".cache" / "nirvana-sim")) / "vectors"


def enabled() -> bool:
    return os.environ.get("NIRVANA_SIM_VECTOR_CACHE", "1") != "0"


def _file_digest(file: Path) -> str:
    h = hashlib.sha256()
    with file.open("rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def key(trace: Path, embeddings: Path, limit: int | None) -> str:
    """The content hash the decoded vectors of ``trace`` (first ``limit`` rows) are cached under."""
    h = hashlib.sha256(f"vectors v{VERSION} limit={limit} ".encode())
    h.update(_file_digest(trace).encode())
    h.update(_file_digest(embeddings).encode())
    return h.hexdigest()[:32]


def load_or_make(trace: Path, embeddings: Path, limit: int | None,
                 make: Callable[[], tuple[np.ndarray, str]], folder: Path = DEFAULT_DIR) -> tuple[np.ndarray, str]:
    """(vectors, embedder tag): memory-mapped from the cache, else ``make()`` (decode and validate), stored.
    A cache folder that cannot be written leaves the decoded vectors in memory (the run does not fail)."""
    k = key(trace, embeddings, limit)
    npy, meta = folder / f"{k}.npy", folder / f"{k}.json"
    try:
        embedder = json.loads(meta.read_text())["embedder"]
        return np.load(npy, mmap_mode="r"), str(embedder)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    vectors, embedder = make()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(npy, concurrent=True) as tmp:
            np.save(tmp, np.ascontiguousarray(vectors, dtype=np.float32))
        with atomic_path(meta, concurrent=True) as tmp:
            tmp.write_text(json.dumps({"embedder": embedder, "trace": str(trace), "limit": limit}) + "\n")
        return np.load(npy, mmap_mode="r"), embedder
    except Exception:
        return vectors, embedder
