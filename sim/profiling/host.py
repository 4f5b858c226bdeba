"""Measure this host: prompt embedding, exact vector search, and latent storage tiers (RAM, disk).

Writes profiles/frontend/cpu-minilm-numpy-measured.yaml and profiles/storage/local-measured.yaml.
Each figure is a median over repeats (timings on shared machines are noisy); the linear models
(latency + bytes / bandwidth, base + per-vector cost) are least-squares fits over several sizes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from importlib.metadata import version
from pathlib import Path

import numpy as np
import yaml

from sim.errors import InputError
from sim.fileio import check_output_dir, write_text_atomic, writing
from sim.retrieval import cosine

LATENT_SIZES = (32 * 1024, 128 * 1024, 512 * 1024, 2 * 1024 * 1024)
SEARCH_SIZES = (1_000, 10_000, 50_000, 100_000)


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(intercept, slope) clipped at zero: a negative fitted latency or cost is noise."""
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return max(float(intercept), 0.0), max(float(slope), 1e-15)


def hardware_description() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores visible, {platform.system()} {platform.release()}"


def _provenance(command: str, packages: list[str], method: str) -> dict[str, object]:
    return {
        "type": "measured",
        "command": command,
        "date": dt.date.today().isoformat(),
        "hardware": hardware_description(),
        "versions": {"python": sys.version.split()[0], **{p: version(p) for p in packages}},
        "method": method,
    }


def _write(path: Path, payload: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def _read_uncached(path: Path, num_bytes: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # evict the page cache: read the device
        os.read(fd, num_bytes)
    finally:
        os.close(fd)


def measure_storage(folder: Path, repeats: int) -> dict[str, float]:
    """Write (with fsync) and read one latent-sized file per size; fit latency + bytes / bandwidth."""
    xs, w, r = [], [], []
    path = folder / "latent.bin"
    for n in LATENT_SIZES:
        payload = np.random.default_rng(n).integers(0, 255, n, dtype=np.uint8).tobytes()
        w.append(_median_s(partial(_write, path, payload), repeats))
        _write(path, payload)
        r.append(_median_s(partial(_read_uncached, path, n), repeats))
        xs.append(float(n))
    rl, rs = _fit(xs, r)
    wl, ws = _fit(xs, w)
    return {"read_latency_s": rl, "read_bytes_per_s": 1 / rs, "write_latency_s": wl, "write_bytes_per_s": 1 / ws}


def _top1(mat: np.ndarray, ids: np.ndarray, q: np.ndarray) -> int:
    found = cosine.nearest(mat, ids, q)
    return -1 if found is None else found[0]


def measure_search(repeats: int, dim: int = 384) -> tuple[float, float]:
    """Exact top-1 cosine (the canonical routine the exact retriever runs) vs number of cached vectors."""
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for n in SEARCH_SIZES:
        mat = rng.standard_normal((n, dim)).astype(np.float32)
        q = rng.standard_normal(dim).astype(np.float32)
        ys.append(_median_s(partial(_top1, mat, np.arange(n), q), max(repeats // 4, 5)))
        xs.append(float(n))
    return _fit(xs, ys)


def measure_embed(repeats: int) -> float:
    from sim.embedding.embedders import EMBEDDERS

    model = EMBEDDERS.get("minilm")()
    prompts = [f"a watercolor painting of a lighthouse at dusk, detailed, variant {i}" for i in range(repeats)]
    model.embed(prompts[:8])  # warm-up
    it = iter(prompts)
    return _median_s(lambda: model.embed([next(it)]), repeats)


def check_loadable(text: str, kind: str, tiers: Sequence[str] = ()) -> None:
    """Load ``text`` with the simulator's own loader for ``kind``: a profile it would reject is never written."""
    from sim.hardware.profiles import load_frontend, load_storage_tier

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{kind}.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            if kind == "frontend":
                load_frontend(str(path))
            for tier in tiers:
                load_storage_tier(str(path), tier)
        except InputError as exc:
            reason = str(exc).removeprefix(f"{path}: ")
            raise InputError(f"profile host: the measured {kind} profile would be rejected by its loader "
                             f"({reason}); nothing written") from None


def profile_host(out_dir: Path, repeats: int = 200) -> list[Path]:
    if repeats < 1:
        raise InputError(f"--repeats: expected an integer >= 1, got {repeats}")
    check_output_dir(out_dir)
    command = f"python -m sim profile host --out-dir {out_dir} --repeats {repeats}"
    embed_s = measure_embed(min(repeats, 100))
    base_s, per_vector_s = measure_search(repeats)
    frontend = {
        "kind": "frontend",
        "provenance": _provenance(
            command,
            ["numpy", "sentence-transformers", "torch"],
            "embed_s: median latency of embedding one prompt (batch 1) with minilm on CPU; search: median "
            f"exact top-1 over {list(SEARCH_SIZES)} float32 384-d vectors, linear fit",
        ),
        "embed_s": round(embed_s, 6),
        "search_base_s": round(base_s, 7),
        "search_per_vector_s": float(f"{per_vector_s:.4g}"),
    }
    tiers = {}
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as shm:
        tiers["host_ram"] = measure_storage(Path(shm), repeats)
    with tempfile.TemporaryDirectory(dir=os.environ.get("NIRVANA_DISK_DIR", Path.cwd())) as disk:
        tiers["local_disk"] = measure_storage(Path(disk), repeats)
    storage = {
        "kind": "storage",
        "provenance": _provenance(
            command,
            ["numpy"],
            f"median write+fsync and page-cache-evicted read of {[s // 1024 for s in LATENT_SIZES]} KiB "
            "files; latency and bandwidth from a linear fit over sizes; host_ram is tmpfs (/dev/shm), "
            "local_disk the working directory's file system",
        ),
        "tiers": {name: {k: float(f"{v:.4g}") for k, v in t.items()} for name, t in tiers.items()},
    }
    texts = {"frontend/cpu-minilm-numpy-measured.yaml": yaml.safe_dump(frontend, sort_keys=False),
             "storage/local-measured.yaml": yaml.safe_dump(storage, sort_keys=False)}
    check_loadable(texts["frontend/cpu-minilm-numpy-measured.yaml"], "frontend")
    check_loadable(texts["storage/local-measured.yaml"], "storage", tuple(tiers))
    paths = []
    for rel, text in texts.items():
        path = out_dir / rel
        with writing(path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
        paths.append(path)
    return paths


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "host", help="measure this host's prompt embedding, vector search and storage tiers",
        description="Write profiles/frontend and profiles/storage files measured on this machine.",
    )
    cmd.add_argument("--out-dir", default="profiles")
    cmd.add_argument("--repeats", type=int, default=200)
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    for path in profile_host(Path(args.out_dir), repeats=args.repeats):
        print(f"wrote {path}")
    return 0
