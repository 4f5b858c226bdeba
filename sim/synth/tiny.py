"""The committed tiny trace, built deterministically from real prompts of a production retrieval log.

Derivation (traces/README.md repeats it): rows of ../shared/data/clip_pairs_calibration.csv are
shuffled with the seed. A row whose query matched a cached prompt (CLIP score > 0.65) becomes two
requests, the cached prompt first and the query after an exponential gap, by the same user with
probability ``same_user``; a row without a match becomes one request. Then ``repeat_share`` of all
requests are exact repeats of an earlier request's prompt (DiffusionDB 2M: ~25% repeat an earlier
prompt), picked uniformly among earlier requests, so popular prompts gain popularity. Arrival
times are a homogeneous Poisson process (uniform order statistics) over ``num_requests / rate``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sim.trace import embeddings_path, write_embeddings, write_trace


def read_calibration(path: Path) -> list[tuple[float, str, str]]:
    """(clip_score, query_prompt, cached_prompt or '') of every row with a query, in log order; the one
    reader of the log's format (sim/embedding/simeval.py read_pairs) checks it and names file and row."""
    from sim.embedding.simeval import read_pairs

    log = read_pairs(path)
    return [(float(s), q, c) for s, q, c in zip(log.clip.tolist(), log.queries, log.cached, strict=True) if q.strip()]


def build_tiny_trace(
    calibration: Path,
    out: Path,
    *,
    num_requests: int = 4000,
    seed: int = 0,
    rate_per_s: float = 0.2,
    pair_gap_mean_s: float = 1200.0,
    same_user: float = 0.6,
    repeat_share: float = 0.25,
    num_users: int = 400,
    embedder_name: str = "minilm",
) -> dict[str, Any]:
    from sim.embedding.embedders import EMBEDDERS

    rows = read_calibration(calibration)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    horizon_s = num_requests / rate_per_s
    # Zipf-like user activity: a few heavy users, a long tail.
    user_weights = 1.0 / np.arange(1, num_users + 1) ** 1.1
    user_weights /= user_weights.sum()

    def pick_user() -> str:
        return f"u{rng.choice(num_users, p=user_weights):04d}"

    events: list[tuple[float, str, str]] = []
    seen: set[str] = set()
    repeats = 0
    target_repeats = round(num_requests * repeat_share)

    def emit(t: float, prompt: str, user: str) -> None:
        nonlocal repeats
        repeats += prompt in seen
        seen.add(prompt)
        events.append((t, prompt, user))

    # Real rows first (the log has exact repeats of its own), leaving room for the repeats still owed.
    for j in order:
        if len(events) + max(0, target_repeats - repeats) >= num_requests:
            break
        _score, query, cached = rows[j]
        t = float(rng.uniform(0, horizon_s))
        user = pick_user()
        if cached.strip():
            emit(t, cached, user)
            second = user if rng.random() < same_user else pick_user()
            emit(t + float(rng.exponential(pair_gap_mean_s)), query, second)
        else:
            emit(t, query, user)
    while len(events) < num_requests:
        t, prompt, user = events[int(rng.integers(len(events)))]
        who = user if rng.random() < 0.5 else pick_user()
        emit(t + float(rng.exponential(pair_gap_mean_s)), prompt, who)
    events.sort()
    events = events[:num_requests]

    table = pa.table({
        "request_id": [f"tiny-{i:05d}" for i in range(len(events))],
        "arrival_s": [round(t, 3) for t, _, _ in events],
        "prompt": [p for _, p, _ in events],
        "user": [u for _, _, u in events],
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    write_trace(table, out)
    prompts = list(dict.fromkeys(p for _, p, _ in events))
    embedder = EMBEDDERS.get(embedder_name)()
    write_embeddings(prompts, embedder.embed(prompts), embedder.tag, embeddings_path(out))
    seen.clear()
    repeats = 0
    for _, p, _ in events:
        repeats += p in seen
        seen.add(p)
    return {
        "requests": len(events),
        "unique_prompts": len(prompts),
        "exact_repeat_share": round(repeats / len(events), 4),
        "users": len({u for _, _, u in events}),
        "span_s": round(events[-1][0] - events[0][0], 1),
        "embedder": embedder.tag,
    }


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "build-tiny", help="rebuild the committed tiny trace from the calibration log",
        description="Build traces/tiny deterministically from real prompts (needs the minilm embedder).",
    )
    cmd.add_argument("--calibration", default="../shared/data/clip_pairs_calibration.csv")
    cmd.add_argument("--out", default="traces/tiny/trace.parquet")
    cmd.add_argument("--requests", type=int, default=4000)
    cmd.add_argument("--seed", type=int, default=0)
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    stats = build_tiny_trace(Path(args.calibration), Path(args.out), num_requests=args.requests, seed=args.seed)
    print(json.dumps(stats, indent=2))
    return 0
