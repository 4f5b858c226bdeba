"""Per-request records -> run summary (plain data, strict JSON, deterministic); quality derived after the run.

Every figure comes from the records: hit rate, compute saved, quality and cost are computed here, never
inside an executor. Undefined values are ``null``: a figure an untimed executor cannot give (latency,
utilisation), a ratio over an empty set, or a price the cost profile does not list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.quality import QualityModel
from sim.scenario.records import HIT_OUTCOMES, OUTCOMES, Records

PERCENTILES = (50, 95, 99)


def derive_quality(rec: Records, model: QualityModel) -> None:
    """Fill the ``quality`` column from each request's (outcome, K used, similarity)."""
    out = rec["quality"]
    for i, (o, k, s) in enumerate(zip(rec["outcome"].tolist(), rec["k_used"].tolist(), rec["similarity"].tolist(),
                                      strict=True)):
        out[i] = model.estimate_outcome(OUTCOMES[o], k, s)


def _r(x: float) -> float | None:
    """Round so summaries stay readable; identical inputs still give identical bytes. NaN/inf -> None."""
    x = float(x)
    return float(f"{x:.10g}") if math.isfinite(x) else None


def _dist(values: np.ndarray) -> dict[str, float | None] | None:
    if len(values) == 0 or not np.isfinite(values).all():
        return None
    out = {"mean": _r(values.mean())}
    for p in PERCENTILES:
        out[f"p{p}"] = _r(np.percentile(values, p))
    return out


def queue_length_at_arrivals(rec: Records) -> np.ndarray:
    """Requests waiting for a GPU at each request's queue entry (excluding itself); GPU requests only."""
    gpu = rec["gpu"] >= 0
    start = rec["start_s"][gpu]
    enter = start - rec["queue_wait_s"][gpu]
    order_enter = np.sort(enter)
    order_start = np.sort(start)
    entered = np.searchsorted(order_enter, enter, side="left")
    started = np.searchsorted(order_start, enter, side="right")
    return np.maximum(entered - started, 0)


@dataclass(frozen=True)
class RunCost:
    """Prices that apply to a run (None: unpriced): the fleet per hour, per GPU type per hour (on demand) and
    per second (serverless), and the cache's storage per month."""

    profile: str
    gpu_usd_per_h: float
    storage_usd_per_month: float | None
    gpu_hour_usd: dict[str, float] = field(default_factory=dict)
    serverless_gpu_second_usd: dict[str, float] = field(default_factory=dict)


def batch_busy_s(rec: Records) -> tuple[np.ndarray, np.ndarray]:
    """(gpu, busy seconds) per batch: a batch holds its GPU for its longest member."""
    on_gpu = rec["batch_id"] >= 0
    ids_all = rec["batch_id"][on_gpu]
    if len(ids_all) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    order = np.argsort(ids_all, kind="stable")
    ids = ids_all[order]
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    busy = np.maximum.reduceat(rec["service_s"][on_gpu][order], first)
    return rec["gpu"][on_gpu][order][first], busy


def is_saturated(rec: Records, busy_s: float, num_gpus: int) -> tuple[bool, float]:
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


def measured(rec: Records) -> Records:
    """The records the summary counts: warm-up requests are dropped (they stay in requests.parquet)."""
    keep = ~rec["warmup"]
    return rec if keep.all() else {name: col[keep] for name, col in rec.items()}


def summarize(rec: Records, *, ks: tuple[int, ...], gpu_kinds: list[str], cost: RunCost | None = None,
              timed: bool = True) -> dict[str, Any]:
    """The run summary. ``timed`` False (sequential executor): no time figures, only the cache's."""
    num_warmup = int(rec["warmup"].sum())
    rec = measured(rec)
    n = len(rec["arrival_s"])
    if n == 0:
        raise ValueError("no requests left to summarise after the warm-up")
    k_used, k_selected, outcome = rec["k_used"], rec["k_selected"], rec["outcome"]
    hits = int(np.isin(outcome, HIT_OUTCOMES).sum())
    steps_total = int(rec["num_steps"].sum())
    # Denoising steps not run on any GPU: K for a latent hit, all N for a final-image hit.
    steps_skipped = int((rec["num_steps"] - rec["gpu_steps"]).sum())
    counts = {str(k): int((k_used == k).sum()) for k in (0, *ks)}
    out: dict[str, Any] = {
        "requests": n,
        "warmup_requests": num_warmup,
        "hits": hits,
        "misses": n - hits,
        "hit_rate": _r(hits / n),
        "outcomes": {name: int((outcome == code).sum()) for code, name in enumerate(OUTCOMES)},
        "k_histogram": counts,
        # a hole: similarity asked for K but eviction left only a smaller K' (or none: a miss)
        "hole_hits": int(((k_used > 0) & rec["hole"]).sum()),
        "hole_misses": int(((k_selected > 0) & (k_used == 0) & rec["hole"]).sum()),
        # the similarity asked for a K >= the request's own N: capped at the largest cached K' < N
        "k_clamped": int((k_selected >= rec["num_steps"]).sum()),
        "steps_total": steps_total,
        "steps_skipped": steps_skipped,
        # NIRVANA's metric: fraction of denoising compute saved, sum K_used / (N x requests)
        "compute_saved": _r(steps_skipped / steps_total),
        "admissions": int((rec["admitted_entry"] >= 0).sum()),
        "admissions_rejected": int(((rec["admitted_entry"] < 0) & ~np.isnan(rec["admit_s"])).sum()),
        "evicted_noises": int(rec["num_evicted"].sum()),
        "quality_mean": _r(rec["quality"].mean()),
    }
    out.update(_time_figures(rec, gpu_kinds) if timed else _untimed(gpu_kinds))
    on_gpu_s = _gpu_seconds_by_kind(rec, gpu_kinds, timed)
    out["gpu_seconds"] = _r(sum(on_gpu_s.values()))
    if cost is not None:
        makespan = float(rec["finish_s"].max() - rec["arrival_s"].min()) if timed else None
        out["cost"] = _cost(cost, on_gpu_s, makespan, n)
    return out


