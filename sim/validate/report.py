"""Validation report from a validation folder: Diff% per component, percentile and K bucket; profile corrections."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sim.errors import InputError
from sim.figsave import save_figure
from sim.fileio import atomic_path, write_text_atomic
from sim.validate.sample import stratum_label

STATS = ("mean", "p50", "p90", "p99")
# (component, measured key, simulated key); step is per denoising step, every step one sample.
COMPONENTS = (("text_encoder", "text_encoder_s", "sim_text_encoder_s"), ("step", "step_s", "sim_step_s"),
              ("vae_decode", "vae_decode_s", "sim_vae_decode_s"), ("fetch", "fetch_s", "sim_fetch_s"),
              ("service", "service_s", "sim_service_s"))
MIN_BUCKET = 8  # buckets with fewer sampled requests are flagged: their percentiles mean little
# Targets (issue 13): |Diff%| <= 5 at mean and p50, <= 10 at p99, for service and step, buckets of >= 8.
TARGETS = {"mean": 5.0, "p50": 5.0, "p99": 10.0}
# Provenance fields compared between the latency profile and what ran.
VERSION_KEYS = ("gpu", "driver", "cuda", "torch", "diffusers", "transformers", "dtype", "vae_dtype", "attention",
                "scheduler", "weights", "pipeline")


#: every file a validation folder holds (cli.validate and write_report write nothing else)
FILES = ("meta.json", "measured.jsonl", "validation.md", "validation.csv", "validation.parquet", "validation.png",
         "profile-correction.yaml", "quality-profile.yaml")


def foreign_entry(folder: Path) -> str | None:
    """What in ``folder`` shows it is not a validation folder (None when it is one): `--overwrite` may only
    replace a folder `validate` wrote, never a results folder, a run or anything else."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return "no readable meta.json written by `python -m sim validate`"
    if not isinstance(meta, dict) or "run_dir" not in meta:
        return "its meta.json was not written by `python -m sim validate`"
    for entry in sorted(folder.iterdir()):
        if entry.name not in FILES and not (entry.name.startswith(".") and "-partial" in entry.name):
            return f"it holds {entry.name}{'/' if entry.is_dir() else ''}, which validate never writes"
    return None


