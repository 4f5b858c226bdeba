"""Trace statistics: arrivals by day and hour, exact repeats, sessions, top prompts, nearest-earlier similarity.

Every number is defined in DEFINITIONS, which stats.json repeats so the file explains itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sim.embedding.simmap import find_map
from sim.errors import InputError
from sim.figsave import save_figure
from sim.fileio import check_output_dir, write_text_atomic, writing
from sim.retrieval.cosine import top1_rows
from sim.trace import embeddings_path, load_trace

THRESHOLDS = (0.65, 0.75, 0.85, 0.90, 0.95)  # NIRVANA's K table (DESIGN.md §1)
SIMILARITY_EDGES = np.linspace(-1.0, 1.0, 41)  # 0.05-wide bins
_QUERY_BLOCK = 256
_PROMPT_BLOCK = 16_384  # 256 × 16K float32 = 16 MiB per similarity block
_DAY_S = 86_400.0
DEFINITIONS = {
    "day/hour": "calendar UTC when NAME.import.json beside the trace gives origin_utc (the instant of "
                "arrival_s = 0, written by `trace import-diffusiondb`); otherwise counted from arrival_s = 0",
    "exact_repeat_share": "requests whose prompt appeared in an earlier request: 1 - unique prompts / requests",
    "session": "a known user's run of requests with gaps <= gap_s; null users are unknown (each could be "
               "anyone), so their requests are counted but never sessionised",
    "top_prompts": "cluster = one exact prompt (embedding clusters would depend on the embedder's scale; the "
                   "similarity histogram shows the near-duplicate structure); the most requested prompts over "
                   "the whole trace, ties to the earlier first appearance, with their requests per day",
    "reuse": "per exact repeat, the previous request of the same prompt: distance = requests between the two "
             "(1 = the request just before), gap_h = hours between them; cross_user_share = repeats whose previous "
             "request was by another known user, over all requests; cross_day_share = repeats whose prompt was "
             "first requested on an earlier day, over all requests",
    "daily_top_overlap_mean": "mean over consecutive days of |top-N(day) ∩ top-N(day-1)| / N (drift: 1 = none)",
    "similarity": "per query request, the highest cosine between its prompt and any other distinct prompt "
                  "first seen before it (its own earlier copies excluded; share_above_counting_exact_repeats_as_1 "
                  "puts them back); exact float32 dot products in bounded blocks; with more requests than "
                  "max_queries the queries are requests floor(j * n / max_queries), j = 0..max_queries-1",
}


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """arrival_s, prompt id (numbered by first appearance), user id (-1 = null), prompt texts."""
    from sim.trace import read_parquet

    table = read_parquet(path, "trace", columns=["arrival_s", "prompt", "user"])
    if table.num_rows == 0:
        raise InputError(f"{path}: the trace has no requests")
    arrival_col = table.column("arrival_s")
    if arrival_col.null_count or not pa.types.is_floating(arrival_col.type):
        raise InputError(f"{path}: column 'arrival_s': expected non-null float64, got {arrival_col.type} "
                         f"with {arrival_col.null_count} nulls")
    arrival = arrival_col.to_numpy().astype(np.float64)
    back = np.flatnonzero(np.diff(arrival) < 0)
    if len(back):
        raise InputError(f"{path}: column 'arrival_s': row {back[0] + 1} is earlier than row {back[0]}; "
                         "sort the trace by arrival")
    # Arrow numbers dictionary entries by first occurrence, which the repeat and similarity logic rely on.
    prompts = pc.dictionary_encode(table.column("prompt").combine_chunks())
    if prompts.indices.null_count:
        raise InputError(f"{path}: column 'prompt': {prompts.indices.null_count} null prompts")
    users = pc.dictionary_encode(table.column("user").combine_chunks())
    user_id = users.indices.cast(pa.int64()).fill_null(-1).to_numpy()
    return arrival, prompts.indices.cast(pa.int64()).to_numpy(), user_id, prompts.dictionary.to_pylist()


def _origin_s(path: Path) -> tuple[float, str]:
    """Seconds since a UTC midnight at arrival_s = 0, and what that origin is."""
    report = path.with_name(path.name.removesuffix(".parquet") + ".import.json")
    if report.is_file():
        from datetime import datetime

        try:
            origin = datetime.fromisoformat(json.loads(report.read_text())["origin_utc"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{report}: 'origin_utc' is missing or not an ISO time ({exc})") from None
        midnight = origin.replace(hour=0, minute=0, second=0, microsecond=0)
        return (origin - midnight).total_seconds(), f"UTC calendar ({report.name}: origin_utc {origin.isoformat()})"
    return 0.0, "relative to arrival_s = 0 (no NAME.import.json with origin_utc beside the trace)"


def sessions(arrival: np.ndarray, user_id: np.ndarray, gap_s: float) -> np.ndarray:
    """Number of sessions of each known user (index = user id; users without requests get 0)."""
    known = np.flatnonzero(user_id >= 0)
    if len(known) == 0:
        return np.zeros(0, np.int64)
    order = known[np.argsort(user_id[known], kind="stable")]  # per user, in arrival order
    u, t = user_id[order], arrival[order]
    starts = np.r_[True, (u[1:] != u[:-1]) | (np.diff(t) > gap_s)]
    return np.bincount(u[starts], minlength=int(user_id.max()) + 1)


def reuse(arrival: np.ndarray, prompt_id: np.ndarray, user_id: np.ndarray, day: np.ndarray) -> dict[str, Any]:
    """Reuse distance and time of exact repeats, and how many repeats cross users and days (see DEFINITIONS)."""
    n = len(prompt_id)
    order = np.lexsort((np.arange(n), prompt_id))  # per prompt, in request order
    same = np.r_[False, prompt_id[order][1:] == prompt_id[order][:-1]]
    cur, prev = order[same], order[np.flatnonzero(same) - 1]
    first_day = np.full(int(prompt_id.max()) + 1, -1, np.int64)
    first_day[prompt_id[order][~same]] = day[order][~same]
    distance = (cur - prev).astype(np.float64)
    gap_h = (arrival[cur] - arrival[prev]) / 3600.0
    cross_user = (user_id[cur] >= 0) & (user_id[prev] >= 0) & (user_id[cur] != user_id[prev])

    def q(v: np.ndarray, p: float) -> float | None:
        return round(float(np.quantile(v, p)), 3) if len(v) else None

    return {
        "repeats": len(cur),
        "distance_p50": q(distance, 0.5), "distance_p90": q(distance, 0.9),
        "gap_h_p50": q(gap_h, 0.5), "gap_h_p90": q(gap_h, 0.9),
        "cross_user_share": round(float(cross_user.sum() / n), 6),
        "cross_day_share": round(float((first_day[prompt_id[cur]] < day[cur]).sum() / n), 6),
    }


def nearest_earlier(vectors: np.ndarray, prompt_id: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each query request, the max cosine to any other prompt first seen before it (NaN if none)."""
    seen_before = np.r_[0, np.maximum.accumulate(prompt_id)[:-1] + 1]  # distinct prompts before request i
    own = prompt_id[queries]
    _, out = top1_rows(vectors[own], vectors, exclude=own, limit=seen_before[queries],
                       chunk=_QUERY_BLOCK, pool_block=_PROMPT_BLOCK)
    out[~np.isfinite(out)] = np.nan
    return out