def _gpu_seconds_by_kind(rec: Records, gpu_kinds: list[str], timed: bool) -> dict[str, float]:
    """GPU seconds consumed per GPU type. Timed: each batch holds its GPU for its longest member;
    untimed: each request's batch-1 service time, on the first pool's GPU type (the sequential replay
    assigns no GPU)."""
    if not timed:
        return {gpu_kinds[0]: float(np.nansum(rec["service_s"]))}
    batch_gpu, batch_busy = batch_busy_s(rec)
    kinds = np.asarray(gpu_kinds, dtype=object)
    return {kind: float(batch_busy[kinds[batch_gpu] == kind].sum()) for kind in dict.fromkeys(gpu_kinds)}


def _untimed(gpu_kinds: list[str]) -> dict[str, Any]:
    kinds = {kind: {"gpus": gpu_kinds.count(kind), "requests": None, "utilisation": None}
             for kind in dict.fromkeys(gpu_kinds)}
    return {name: None for name in ("latency_s", "queue_wait_s", "service_s", "frontend_s", "makespan_s",
                                    "throughput_rps", "gpu_utilisation")} | {
        "gpus": kinds, "batches": None, "mean_batch_size": None, "offered_load": None, "saturated": None,
        "max_queue_length": None}


def _time_figures(rec: Records, gpu_kinds: list[str]) -> dict[str, Any]:
    n = len(rec["arrival_s"])
    num_gpus = len(gpu_kinds)
    makespan = float(rec["finish_s"].max() - rec["arrival_s"].min())
    batch_gpu, batch_busy = batch_busy_s(rec)
    busy = float(batch_busy.sum())
    saturated, offered = is_saturated(rec, busy, num_gpus)
    kinds = np.asarray(gpu_kinds, dtype=object)
    on_gpu = rec["gpu"] >= 0
    per_kind = {}
    for kind in dict.fromkeys(gpu_kinds):
        mine = kinds == kind
        per_kind[kind] = {
            "gpus": int(mine.sum()),
            "requests": int(mine[rec["gpu"][on_gpu]].sum()),
            "utilisation": _r(batch_busy[mine[batch_gpu]].sum() / (mine.sum() * makespan)) if makespan > 0 else None,
        }
    queue = queue_length_at_arrivals(rec)
    return {
        "latency_s": _dist(rec["latency_s"]),
        "queue_wait_s": _dist(rec["queue_wait_s"]),
        "service_s": _dist(rec["service_s"]),
        # before the GPU: embedding + vector search + reading the cached latent or image
        "frontend_s": _dist(rec["embed_s"] + rec["search_s"] + rec["fetch_s"]),
        "makespan_s": _r(makespan),
        "throughput_rps": _r(n / makespan) if makespan > 0 else None,
        "gpu_utilisation": _r(busy / (num_gpus * makespan)) if makespan > 0 else None,
        "gpus": per_kind,
        "batches": len(batch_busy),
        "mean_batch_size": _r(int(on_gpu.sum()) / len(batch_busy)) if len(batch_busy) else None,
        "offered_load": _r(offered),
        "saturated": saturated,
        "max_queue_length": int(queue.max()) if len(queue) else 0,
    }


def _bill(gpu_usd: float | None, storage_usd: float | None, n: int) -> dict[str, float | None] | None:
    if gpu_usd is None:
        return None
    total = gpu_usd + (storage_usd or 0.0)
    return {"gpu_usd": _r(gpu_usd), "total_usd": _r(total), "usd_per_1000_images": _r(1000 * total / n)}


def _cost(cost: RunCost, on_gpu_s: dict[str, float], makespan_s: float | None, n: int) -> dict[str, Any]:
    """Three bills, each named: GPU seconds consumed at on-demand or serverless prices (what a cache lowers),
    and the whole fleet provisioned for the run's span (what it does not); storage for the cache's capacity
    over the run's span. The fewest GPUs meeting a p99 SLO, and their cost, is `slo_fleet` (null until an
    SLO search fills it)."""
    hours = makespan_s / 3600 if makespan_s is not None else None
    storage_usd = None
    if cost.storage_usd_per_month is not None and hours is not None:
        storage_usd = cost.storage_usd_per_month * hours / 730

    def priced(prices: dict[str, float], per_s: float) -> float | None:
        if any(kind not in prices for kind, s in on_gpu_s.items() if s > 0):
            return None
        return sum(prices.get(kind, 0.0) * s / per_s for kind, s in on_gpu_s.items())

    fleet = cost.gpu_usd_per_h * hours if hours is not None else None
    return {
        "profile": cost.profile,
        "storage_usd": _r(storage_usd) if storage_usd is not None else None,
        "on_demand_consumed": _bill(priced(cost.gpu_hour_usd, 3600.0), storage_usd, n),
        "serverless_consumed": _bill(priced(cost.serverless_gpu_second_usd, 1.0), storage_usd, n),
        "fleet": _bill(fleet, storage_usd, n),
        "slo_fleet": None,
    }
