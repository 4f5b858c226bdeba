"""Per-request records -> run summary (plain data, JSON-ready, deterministic); quality derived after the run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.quality import QualityModel
from sim.scenario.records import OUTCOMES, Records


def derive_quality(rec: Records, model: QualityModel) -> None:
    """Fill the ``quality`` column from each request's (outcome, K used, similarity)."""
    out = rec["quality"]
    for i, (o, k, s) in enumerate(zip(rec["outcome"].tolist(), rec["k_used"].tolist(), rec["similarity"].tolist(),
                                      strict=True)):
        out[i] = model.estimate_outcome(OUTCOMES[o], k, s)

PERCENTILES = (50, 95, 99)


def _r(x: float) -> float:
    """Round so summaries stay readable; identical inputs still give identical bytes."""
    return float(f"{float(x):.10g}")


def _dist(values: np.ndarray) -> dict[str, float]:
    out = {"mean": _r(values.mean())}
    for p in PERCENTILES:
        out[f"p{p}"] = _r(np.percentile(values, p))
    return out


def queue_length_at_arrivals(rec: dict[str, np.ndarray]) -> np.ndarray:
    """Requests waiting for a GPU at each request's queue entry (excluding itself)."""
    start = rec["start_s"]
    enter = start - rec["queue_wait_s"]
    order_enter = np.sort(enter)
    order_start = np.sort(start)
    entered = np.searchsorted(order_enter, enter, side="left")
    started = np.searchsorted(order_start, enter, side="right")
    return np.maximum(entered - started, 0)


@dataclass(frozen=True)
class RunCost:
    """Prices that apply to a run: the GPU fleet per hour, the cache's storage per month (None: unpriced)."""

    profile: str
    gpu_usd_per_h: float
    storage_usd_per_month: float | None


def batch_busy_s(rec: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(gpu, busy seconds) per batch: a batch holds its GPU for its longest member."""
    order = np.argsort(rec["batch_id"], kind="stable")
    ids = rec["batch_id"][order]
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    busy = np.maximum.reduceat(rec["service_s"][order], first)
    return rec["gpu"][order][first], busy


def is_saturated(rec: dict[str, np.ndarray], busy_s: float, num_gpus: int) -> tuple[bool, float]:
    """Whether the GPU queue grows without bound, and the offered load that says so.

    Saturated when the offered load (GPU busy time per unit of arrival time per GPU) is >= 1, or
    when queue waits trend upwards across the run: the mean wait of the last tenth of requests
    exceeds both ten mean service times and twice the mean wait of the middle third.
    """
    arrival, wait, service = rec["arrival_s"], rec["queue_wait_s"], rec["service_s"]
    n = len(arrival)
    span = float(arrival[-1] - arrival[0])
    offered = busy_s / (num_gpus * span) if span > 0 else float("inf")
    if offered >= 1.0:
        return True, offered
    if n < 20:
        return False, offered
    tail = wait[-(n // 10):].mean()
    middle = wait[n // 3 : 2 * n // 3].mean()
    return bool(tail > 10 * service.mean() and tail > 2 * middle), offered


def summarize(
    rec: dict[str, np.ndarray], *, ks: tuple[int, ...], gpu_kinds: list[str], cost: RunCost | None = None
) -> dict[str, Any]:
    n = len(rec["arrival_s"])
    num_gpus = len(gpu_kinds)
    k_used = rec["k_used"]
    k_selected = rec["k_selected"]
    hits = int((k_used > 0).sum())
    steps_total = int(rec["num_steps"].sum())
    steps_skipped = int(k_used.sum())
    makespan = float(rec["finish_s"].max() - rec["arrival_s"].min())
    batch_gpu, batch_busy = batch_busy_s(rec)
    busy = float(batch_busy.sum())
    saturated, offered = is_saturated(rec, busy, num_gpus)
    counts = {str(k): int((k_used == k).sum()) for k in (0, *ks)}
    kinds = np.asarray(gpu_kinds, dtype=object)
    per_kind = {}
    for kind in dict.fromkeys(gpu_kinds):
        mine = kinds == kind
        served = mine[rec["gpu"]]
        per_kind[kind] = {
            "gpus": int(mine.sum()),
            "requests": int(served.sum()),
            "utilisation": _r(batch_busy[mine[batch_gpu]].sum() / (mine.sum() * makespan)) if makespan > 0 else None,
        }
    out: dict[str, Any] = {
        "requests": n,
        "hits": hits,
        "misses": n - hits,
        "hit_rate": _r(hits / n),
        "k_histogram": counts,
        # a hole: similarity asked for K but eviction left only a smaller K' (or none: a miss)
        "hole_hits": int(((k_used > 0) & (k_used < k_selected)).sum()),
        "hole_misses": int(((k_selected > 0) & (k_used == 0)).sum()),
        "steps_total": steps_total,
        "steps_skipped": steps_skipped,
        # NIRVANA's metric: fraction of denoising compute saved, sum K_used / (N x requests)
        "compute_saved": _r(steps_skipped / steps_total),
        "admissions": int((rec["admitted_entry"] >= 0).sum()),
        "admissions_rejected": int(((k_used == 0) & (rec["admitted_entry"] < 0) & ~np.isnan(rec["admit_s"])).sum()),
        "evicted_noises": int(rec["num_evicted"].sum()),
        "latency_s": _dist(rec["latency_s"]),
        "queue_wait_s": _dist(rec["queue_wait_s"]),
        "service_s": _dist(rec["service_s"]),
        "retrieval_s": _dist(rec["embed_s"] + rec["search_s"] + rec["fetch_s"]),
        "makespan_s": _r(makespan),
        "throughput_rps": _r(n / makespan) if makespan > 0 else None,
        "gpu_seconds": _r(busy),
        "gpu_utilisation": _r(busy / (num_gpus * makespan)) if makespan > 0 else None,
        "gpus": per_kind,
        "batches": len(batch_busy),
        "mean_batch_size": _r(n / len(batch_busy)),
        "offered_load": _r(offered),
        "saturated": saturated,
        "max_queue_length": int(queue_length_at_arrivals(rec).max()),
        "quality_mean": _r(rec["quality"].mean()),
    }
    if cost is not None:
        # The fleet is paid for the whole run (provisioned, not per busy second); storage for the cache's capacity.
        hours = makespan / 3600
        gpu_usd = cost.gpu_usd_per_h * hours
        storage_usd = None if cost.storage_usd_per_month is None else cost.storage_usd_per_month * hours / 730
        total = gpu_usd + (storage_usd or 0.0)
        out["cost"] = {
            "profile": cost.profile,
            "gpu_usd": _r(gpu_usd),
            "storage_usd": None if storage_usd is None else _r(storage_usd),
            "total_usd": _r(total),
            "usd_per_1000_images": _r(1000 * total / n),
        }
    return out
