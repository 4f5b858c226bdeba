"""Synthetic generator speed and memory: N requests in vectors mode and in text mode without embedding.

Each mode runs in a fresh child process (so peak RSS is per mode), repeated --repeats times; the
JSON line reports median seconds for generation (skeleton + prompts or vectors), statistics, and
writing the parquet files, plus the worst peak RSS. Reported, never asserted.
Usage: python benchmarks/synth_speed.py [--requests 2000000] [--repeats 1] [--modes vectors,text]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(mode: str, requests: int, seed: int) -> dict[str, float]:
    from sim.synth.config import SynthConfig
    from sim.synth.generator import generate, trace_table
    from sim.synth.generator import statistics as synth_stats
    from sim.trace import embeddings_path, write_embeddings, write_trace

    t0 = time.perf_counter()
    res = generate(SynthConfig(), requests, seed, mode)  # type: ignore[arg-type]
    t1 = time.perf_counter()
    stats = synth_stats(res)
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "t.parquet"
        write_trace(trace_table(res), out)
        if res.vectors is not None and res.distinct_prompts is not None:
            write_embeddings(res.distinct_prompts, res.vectors, "synth-vectors", embeddings_path(out))
    t3 = time.perf_counter()
    return {"generate_s": t1 - t0, "stats_s": t2 - t1, "write_s": t3 - t2,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "unique_prompts": stats["unique_prompts"], "exact_repeat_share": stats["exact_repeat_share"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--modes", default="vectors,text")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.requests, 0)))
        return
    row: dict[str, object] = {"benchmark": "synth_speed", "requests": args.requests, "repeats": args.repeats}
    for mode in args.modes.split(","):
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--requests", str(args.requests)],
                                 check=True, capture_output=True, text=True, cwd=ROOT)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        for key in ("generate_s", "stats_s", "write_s"):
            row[f"{mode}_{key}"] = round(statistics.median(r[key] for r in runs), 2)
        row[f"{mode}_requests_per_s"] = round(args.requests / statistics.median(r["generate_s"] for r in runs))
        row[f"{mode}_peak_rss_mib"] = round(max(r["peak_rss_mib"] for r in runs), 1)
        row[f"{mode}_unique_prompts"] = runs[0]["unique_prompts"]
    print(json.dumps(row))


if __name__ == "__main__":
    main()
