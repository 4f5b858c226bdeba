"""Two traces' statistics side by side (`trace stats A --vs B`), with DiffusionDB's published figures where known."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sim.errors import InputError
from sim.fileio import write_text_atomic
from sim.trace import embeddings_path

# Published DiffusionDB 2M figures (Wang et al., ACL 2023; DESIGN.md §2 and §6). Nothing else is
# published for it (per-user sessions, reuse distances and similarities are not), so other rows show '-'.
DIFFUSIONDB_2M = {
    "requests": "2,000,000",
    "unique_prompts": "~1,500,000",
    "exact_repeat_share": "~25%",
    "span": "Aug 2022 (Discord)",
}


def embedder_tag(trace: Path) -> str | None:
    """The embedder tag of T.embeddings.parquet beside the trace, or None when it has no embeddings."""
    emb = embeddings_path(trace)
    if not emb.is_file():
        return None
    try:
        meta = pq.read_schema(emb).metadata or {}
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{emb}: unreadable embeddings file ({exc})") from None
    return meta.get(b"embedder", b"").decode() or None


def check_embedders(a: Path, b: Path) -> None:
    """Both traces' similarities must be on one embedder's scale to be compared."""
    tag_a, tag_b = embedder_tag(a), embedder_tag(b)
    if tag_a is not None and tag_b is not None and tag_a != tag_b:
        raise InputError(f"{b}: embedded with {tag_b!r}, but {a} with {tag_a!r}; re-embed one with "
                         f"`python -m sim trace embed {b} --embedder ...` to compare similarities")


def _rows(s: dict[str, Any]) -> dict[str, str]:
    days = s["requests_per_day"]
    active = [d for d in days if d]
    hours = s["requests_per_hour_of_day"]
    ses, reuse = s["sessions"], s["reuse"]

    def num(v: Any, fmt: str = "{:,}") -> str:
        return "-" if v is None else fmt.format(v)

    rows = {
        "requests": num(s["requests"]),
        "span": f"{s['span_s'] / 86_400:.1f} days",
        "requests per day: mean / min / max": f"{s['requests'] / len(days):,.0f} / {min(active):,} / {max(active):,}",
        "requests per hour of day: min / max": f"{min(hours):,} / {max(hours):,}",
        "unique_prompts": num(s["unique_prompts"]),
        "exact_repeat_share": f"{s['exact_repeat_share']:.1%}",
        "reuse distance p50 / p90 (requests)": f"{num(reuse['distance_p50'], '{:,.0f}')} / "
                                               f"{num(reuse['distance_p90'], '{:,.0f}')}",
        "reuse gap p50 / p90 (h)": f"{num(reuse['gap_h_p50'], '{:.2f}')} / {num(reuse['gap_h_p90'], '{:.2f}')}",
        "cross-user repeats (share of requests)": f"{reuse['cross_user_share']:.1%}",
        "cross-day repeats (share of requests)": f"{reuse['cross_day_share']:.1%}",
        "users / sessions": f"{s['users']:,} / {ses['total']:,}",
        "requests per session": num(ses["requests_per_session_mean"], "{:.2f}"),
        "daily top overlap (1 = no drift)": num(s["daily_top_overlap_mean"], "{:.2f}"),
    }
    sim = s.get("similarity")
    if sim and sim["share_above"]:
        above = sim["share_above"]
        rows["nearest earlier > 0.65 / 0.85 / 0.95"] = " / ".join(f"{above[t]:.1%}" for t in ("0.65", "0.85", "0.95"))
        rows["similarity scale"] = sim["scale"]
    else:
        rows["nearest earlier > 0.65 / 0.85 / 0.95"] = "- (no embeddings)"
    return rows


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Row label -> (A, B, DiffusionDB 2M published or '-')."""
    ra, rb = _rows(a), _rows(b)
    labels = list(dict.fromkeys([*ra, *rb]))
    return {"a": a["trace"], "b": b["trace"],
            "rows": [{"statistic": k, "a": ra.get(k, "-"), "b": rb.get(k, "-"),
                      "diffusiondb_2m": DIFFUSIONDB_2M.get(k, "-")} for k in labels]}


def write_and_print(table: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "compare.json"
    write_text_atomic(path, json.dumps(table, indent=2, ensure_ascii=False) + "\n")
    width = max(len(r["statistic"]) for r in table["rows"])
    cols = [max(len(Path(table["a"]).name), *(len(r["a"]) for r in table["rows"])),
            max(len(Path(table["b"]).name), *(len(r["b"]) for r in table["rows"]))]
    print(f"{'':{width}}  {Path(table['a']).name:>{cols[0]}}  {Path(table['b']).name:>{cols[1]}}  "
          "DiffusionDB 2M (published)")
    for r in table["rows"]:
        print(f"{r['statistic']:{width}}  {r['a']:>{cols[0]}}  {r['b']:>{cols[1]}}  {r['diffusiondb_2m']}")
    return path
