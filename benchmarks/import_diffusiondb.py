"""DiffusionDB import speed and memory on a deterministic Large-schema fixture (reported, never asserted).

The fixture (benchmarks/out/, git-ignored; rebuilt when missing) mimics metadata-large.parquet:
DiffusionDB's 13 columns and types, 1.8M unique prompts per 14M rows (12.9%), prompts of 15-45
words (~150-300 characters), multi-image jobs (1-9 images sharing prompt, user, minute and
parameters, seeds differ), ~10K hashed users plus 1% "deleted_account", 0.3% deleted images
(null timestamp and user), 0.1% empty prompts, minutes spread over 20 days, jobs in random file
order (so the importer must sort), one row group per 1Mi rows (pyarrow's default).
The import runs in a child process so that its peak RSS (VmHWM, else ru_maxrss) is its own; a second
child that only imports the modules gives the interpreter baseline. Prints one JSON line.
Usage: python benchmarks/import_diffusiondb.py [--rows 1000000] [--regenerate]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
UNIQUE_PROMPT_RATIO = 1.8 / 14  # DiffusionDB Large: 1.8M unique prompts in 14M images
ROW_GROUP = 1 << 20  # pyarrow's default row-group size
IMAGES_PER_JOB = ([1, 2, 3, 4, 6, 9], [0.35, 0.10, 0.10, 0.30, 0.05, 0.10])  # mean 3.3 (assumed)
SCHEMA = pa.schema([
    ("image_name", pa.string()), ("prompt", pa.string()), ("part_id", pa.uint16()), ("seed", pa.uint32()),
    ("step", pa.uint16()), ("cfg", pa.float32()), ("sampler", pa.uint8()), ("width", pa.uint16()),
    ("height", pa.uint16()), ("user_name", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
    ("image_nsfw", pa.float32()), ("prompt_nsfw", pa.float32()),
])


def make_fixture(path: Path, num_rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    sizes_pool, p = IMAGES_PER_JOB
    job_sizes = rng.choice(sizes_pool, size=num_rows, p=p)
    job_sizes = job_sizes[: np.searchsorted(np.cumsum(job_sizes), num_rows) + 1]
    job_sizes[-1] -= job_sizes.sum() - num_rows
    num_jobs = len(job_sizes)
    num_prompts = min(num_jobs, round(num_rows * UNIQUE_PROMPT_RATIO))
    vocab = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(3, 10))) for _ in range(20_000)]
    words = rng.integers(0, len(vocab), (num_prompts, 45))
    lengths = rng.integers(15, 46, num_prompts)
    prompts = [" ".join(vocab[w] for w in words[i, : lengths[i]]) for i in range(num_prompts)]
    job_prompt = np.concatenate([np.arange(num_prompts), rng.integers(0, num_prompts, num_jobs - num_prompts)])
    rng.shuffle(job_prompt)  # every prompt used at least once; the rest are repeats of earlier jobs' prompts
    users = [rng.bytes(32).hex() for _ in range(10_000)] + ["deleted_account"]
    job_user = np.where(rng.random(num_jobs) < 0.01, 10_000, rng.integers(0, 10_000, num_jobs))
    start_us = 1_659_744_000_000_000  # 2022-08-06 00:00 UTC
    job_minute = rng.integers(0, 20 * 1440, num_jobs)
    job_step = np.where(rng.random(num_jobs) < 0.9, 50, rng.integers(10, 150, num_jobs))
    job_cfg = np.where(rng.random(num_jobs) < 0.7, 7.0, rng.integers(1, 20, num_jobs)).astype(np.float32)
    job_sampler = np.where(rng.random(num_jobs) < 0.8, 8, rng.integers(1, 10, num_jobs))
    job_width = rng.choice([512, 512, 512, 640, 768], num_jobs)
    job_height = rng.choice([512, 512, 512, 640, 768], num_jobs)
    job = np.repeat(np.arange(num_jobs), job_sizes)  # images of one job stay adjacent, jobs in random order
    deleted = rng.random(num_rows) < 0.003
    prompt_idx = job_prompt[job]
    empty = rng.random(num_rows) < 0.001
    prompt_pool = pa.array([*prompts, ""])
    prompt_rows = np.where(empty, num_prompts, prompt_idx)
    user_pool = pa.array(users)
    user_rows = job_user[job]
    seeds = rng.integers(0, 2**32, num_rows)
    nsfw = rng.random((2, num_rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    # One row group per 1Mi rows, written chunk by chunk: a single 14M-row string column would pass
    # Arrow's 2 GiB limit for one binary array.
    with pq.ParquetWriter(path, SCHEMA) as writer:
        for a in range(0, num_rows, ROW_GROUP):
            b = min(a + ROW_GROUP, num_rows)
            rows = slice(a, b)
            writer.write_table(pa.Table.from_arrays([
                pa.array([f"{uuid.UUID(bytes=rng.bytes(16), version=4)}.webp" for _ in range(b - a)]),
                prompt_pool.take(pa.array(prompt_rows[rows])),
                pa.array(np.arange(a, b) // 1000 + 1, pa.uint16()),
                pa.array(seeds[rows], pa.uint32()),
                pa.array(job_step[job[rows]], pa.uint16()), pa.array(job_cfg[job[rows]], pa.float32()),
                pa.array(job_sampler[job[rows]], pa.uint8()),
                pa.array(job_width[job[rows]], pa.uint16()), pa.array(job_height[job[rows]], pa.uint16()),
                pa.array(user_pool.take(pa.array(user_rows[rows])).to_pylist(), pa.string(), mask=deleted[rows]),
                pa.array(start_us + job_minute[job[rows]] * 60_000_000, pa.timestamp("us", tz="UTC"),
                         mask=deleted[rows]),
                pa.array(nsfw[0, rows], pa.float32()), pa.array(nsfw[1, rows], pa.float32()),
            ], schema=SCHEMA))


def child(src: Path | None, dst: Path | None) -> dict:
    """Run this script again as a child: import ``src`` (or, without it, only load the modules)."""
    cmd = [sys.executable, __file__, "--child", *([str(src), str(dst)] if src else [])]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peak_rss_kib() -> int:
    """This process's peak RSS. Linux's ru_maxrss of an exec'ed child starts at the parent's RSS at
    fork time, so prefer VmHWM, which belongs to the child's own address space."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child_main(paths: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    import pandas  # noqa: F401  (the importer loads it lazily; load it in the baseline child too)

    from sim.workload.diffusiondb import import_diffusiondb

    report, wall = {}, 0.0
    if paths:
        t = time.perf_counter()
        report = import_diffusiondb(Path(paths[0]), Path(paths[1]))
        wall = time.perf_counter() - t
    print(json.dumps({"wall_s": wall, "maxrss_kib": _peak_rss_kib(),
                      "requests": report.get("requests"), "images_collapsed": report.get("images_collapsed")}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child_main(args.child)
        return
    src = OUT / f"diffusiondb-large-{args.rows}.parquet"
    if args.regenerate or not src.exists():
        t = time.perf_counter()
        make_fixture(src, args.rows)
        print(f"fixture {src} built in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    meta = pq.ParquetFile(src).metadata
    base = child(None, None)
    res = child(src, OUT / f"trace-{args.rows}.parquet")
    print(json.dumps({
        "benchmark": "import_diffusiondb", "rows": args.rows, "row_groups": meta.num_row_groups,
        "fixture_mib": round(src.stat().st_size / 2**20, 1),
        "requests": res["requests"], "images_collapsed": res["images_collapsed"],
        "wall_s": round(res["wall_s"], 2), "rows_per_s": round(args.rows / res["wall_s"]),
        "peak_rss_mib": round(res["maxrss_kib"] / 1024, 1), "baseline_rss_mib": round(base["maxrss_kib"] / 1024, 1),
    }))


if __name__ == "__main__":
    main()
