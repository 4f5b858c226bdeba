"""Markdown and CSV tables built from summary.json files only (never re-simulating)."""

from __future__ import annotations

from typing import Any

# (column header, summary path, format)
RUN_ROWS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("serving mode / executor", ("mode", "executor"), "{} / {}"),
    ("requests", ("requests",), "{:d}"),
    ("hit rate", ("hit_rate",), "{:.3f}"),
    ("compute saved", ("compute_saved",), "{:.3f}"),
    ("hole hits / hole misses", ("hole_hits", "hole_misses"), "{} / {}"),
    ("evicted noises", ("evicted_noises",), "{:d}"),
    ("latency mean (s)", ("latency_s", "mean"), "{:.2f}"),
    ("latency p50 / p95 / p99 (s)", ("latency_s", "p50", "p95", "p99"), "{:.2f} / {:.2f} / {:.2f}"),
    ("queue wait mean (s)", ("queue_wait_s", "mean"), "{:.2f}"),
    ("throughput (req/s)", ("throughput_rps",), "{:.3f}"),
    ("GPU utilisation", ("gpu_utilisation",), "{:.3f}"),
    ("offered load", ("offered_load",), "{:.3f}"),
    ("saturated", ("saturated",), "{}"),
    ("mean relative quality", ("quality_mean",), "{:.4f}"),
    ("mean batch size", ("mean_batch_size",), "{:.2f}"),
)


def _get(summary: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = summary
    for p in path:
        node = node.get(p) if isinstance(node, dict) else None  # absent (e.g. no cost profile) -> n/a
    return node


def _cell(summary: dict[str, Any], path: tuple[str, ...], fmt: str) -> str:
    if len(path) > 2 and isinstance(_get(summary, path[:2]), dict):
        values = [_get(summary, path)]
    elif len(path) > 1 and isinstance(_get(summary, path[:1]), dict):
        values = [_get(summary, (path[0], p)) for p in path[1:]]
    elif len(path) > 1:
        values = [_get(summary, (p,)) for p in path]
    else:
        values = [_get(summary, path)]
    if any(v is None for v in values):
        return "n/a"
    return fmt.format(*values)


def run_markdown(summary: dict[str, Any]) -> str:
    lines = [f"# {summary.get('name', 'run')}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {label} | {_cell(summary, path, fmt)} |" for label, path, fmt in RUN_ROWS]
    for label, bill in (("GPU seconds used, on demand", "on_demand_consumed"),
                        ("GPU seconds used, serverless", "serverless_consumed"), ("whole fleet for the run", "fleet")):
        b = (summary.get("cost") or {}).get(bill)
        if b is not None:
            lines.append(f"| cost: {label}: total / per 1,000 images (USD) | {b['total_usd']:.2f} / "
                         f"{b['usd_per_1000_images']:.4f} |")
    for kind, g in (summary.get("gpus") or {}).items():
        util = "n/a" if g.get("utilisation") is None else f"{g['utilisation']:.3f}"
        lines.append(f"| {kind}: GPUs / requests / utilisation | {g.get('gpus')} / {g.get('requests')} / {util} |")
    hist = summary.get("k_histogram") or {}
    lines += ["", "| K used | requests |", "|---|---|"]
    lines += [f"| {'miss' if k == '0' else k} | {n} |" for k, n in hist.items()]
    return "\n".join(lines) + "\n"


COMPARE = (
    ("hit rate", ("hit_rate",), "{:.3f}"),
    ("compute saved", ("compute_saved",), "{:.3f}"),
    ("latency mean (s)", ("latency_s", "mean"), "{:.2f}"),
    ("latency p99 (s)", ("latency_s", "p99"), "{:.2f}"),
    ("GPU util.", ("gpu_utilisation",), "{:.3f}"),
    ("quality", ("quality_mean",), "{:.4f}"),
    ("saturated", ("saturated",), "{}"),
    ("USD / 1k images (GPU s used)", ("cost", "on_demand_consumed", "usd_per_1000_images"), "{:.3f}"),
    ("USD / 1k images (fleet)", ("cost", "fleet", "usd_per_1000_images"), "{:.3f}"),
)


def experiment_rows(runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: swept values first, then the comparison metrics; one row per run."""
    swept = list(runs[0][0]) if runs else []
    header = swept + [label for label, _, _ in COMPARE]
    rows = []
    for values, summary in runs:
        rows.append([str(values[k]) for k in swept] + [_cell(summary, p, f) for _, p, f in COMPARE])
    return header, rows


def experiment_markdown(name: str, runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    header, rows = experiment_rows(runs)
    lines = [f"# {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                 ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        text = text.replace(a, b) if a != "\\" else text.replace(a, "\0")
    return text.replace("\0", r"\textbackslash{}")


def experiment_latex(name: str, runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """A booktabs table (needs \\usepackage{booktabs}) of the same rows as the Markdown table."""
    header, rows = experiment_rows(runs)
    lines = [f"% {name}: generated by `python -m sim report` from summary.json files",
             r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule",
             " & ".join(_latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(c) for c in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def experiment_csv(runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    import csv
    import io

    header, rows = experiment_rows(runs)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()