def trace_stats(path: Path, out_dir: Path | None = None, *, session_gap_s: float = 1800.0, top: int = 10,
                max_queries: int = 50_000, plots: bool = True) -> dict[str, Any]:
    """Compute the statistics of trace ``path``; write stats.json (and PNGs) to ``out_dir``."""
    if session_gap_s <= 0 or top < 1 or max_queries < 1:
        raise InputError("trace stats: --session-gap-s, --top and --max-queries must be positive")
    arrival, prompt_id, user_id, prompts = _read(path)
    n = len(arrival)
    offset_s, calendar = _origin_s(path)
    day = ((arrival + offset_s) // _DAY_S).astype(np.int64)
    hour = (((arrival + offset_s) % _DAY_S) // 3600).astype(np.int64)
    num_days = int(day.max()) + 1
    per_prompt = np.bincount(prompt_id)
    num_sessions = sessions(arrival, user_id, session_gap_s)
    num_sessions = num_sessions[num_sessions > 0]
    top_ids = np.argsort(-per_prompt, kind="stable")[:top]  # ties: earlier first appearance first
    per_day = np.bincount(day, minlength=num_days)
    top_by_day = np.stack([np.bincount(day[prompt_id == p], minlength=num_days) for p in top_ids])
    daily_top = [set(np.argsort(-np.bincount(prompt_id[day == d], minlength=len(prompts)), kind="stable")[:top])
                 if per_day[d] else set() for d in range(num_days)]
    overlap = [len(daily_top[d] & daily_top[d - 1]) / top for d in range(1, num_days)
               if per_day[d] and per_day[d - 1]]
    stats: dict[str, Any] = {
        "trace": str(path),
        "requests": n,
        "span_s": round(float(arrival[-1] - arrival[0]), 3),
        "unique_prompts": len(prompts),
        "exact_repeat_share": round(1 - len(prompts) / n, 6),
        "requests_per_day": per_day.tolist(),
        "requests_per_hour_of_day": np.bincount(hour, minlength=24).tolist(),
        "days": calendar,
        "users": len(num_sessions),
        "unknown_user_requests": int((user_id < 0).sum()),
        "sessions": {
            "gap_s": session_gap_s,
            "total": int(num_sessions.sum()),
            "per_user_mean": round(float(num_sessions.mean()), 4) if len(num_sessions) else None,
            "per_user_median": float(np.median(num_sessions)) if len(num_sessions) else None,
            "per_user_max": int(num_sessions.max()) if len(num_sessions) else None,
            "per_user_histogram": {str(k): int(v) for k, v in enumerate(np.bincount(num_sessions)) if k and v},
            "requests_per_session_mean": (round(float((user_id >= 0).sum() / num_sessions.sum()), 4)
                                          if len(num_sessions) else None),
        },
        "top_prompts": [{"prompt": prompts[p], "requests": int(per_prompt[p]), "per_day": top_by_day[i].tolist()}
                        for i, p in enumerate(top_ids)],
        "daily_top_overlap_mean": round(float(np.mean(overlap)), 4) if overlap else None,
        "reuse": reuse(arrival, prompt_id, user_id, day),
    }
    emb = embeddings_path(path)
    sims = None
    if emb.is_file():
        trace = load_trace(path)  # validates the embeddings and aligns them with first-appearance order
        queries = (np.unique(np.arange(max_queries) * n // max_queries) if n > max_queries
                   else np.arange(n, dtype=np.int64))
        sims = nearest_earlier(trace.vectors, prompt_id, queries)
        # Report on NIRVANA's (CLIP) scale where a similarity map exists for this embedder.
        smap = find_map(trace.embedder)
        raw_valid = sims[~np.isnan(sims)]
        if smap is not None:
            sims = np.where(np.isnan(sims), np.nan, smap.apply_array(sims))
        valid = sims[~np.isnan(sims)]
        repeat = np.r_[False, prompt_id[1:] <= np.maximum.accumulate(prompt_id)[:-1]][queries]
        with_repeats = np.where(repeat, 1.0, sims)
        with_repeats = with_repeats[~np.isnan(with_repeats)]
        counts, _ = np.histogram(np.clip(valid, -1.0, 1.0), bins=SIMILARITY_EDGES)
        stats["similarity"] = {
            "embedder": trace.embedder,
            "scale": f"CLIP text cosine via {Path(smap.source).name}" if smap is not None else "raw cosine",
            "share_above_raw": ({str(t): round(float((raw_valid > t).mean()), 6) for t in THRESHOLDS}
                                if len(raw_valid) else {}),
            "queries": len(queries), "sampled": bool(n > max_queries),
            "no_earlier_prompt": int(np.isnan(sims).sum()),
            "bin_edges": [round(float(e), 2) for e in SIMILARITY_EDGES], "counts": counts.tolist(),
            "share_above": {str(t): round(float((valid > t).mean()), 6) for t in THRESHOLDS} if len(valid) else {},
            "share_above_counting_exact_repeats_as_1": (
                {str(t): round(float((with_repeats > t).mean()), 6) for t in THRESHOLDS} if len(with_repeats)
                else {}),
        }
    stats["definitions"] = DEFINITIONS
    out_dir = out_dir or path.with_name(path.name.removesuffix(".parquet") + ".stats")
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / "stats.json", json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
        if plots:
            _plot(stats, out_dir, sims)
    return stats


def _plot(stats: dict[str, Any], out_dir: Path, sims: np.ndarray | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        save_figure(fig, out_dir / name)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(len(stats["requests_per_day"])), stats["requests_per_day"])
    ax.set(xlabel=f"day ({stats['days'].split(' (')[0]})", ylabel="requests")
    save(fig, "requests_per_day.png")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(24), stats["requests_per_hour_of_day"])
    ax.set(xlabel="hour of day", ylabel="requests")
    save(fig, "requests_per_hour.png")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    hist = stats["sessions"]["per_user_histogram"]
    ax.bar([int(k) for k in hist], list(hist.values()))
    ax.set(xlabel=f"sessions per user (gap > {stats['sessions']['gap_s'] / 60:g} min)", ylabel="users")
    save(fig, "sessions_per_user.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    per_day = np.maximum(np.asarray(stats["requests_per_day"]), 1)
    for rank, item in enumerate(stats["top_prompts"], start=1):
        ax.plot(np.asarray(item["per_day"]) / per_day, marker=".", label=f"#{rank} {item['prompt'][:30]}")
    ax.set(xlabel="day", ylabel="share of the day's requests", title="top prompts (exact) day by day")
    ax.legend(fontsize=6)
    save(fig, "top_prompts_by_day.png")
    if sims is not None:
        sim = stats["similarity"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.stairs(sim["counts"], SIMILARITY_EDGES, fill=True)
        for t in THRESHOLDS:
            ax.axvline(t, color="grey", lw=0.6, ls="--")
        ax.set(xlabel=f"similarity to nearest earlier other prompt ({sim['scale'][:50]})", ylabel="requests")
        save(fig, "similarity_nearest_earlier.png")


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "stats", help="print and plot a trace's statistics",
        description="Requests per day and hour, exact repeats, sessions per user, top prompts day by day, and "
                    "(when NAME.embeddings.parquet exists) each request's similarity to its nearest earlier prompt.",
    )
    cmd.add_argument("trace", help="canonical trace parquet")
    cmd.add_argument("--out", help="folder for stats.json and PNGs (default: NAME.stats/ beside the trace)")
    cmd.add_argument("--session-gap-s", type=float, default=1800.0, help="inactivity that ends a session (s)")
    cmd.add_argument("--top", type=int, default=10, help="top prompts to follow day by day")
    cmd.add_argument("--max-queries", type=int, default=50_000,
                     help="similarity queries at most (evenly spaced requests beyond that)")
    cmd.add_argument("--vs", metavar="B.parquet",
                     help="a second trace: print both side by side (with DiffusionDB's published figures) and "
                          "write compare.json; B's own stats.json goes to OUT/vs/")
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    if not args.trace.strip():
        raise InputError("trace: empty path (name a trace parquet file)")
    path = Path(args.trace)
    if args.out is not None:
        check_output_dir(args.out)
    out = Path(args.out) if args.out else path.with_name(path.name.removesuffix(".parquet") + ".stats")
    if args.vs:
        from sim.workload import stats_compare

        other = Path(args.vs)
        stats_compare.check_embedders(path, other)  # before any work: similarities must share one scale
        kw = {"session_gap_s": args.session_gap_s, "top": args.top, "max_queries": args.max_queries}
        a = trace_stats(path, out, **kw)
        b = trace_stats(other, out / "vs", plots=False, **kw)
        written = stats_compare.write_and_print(stats_compare.compare(a, b), out)
        print(f"wrote {written}, {out}/stats.json and {out}/vs/stats.json")
        return 0
    s = trace_stats(path, out, session_gap_s=args.session_gap_s, top=args.top, max_queries=args.max_queries)
    ses = s["sessions"]
    print(f"requests {s['requests']:,} over {s['span_s'] / 3600:.1f} h; unique prompts {s['unique_prompts']:,}; "
          f"exact repeats {s['exact_repeat_share']:.1%}")
    print(f"requests per day {s['requests_per_day']} ({s['days']})")
    print(f"users {s['users']:,} (+{s['unknown_user_requests']:,} requests by unknown users); sessions "
          f"{ses['total']:,}, per user mean {ses['per_user_mean']} max {ses['per_user_max']}")
    for rank, item in enumerate(s["top_prompts"][:5], start=1):
        print(f"top {rank}: {item['requests']:,} requests  {item['prompt'][:70]!r}")
    if "similarity" in s:
        sim = s["similarity"]
        above = ", ".join(f">{t}: {v:.1%}" for t, v in sim["share_above"].items())
        print(f"nearest earlier other prompt ({sim['queries']:,} queries{', sampled' if sim['sampled'] else ''}; "
              f"{sim['scale']}): {above}")
    print(f"wrote {out}/stats.json and plots")
    return 0