def read_measured(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    meta_file, rows_file = folder / "meta.json", folder / "measured.jsonl"
    if not meta_file.is_file():
        raise InputError(f"{meta_file}: not found (a folder written by `python -m sim validate`)")
    meta = json.loads(meta_file.read_text())
    rows = []
    if rows_file.is_file():
        for line in rows_file.read_text().splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut short by an interruption: everything before it stands
    return meta, rows


def _stat(values: np.ndarray, stat: str) -> float:
    return float(values.mean()) if stat == "mean" else float(np.percentile(values, int(stat[1:])))


def _diff(sim: float, measured: float) -> float | None:
    return 100.0 * (sim - measured) / measured if measured > 0 else None


def _values(rows: Sequence[dict[str, Any]], measured_key: str, sim_key: str) -> tuple[np.ndarray, np.ndarray]:
    meas: list[float] = []
    sim: list[float] = []
    for r in rows:
        m, s = r.get(measured_key), r.get(sim_key)
        if m is None or s is None or (isinstance(s, float) and math.isnan(s)):
            continue
        if measured_key == "step_s":  # one simulated per-step figure per request, repeated for each step run
            meas += m
            sim += [s] * len(m)
        elif measured_key == "fetch_s" and r["k_used"] == 0:
            continue  # a miss fetches nothing
        else:
            meas.append(m)
            sim.append(s)
    return np.asarray(meas, float), np.asarray(sim, float)


def diff_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (K bucket, component, statistic): simulated, measured, signed and absolute Diff%."""
    sampled = [r for r in rows if r["role"] == "sample"]
    buckets: list[tuple[str, list[dict[str, Any]]]] = [("all", sampled)]
    for k in sorted({r["k_used"] for r in sampled}):
        buckets.append((stratum_label(k), [r for r in sampled if r["k_used"] == k]))
    table = []
    for name, members in buckets:
        for comp, mkey, skey in COMPONENTS:
            meas, sim = _values(members, mkey, skey)
            if not len(meas):
                continue
            for stat in STATS:
                s, m = _stat(sim, stat), _stat(meas, stat)
                d = _diff(s, m)
                table.append({"bucket": name, "component": comp, "stat": stat, "requests": len(members),
                              "values": len(meas), "simulated_s": s, "measured_s": m, "diff_pct": d,
                              "abs_diff_pct": None if d is None else abs(d),
                              "flag": f"< {MIN_BUCKET} samples" if len(members) < MIN_BUCKET else ""})
    return table


def target_check(table: Sequence[dict[str, Any]]) -> list[str]:
    """Lines saying which (bucket, component, stat) of service and step miss issue 13's targets."""
    misses = []
    for row in table:
        limit = TARGETS.get(row["stat"])
        if limit is None or row["component"] not in ("service", "step") or row["flag"]:
            continue
        if row["abs_diff_pct"] is None or row["abs_diff_pct"] > limit:
            misses.append(f"{row['bucket']} {row['component']} {row['stat']}: "
                          f"{_pct(row['diff_pct'])} (target |Diff%| <= {limit:g})")
    return misses


def profile_correction(meta: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The measured figures as a latency profile (batch 1, one entry per resolution run), with provenance."""
    ran = dict(meta["ran"])
    entries = []
    for width, height in sorted({(r["width"], r["height"]) for r in rows}):
        rs = [r for r in rows if (r["width"], r["height"]) == (width, height)]
        steps = np.asarray([s for r in rs for s in r["step_s"]], float)
        entries.append({
            "model": meta.get("ran_model", meta["model_name"]), "gpu": ran.get("gpu_slug", "gpu"),
            "width": width, "height": height,
            "batch": 1, "step_s": _g(steps.mean()), "step_p50_s": _g(np.percentile(steps, 50)),
            "step_p99_s": _g(np.percentile(steps, 99)),
            "text_encoder_s": _g(np.mean([r["text_encoder_s"] for r in rs])),
            "vae_decode_s": _g(np.mean([r["vae_decode_s"] for r in rs if r["vae_decode_s"] is not None])),
            "step_samples": int(steps.size),
        })
    ran["method"] = ("suggested correction from `python -m sim validate`: means over the sampled requests "
                     "(support misses stop early) at batch 1; " + str(ran.get("method", "")))
    return {"kind": "latency", "provenance": ran, "entries": entries}


def quality_profile(meta: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The measured quality-vs-K curve as a quality profile: per K, the mean over sampled hits of CLIP score of the
    hit / CLIP score of the same prompt generated from scratch (K = 0 is 1 by definition); None without scores."""
    paired: dict[int, list[float]] = {0: []}
    scores: dict[int, list[float]] = {}
    for r in rows:
        if r.get("clip_score") is None:
            continue
        k = int(r["k_used"])
        scores.setdefault(k, []).append(float(r["clip_score"]))
        if k == 0:
            paired[0].append(1.0)
        elif r.get("clip_score_scratch") and r["clip_score_scratch"] > 0:
            paired.setdefault(k, []).append(float(r["clip_score"]) / float(r["clip_score_scratch"]))
    if len(paired) < 2:
        return None
    ran = dict(meta["ran"])
    ran["method"] = ("CLIP score (max(100 cos, 0)) of each image against its own prompt; by_k = mean over sampled "
                     "hits at K of (score of the hit resumed from the cached latent) / (score of the same prompt "
                     "from scratch, same seed as a miss would use); " + str(ran.get("method", "")))
    return {"kind": "quality", "provenance": ran, "metric": "relative_clip_score",
            "by_k": {k: _g(float(np.mean(v))) if v else 1.0 for k, v in sorted(paired.items())},
            "samples": {k: len(v) for k, v in sorted(paired.items()) if k > 0},
            "clip_score_mean": {k: _g(float(np.mean(v))) for k, v in sorted(scores.items())}}


def _g(x: float) -> float:
    return float(f"{float(x):.6g}")


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.1f}%"


def _versions(meta: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    ran = meta["ran"]
    out = []
    for path, prov in meta["profiles"].items():
        for key in VERSION_KEYS:
            a = prov.get(key, (prov.get("versions") or {}).get(key))
            b = ran.get(key, (ran.get("versions") or {}).get(key))
            if a is None and prov.get("type") == "published":
                a = f"published ({str(prov.get('source', ''))[:60]})" if key == "gpu" else "-"
            out.append((Path(path).name, key, str(a), str(b)))
    return out


def write_report(folder: Path) -> Path:
    """validation.md, validation.csv, validation.parquet, validation.png and the suggested profiles, from files."""
    meta, rows = read_measured(folder)
    table = diff_table(rows)
    _write_csv(folder / "validation.csv", table)
    _write_parquet(folder / "validation.parquet", rows)
    full = [r for r in rows if not r.get("partial")]  # support misses stopped early have no decode or service
    if full:
        correction = profile_correction(meta, full)
        write_text_atomic(folder / "profile-correction.yaml", yaml.safe_dump(correction, sort_keys=False, width=110))
        quality = quality_profile(meta, full)
        if quality is not None:
            write_text_atomic(folder / "quality-profile.yaml", yaml.safe_dump(quality, sort_keys=False, width=110))
        _plot(folder / "validation.png", full, table)
    write_text_atomic(folder / "validation.md", _markdown(meta, rows, table))
    return folder / "validation.md"


def _write_csv(path: Path, table: Sequence[dict[str, Any]]) -> None:
    fields = ["bucket", "component", "stat", "requests", "values", "simulated_s", "measured_s", "diff_pct",
              "abs_diff_pct", "flag"]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for row in table:
            w.writerow({k: (_g(v) if isinstance(v, float) else v) for k, v in row.items()})


def _write_parquet(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        return
    flat = [{**r, "stored_sha1": json.dumps(r.get("stored_sha1") or {})} for r in rows]
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(flat), tmp)


def _plot(path: Path, rows: Sequence[dict[str, Any]], table: Sequence[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    ks = sorted({r["k_used"] for r in rows})
    for k in ks:
        rs = [r for r in rows if r["k_used"] == k and r["role"] == "sample"]
        left.scatter([r["service_s"] for r in rs],
                     [r["sim_service_s"] for r in rs], s=14, label=stratum_label(k))
    lim = max([r["service_s"] for r in rows] + [r["sim_service_s"] for r in rows]) * 1.05
    left.plot([0, lim], [0, lim], color="grey", lw=0.8)
    left.set(xlabel="measured service (s)", ylabel="simulated service (s)", title="per sampled request")
    left.legend(fontsize=7)
    comps = ("text_encoder", "step", "vae_decode", "service")
    buckets = list(dict.fromkeys(r["bucket"] for r in table))
    width = 0.8 / len(comps)
    for j, comp in enumerate(comps):
        vals = [next((r["diff_pct"] for r in table if r["bucket"] == b and r["component"] == comp
                      and r["stat"] == "mean"), None) for b in buckets]
        left_edge = [i + (j - len(comps) / 2 + 0.5) * width for i in range(len(buckets))]
        right.bar(left_edge, [0.0 if v is None else v for v in vals], width, label=comp)
    right.axhline(0, color="grey", lw=0.8)
    right.set_xticks(range(len(buckets)), buckets, fontsize=8)
    right.set(ylabel="Diff% at mean (simulated vs measured)", title="per K bucket and component")
    right.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _markdown(meta: dict[str, Any], rows: Sequence[dict[str, Any]], table: Sequence[dict[str, Any]]) -> str:
    ran = meta["ran"]
    sampled = [r for r in rows if r["role"] == "sample"]
    full = [r for r in rows if not r.get("partial")]
    plan = ", ".join(f"{k} {v}" for k, v in meta["plan"].items())
    lines = [f"# Validation of {meta['run_dir']}", "",
             f"Status: **{meta['status']}**; executed {len(rows)} of {meta['planned']} planned requests "
             f"({len(sampled)} sampled, {len(rows) - len(sampled)} support misses; asked for "
             f"{meta['requested_sample']}, seed {meta['seed']}). Plan: {plan}.",
             f"Hits left out because their cached entry's miss is not in the run: {meta['hits_without_their_miss']}.",
             "", f"Ran: {ran.get('gpu')} ({ran.get('hardware')}), {ran.get('dtype')}, {ran.get('pipeline')} "
             f"({ran.get('weights')} weights), scheduler {ran.get('scheduler')}, steps {ran.get('steps')}, "
             f"latent tier {ran.get('tier')}.", f"Command: `{ran.get('command')}`", "",
             "Diff% = (simulated - measured) / measured; positive: the simulator charges more than ran. "
             f"Step: every denoising step one sample. Buckets with fewer than {MIN_BUCKET} requests are flagged.", ""]
    if meta.get("sim_max_batch", 1) > 1:
        lines += [f"Note: the run batched up to {meta['sim_max_batch']} requests; validation runs batch 1, and the "
                  "simulated components are the profile's at each request's batch size.", ""]
    if not any(r["role"] == "sample" for r in rows):
        return "\n".join([*lines, "No sampled request was measured.", ""])
    lines += ["## Service time and step time per K bucket", "",
              "| bucket | component | n | " + " | ".join(f"{s} sim / measured (Diff%)" for s in STATS) + " | flag |",
              "|---|---|---|" + "---|" * len(STATS) + "---|"]
    by = {(r["bucket"], r["component"], r["stat"]): r for r in table}
    for bucket in dict.fromkeys(r["bucket"] for r in table):
        for comp, _, _ in COMPONENTS:
            if (bucket, comp, "mean") not in by or (bucket != "all" and comp not in ("service", "step")):
                continue
            cells = [by[bucket, comp, s] for s in STATS]
            lines.append(f"| {bucket} | {comp} | {cells[0]['requests']} | " + " | ".join(
                f"{c['simulated_s']:.4g} / {c['measured_s']:.4g} ({_pct(c['diff_pct'])})" for c in cells)
                + f" | {cells[0]['flag']} |")
    missing = target_check(table)
    lines += ["", "## Targets (|Diff%| <= 5 at mean and p50, <= 10 at p99; service and step; buckets of >= 8)", ""]
    lines += [f"- missed: {m}" for m in missing] or ["- all met"]
    lines += ["", "## Versions: latency profile vs what ran", "", "| profile | field | profile | ran | same |",
              "|---|---|---|---|---|"]
    lines += [f"| {p} | {k} | {a} | {b} | {'yes' if a == b else '**no**'} |" for p, k, a, b in _versions(meta)]
    lines += ["", "## Suggested profile correction (`profile-correction.yaml`, measured provenance)", ""]
    if meta.get("ran_model", meta["model_name"]) != meta["model_name"]:
        lines += [f"The run simulated `{meta['model_name']}` but `{meta['ran_model']}` ran: these entries describe "
                  "what ran and do not replace the run's profile.", ""]
    lines += ["```yaml",
              yaml.safe_dump({"entries": profile_correction(meta, full)["entries"]}, sort_keys=False).strip(), "```"]
    quality = quality_profile(meta, full)
    if quality is not None:
        lines += ["", "## CLIP score per K (`quality-profile.yaml`)", "",
                  "| K | hits | hit / same prompt from scratch | mean CLIP score |", "|---|---|---|---|"]
        lines += [f"| {k} | {quality['samples'].get(k, '-')} | {v:.4f} | {quality['clip_score_mean'].get(k, '-')} |"
                  for k, v in quality["by_k"].items()]
    hits = [r for r in rows if r["k_used"] > 0]
    if hits:
        lines += ["", "## Resumed hits", "",
                  f"{len(hits)} hits resumed from their entry's latent at K: first executed step index = K for "
                  f"{sum(r['first_step_index'] == r['k_used'] for r in hits)}, N - K steps run for "
                  f"{sum(r['steps_run'] == r['num_steps'] - r['k_used'] for r in hits)}."]
    return "\n".join([*lines, ""])
