"""Candidate precompute time, peak memory and agreement with the exact lists, per method and trace size.

Generates (once, under benchmarks/out/) a deterministic clustered 384-d vectors trace with `trace
synth --mode vectors` (seed 7, default generator except vectors.dim), then builds the candidate
lists of its first N requests (one shared partition, floor 0.65 on the raw scale: synthetic vectors
have no similarity map, M = 64) for each --runs entry METHOD:N, each in a fresh child process. The
child reports the load's peak and resident size (load_trace with a limit reads only the first N
requests and their embeddings; before 2026-12-01 it read every embedding), resets its peak
(clear_refs) and reports the build's own peak (which includes the loaded trace). A method's lists
are compared with the exact method's at the same N when both ran: the share of identical lists, of
equal first candidates, and of exact entries found.
Writes benchmarks/out/precompute.json. Reported, never asserted.
Usage: python benchmarks/precompute.py [--requests 2000000] [--runs ivf:200000,hnsw:200000,exact:100000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"
FLOOR = 0.65
MAX_CANDIDATES = 64


def trace_path(requests: int, dim: int) -> Path:
    return OUT / f"vectors{dim}_{requests}.parquet"


def ensure_trace(requests: int, dim: int, seed: int = 7) -> Path:
    from dataclasses import replace

    from sim.synth.config import SynthConfig
    from sim.synth.generator import write_synth_trace

    path = trace_path(requests, dim)
    if not path.exists():
        cfg = SynthConfig()
        cfg = replace(cfg, vectors=replace(cfg.vectors, dim=dim))
        t0 = time.perf_counter()
        write_synth_trace(cfg, requests, seed, path, mode="vectors")
        print(f"generated {path} in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def _rss_bytes(field: str) -> int:
    """VmHWM (peak) or VmRSS (now) of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child(path: str, method: str, n: int, lists_out: str, queue: mp.Queue) -> None:
    import numpy as np

    from sim.retrieval.precompute import build_candidates
    from sim.trace import load_trace

    t0 = time.perf_counter()
    trace = load_trace(path, limit=n)
    prompt_index = trace.prompt_index
    vectors = trace.vectors[: int(prompt_index.max()) + 1]  # prompts are numbered by first appearance
    load_s = time.perf_counter() - t0
    loaded_gb = _rss_bytes("VmRSS") / 2**30
    load_peak_gb = _rss_bytes("VmHWM") / 2**30
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the next peak is the build's
    t1 = time.perf_counter()
    cands = build_candidates(vectors, prompt_index, np.zeros(len(prompt_index), np.int64), floor=FLOOR,
                             max_candidates=MAX_CANDIDATES, method=method, cache_dir=None)
    build_s = time.perf_counter() - t1
    np.save(lists_out + "_offsets.npy", cands.offsets)
    np.save(lists_out + "_prompts.npy", cands.prompts)
    lengths = np.diff(cands.offsets)
    queue.put({"method": method, "requests": n, "prompts": len(vectors), "dim": int(vectors.shape[1]),
               "load_s": round(load_s, 1), "build_s": round(build_s, 1), "rss_after_load_gb": round(loaded_gb, 2),
               "load_peak_rss_gb": round(load_peak_gb, 2),
               "peak_rss_gb": round(_rss_bytes("VmHWM") / 2**30, 2),
               "mean_list_length": round(float(lengths.mean()), 2),
               "truncated_share": round(float(cands.truncated.mean()), 4)})


def agreement(a: str, b: str) -> dict[str, float]:
    """How close lists ``a`` come to the exact lists ``b`` (same requests)."""
    import numpy as np

    ao, ap = np.load(a + "_offsets.npy"), np.load(a + "_prompts.npy")
    bo, bp = np.load(b + "_offsets.npy"), np.load(b + "_prompts.npy")
    same = found = first = 0
    for i in range(len(ao) - 1):
        x, y = ap[ao[i]:ao[i + 1]], bp[bo[i]:bo[i + 1]]
        same += int(np.array_equal(x, y))
        found += len(np.intersect1d(x, y, assume_unique=True))
        first += int(len(x) == len(y) == 0 or (len(x) > 0 and len(y) > 0 and x[0] == y[0]))
    n = len(ao) - 1
    return {"identical_lists_share": round(same / n, 5), "exact_entries_found": round(found / max(len(bp), 1), 5),
            "first_candidate_equal_share": round(first / n, 5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2_000_000, help="size of the generated trace")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--runs", default="ivf:200000,hnsw:200000,exact:100000,ivf:100000",
                    help="comma-separated METHOD:N (N <= --requests)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = ensure_trace(args.requests, args.dim)
    results = []
    ctx = mp.get_context("spawn")
    for run in args.runs.split(","):
        method, n = run.split(":")[0], int(run.split(":")[1])
        lists = str(OUT / f"lists_{method}_{n}")
        queue: mp.Queue = ctx.Queue()
        proc = ctx.Process(target=child, args=(str(path), method, n, lists, queue))
        proc.start()
        res = queue.get()
        proc.join()
        results.append(res)
        print(json.dumps(res), flush=True)
    for res in results:
        exact = OUT / f"lists_exact_{res['requests']}_offsets.npy"
        if res["method"] != "exact" and exact.exists() and any(
                r["method"] == "exact" and r["requests"] == res["requests"] for r in results):
            res["vs_exact"] = agreement(str(OUT / f"lists_{res['method']}_{res['requests']}"),
                                        str(OUT / f"lists_exact_{res['requests']}"))
            print(json.dumps({"method": res["method"], "requests": res["requests"], **res["vs_exact"]}), flush=True)
    import faiss
    import hnswlib  # noqa: F401
    import numpy as np

    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {mp.cpu_count()} CPUs",
              "versions": {"numpy": np.__version__, "faiss-cpu": faiss.__version__},
              "trace": str(path.relative_to(ROOT)), "floor": FLOOR, "max_candidates": MAX_CANDIDATES,
              "results": results}
    (OUT / "precompute.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
