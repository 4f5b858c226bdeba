"""Validation: the sampler and bad input (fast); the command end to end on a tiny random CPU pipeline (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from sim.config import RunConfig, dump_run_config
from sim.experiments.sweep import experiment_from_data
from sim.validate.sample import stratified_sample
from tests.conftest import ROOT, TINY_TRACE

Cli = Callable[..., tuple[int, str, str]]
N, KS = 8, (2, 4, 6)


def _run_config(tmp: Path) -> RunConfig:
    quality = tmp / "quality.yaml"
    quality.write_text(yaml.safe_dump({"kind": "quality", "provenance": {"type": "published", "source": "test",
                                                                          "says": "test"},
                                       "metric": "relative_quality", "by_k": {0: 1.0, 2: 0.97, 4: 0.95, 6: 0.93}}))
    return experiment_from_data({
        "name": "validate-test", "trace": {"path": str(TINY_TRACE), "limit": 200}, "model": {"num_steps": N},
        "cache": {"ks": list(KS), "thresholds": [{"above": 0.9, "k": 6}, {"above": 0.8, "k": 4},
                                                 {"above": 0.65, "k": 2}]},
        "quality": {"profile": str(quality)},
    }).base


def _fake_run(tmp: Path, service_s: list[float | None] | None = None) -> Path:
    """A run folder by hand (no simulation): 6 requests of the tiny trace, misses 0-2, hits of entries 0 and 1."""
    folder = tmp / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text(dump_run_config(_run_config(tmp)))
    ids = pq.read_table(TINY_TRACE).column("request_id").to_pylist()[:6]
    k = [0, 0, 0, 2, 4, 6]
    cols = {"request_id": ids, "arrival_s": [float(i) for i in range(6)], "k_used": k, "k_selected": k,
            "matched_entry": [-1, 0, 1, 0, 1, 0], "admitted_entry": [0, 1, 2, -1, -1, -1], "num_steps": [N] * 6,
            "service_s": service_s or [2.4, 2.4, 2.4, 1.8, 1.2, 0.6], "queue_wait_s": [0.0] * 6,
            "start_s": [float(i) for i in range(6)], "finish_s": [i + 2.4 for i in range(6)],
            "similarity": [float("nan"), 0.3, 0.3, 0.7, 0.85, 0.95], "gpu": [0] * 6, "batch_size": [1] * 6}
    pq.write_table(pa.table({**cols, "service_s": pa.array(cols["service_s"], pa.float64())}),
                   folder / "requests.parquet")
    return folder


def test_overwrite_replaces_only_a_validation_folder(cli: Cli, tmp_path: Path) -> None:
    """--overwrite never deletes a results folder, the run being validated, or a folder validate did not write."""
    run = _fake_run(tmp_path)
    args = ("--model", "tiny", "--device", "cuda", "--overwrite")  # no CUDA here: a refusal is the last check
    kept = {p: p.read_bytes() for p in run.iterdir()}
    for out, named in ((tmp_path, str(run)), (run, str(run))):  # the results folder above it, the run itself
        code, _, err = cli("validate", str(run), "--out", str(out), *args)
        assert code == 2 and err.count("\n") == 1 and "holds an input" in err and named in err, err
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    code, _, err = cli("validate", str(run), "--out", str(other), *args)
    assert code == 2 and "not a folder of" in err and "no readable meta.json" in err
    (other / "meta.json").write_text(json.dumps({"run_dir": str(run)}))
    code, _, err = cli("validate", str(run), "--out", str(other), *args)
    assert code == 2 and "thesis.tex" in err
    assert (other / "thesis.tex").read_text() == "x" and {p: p.read_bytes() for p in run.iterdir()} == kept
    (other / "thesis.tex").unlink()  # now a validation folder: replacing it is allowed (here refused later, no CUDA)
    code, _, err = cli("validate", str(run), "--out", str(other), *args)
    assert code == 2 and "refusing" not in err


def test_sampler_strata_support_and_determinism() -> None:
    # rows:    0  1  2  3  4  5  6  7  8  9 10 11
    k = np.array([0, 0, 5, 0, 10, 5, 0, 25, 10, 5, 0, 5])
    matched = np.array([-1, 0, 0, 0, 1, 2, 1, 3, 2, 9, 3, 1])
    admitted = np.array([0, 1, -1, 2, -1, -1, 3, -1, -1, -1, 4, -1])
    service = np.ones(12)
    service[11] = np.nan  # no latency: never sampled
    service[8] = 0.0  # no GPU time (a served final image): nothing to execute
    picks, orphans = stratified_sample(k, matched, admitted, service, 6, seed=3)
    assert orphans == 1  # row 9 reads entry 9, which no miss of the run admitted
    sampled = [p for p in picks if p.role == "sample"]
    assert len(sampled) == 6
    assert {p.stratum for p in sampled} == {0, 5, 10, 25}  # every K present, and misses
    assert sum(p.stratum == 10 for p in sampled) == 1  # row 4 only: row 8 has no GPU time
    assert not {8, 9, 11} & {p.row for p in picks}
    assert [p.row for p in picks] == sorted(p.row for p in picks)  # arrival order
    rows = {p.row: p for p in picks}
    for p in sampled:
        if p.stratum:  # the miss that admitted its entry is executed too, and before it
            source = int(np.flatnonzero(admitted == matched[p.row])[0])
            assert source in rows and source < p.row
            assert rows[source].role in ("sample", "support")
    assert any(p.role == "support" for p in picks)
    assert stratified_sample(k, matched, admitted, service, 6, seed=3) == (picks, orphans)
    others = {tuple(p.row for p in stratified_sample(k, matched, admitted, service, 6, seed=s)[0]) for s in range(8)}
    assert len(others) > 1  # the seed matters


def test_sampler_spreads_over_strata() -> None:
    k = np.array([0] * 50 + [5] * 3 + [20] * 50)
    matched = np.where(k > 0, 0, -1)
    admitted = np.where(np.arange(len(k)) == 0, 0, -1)
    picks, _ = stratified_sample(k, matched, admitted, np.ones(len(k)), 12, seed=0)
    counts = {s: sum(p.stratum == s and p.role == "sample" for p in picks) for s in (0, 5, 20)}
    assert counts == {0: 5, 5: 3, 20: 4}  # 4 each; K=5 has only 3, its spare slot goes to the first open stratum


def test_diff_table_on_made_up_rows() -> None:
    from sim.validate.report import diff_table, target_check

    def row(k: int, measured_step: float, role: str = "sample") -> dict:
        steps = N - k
        return {"role": role, "k_used": k, "text_encoder_s": 0.01, "sim_text_encoder_s": 0.01,
                "step_s": [measured_step] * steps, "sim_step_s": 0.1, "vae_decode_s": 0.02, "sim_vae_decode_s": 0.02,
                "fetch_s": 0.001 if k else 0.0, "sim_fetch_s": 0.002 if k else 0.0,
                "service_s": 0.03 + steps * measured_step, "sim_service_s": 0.03 + steps * 0.1}

    rows = [row(0, 0.1)] * 8 + [row(4, 0.125)] * 3 + [row(0, 9.9, role="support")]
    table = {(r["bucket"], r["component"], r["stat"]): r for r in diff_table(rows)}
    assert table["miss", "step", "mean"]["diff_pct"] == pytest.approx(0.0)  # supports are not compared
    assert table["K=4", "step", "p50"]["diff_pct"] == pytest.approx(-20.0)  # 0.1 simulated vs 0.125 measured
    assert table["K=4", "fetch", "mean"]["diff_pct"] == pytest.approx(100.0)
    assert ("miss", "fetch", "mean") not in table  # a miss fetches nothing
    assert table["K=4", "service", "mean"]["flag"] == "< 8 samples" and table["miss", "step", "p99"]["flag"] == ""
    assert table["all", "step", "mean"]["values"] == 8 * N + 3 * (N - 4)
    missed = target_check(list(table.values()))
    assert missed and all(m.startswith("all ") for m in missed)  # K=4 is flagged, the miss bucket is exact


def test_bad_input_is_one_line(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("validate", str(tmp_path / "nope"), "--model", "tiny", "--device", "cpu")
    assert code == 2 and err.count("\n") == 1 and "no such run folder" in err

    run = _fake_run(tmp_path)
    code, _, err = cli("validate", str(run), "--model", str(tmp_path / "missing"), "--device", "cpu")
    assert code == 2 and err.count("\n") == 1 and "neither a known architecture" in err
    not_diffusers = tmp_path / "not-a-pipeline"
    not_diffusers.mkdir()
    code, _, err = cli("validate", str(run), "--model", str(not_diffusers), "--device", "cpu")
    assert code == 2 and err.count("\n") == 1 and "model_index.json" in err

    (run / "requests.parquet").unlink()
    code, _, err = cli("validate", str(run), "--model", "tiny", "--device", "cpu")
    assert code == 2 and err.count("\n") == 1 and "no requests to sample" in err


def test_run_without_latencies_is_refused(cli: Cli, tmp_path: Path) -> None:
    run = _fake_run(tmp_path, service_s=[None] * 6)
    code, _, err = cli("validate", str(run), "--model", "tiny", "--device", "cpu")
    assert code == 2 and err.count("\n") == 1 and "no latencies" in err


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sim.experiments.runner import write_run

    tmp = tmp_path_factory.mktemp("validate")
    write_run(_run_config(tmp), tmp / "run")
    return tmp / "run"


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "measured.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_validate_end_to_end_on_cpu(cli: Cli, small_run: Path, tmp_path: Path) -> None:
    import torch

    from sim.hardware.profiles import load_latency_table
    from sim.profiling import pipelines as P

    clip = P.save_tiny_clip_scorer(tmp_path / "clip")
    out, latents = tmp_path / "val", tmp_path / "latents"
    code, _, err = cli("validate", str(small_run), "--sample", "8", "--model", "tiny", "--device", "cpu",
                            "--resolution", "32", "--tier", "files", "--latent-dir", str(latents), "--out", str(out),
                            "--clip-model", str(clip), "--seed", "1")
    assert code == 0, err
    for name in ("validation.md", "validation.csv", "validation.png", "validation.parquet", "meta.json",
                 "profile-correction.yaml", "quality-profile.yaml"):
        assert (out / name).is_file(), name
    rows = _rows(out)
    sampled = [r for r in rows if r["role"] == "sample"]
    assert len(sampled) == 8 and {r["k_used"] for r in sampled} == {0, *KS}
    records = pq.read_table(small_run / "requests.parquet").to_pylist()
    by_id = {r["request_id"]: r for r in records}
    for r in rows:  # the simulator's own record columns beside the measured ones
        assert r["sim_service_s"] == by_id[r["request_id"]]["service_s"]
        assert r["sim_k_used"] == r["k_used"] == by_id[r["request_id"]]["k_used"]

    for r in rows:  # a support miss runs only up to the largest K its sampled hits read, and is not decoded
        if r["role"] == "support":
            ks_read = [h["k_used"] for h in sampled if h["reads_entry"] == r["creates_entry"]]
            assert r["partial"] and r["steps_run"] == max(ks_read) and r["service_s"] is None
            assert set(r["stored_sha1"]) == {str(k) for k in KS if k <= max(ks_read)}
        else:
            assert not r["partial"] and r["steps_run"] == N - r["k_used"]
    assert any(r["role"] == "support" for r in rows)

    pipe = P.load("tiny", torch.device("cpu"), torch.float32).pipe
    schedule = P.make_scheduler(pipe, "ddim", N).timesteps  # the run's model.sampler
    misses = {r["creates_entry"]: r for r in rows if r["k_used"] == 0}
    hits = [r for r in rows if r["k_used"] > 0]
    assert hits
    for hit in hits:
        k = hit["k_used"]
        assert hit["first_step_index"] == k and hit["steps_run"] == N - k == len(hit["step_s"])
        assert hit["timesteps"][0] == float(schedule[k]) != float(schedule[0])
        assert hit["timesteps"] == [float(t) for t in schedule[k:]]
        miss = misses[hit["reads_entry"]]  # the miss that admitted the entry ran first and kept that latent
        assert miss["row"] < hit["row"] and hit["loaded_sha1"] == miss["stored_sha1"][str(k)]

    # The stored latent at K is bitwise the miss's latent after K steps, recomputed here on its own.
    miss = misses[hits[0]["reads_entry"]]
    k = hits[0]["k_used"]
    with torch.inference_mode():
        sched = P.make_scheduler(pipe, "ddim", N)
        cond = P.encode(pipe, P.tokenize(pipe, [miss["prompt"]]), P.tokenize(pipe, [""]), 32, 32)
        start = P.initial_latents(pipe, sched, 1, 32, 32, 1 * 1_000_003 + miss["row"])
        after_k, _ = P.denoise(pipe, sched, start, cond, stop=k)
        after_k1, _ = P.denoise(pipe, P.make_scheduler(pipe, "ddim", N), start, cond, stop=k + 1)
    stored = torch.load(latents / f"entry{miss['creates_entry']}-k{k}.pt", weights_only=True)
    assert torch.equal(stored, after_k) and not torch.equal(stored, after_k1)

    table = load_latency_table(str(out / "profile-correction.yaml"), "tiny", "cpu", 32, 32)
    assert table.at(1).step_s > 0
    quality = yaml.safe_load((out / "quality-profile.yaml").read_text())
    assert set(quality["by_k"]) == {0, *KS} and quality["by_k"][0] == 1.0
    assert all((r["clip_score"] is None) == r["partial"] for r in rows)
    for k in KS:  # hit / the same prompt from scratch, per K
        ratios = [h["clip_score"] / h["clip_score_scratch"] for h in hits if h["k_used"] == k]
        assert quality["by_k"][k] == pytest.approx(np.mean(ratios), rel=1e-5)
    csv_rows = (out / "validation.csv").read_text().splitlines()
    assert csv_rows[0].startswith("bucket,component,stat") and any(r.startswith("K=2,service,p99") for r in csv_rows)
    assert "Diff%" in (out / "validation.md").read_text()
    assert json.loads((out / "meta.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_interrupted_validation_keeps_what_ran(cli: Cli, small_run: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.validate.gpu import GpuExecutor

    real = GpuExecutor.run
    calls = []

    def stop_on_third(self: GpuExecutor, job: object) -> dict:
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, job)  # type: ignore[arg-type]

    import torch

    from sim.profiling import pipelines as P

    weights = tmp_path / "tiny-pipeline"  # real weights from a folder: the --weights path
    P.load("tiny", torch.device("cpu"), torch.float32).pipe.save_pretrained(weights)
    monkeypatch.setattr(GpuExecutor, "run", stop_on_third)
    out = tmp_path / "val"
    code, _, err = cli("validate", str(small_run), "--sample", "6", "--model", "tiny", "--weights", str(weights),
                       "--device", "cpu", "--resolution", "32", "--out", str(out), "--warmup", "0")
    assert code == 130 and "measured so far" in err
    assert len(_rows(out)) == 2
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["ran"]["weights"] == "real" and meta["ran_model"] == "tiny"
    assert "interrupted" in (out / "validation.md").read_text() and (out / "validation.csv").is_file()

    code, _, err = cli("validate", str(small_run), "--model", "tiny", "--device", "cuda", "--out", str(out),
                       "--overwrite")
    assert code == 2 and err.count("\n") == 1 and "no CUDA device" in err
    assert len(_rows(out)) == 2  # a refused rerun leaves the earlier measurements alone


@pytest.mark.slow
def test_sdxl_layout_resumes_with_euler(cli: Cli, small_run: Path, tmp_path: Path) -> None:
    """The SDXL path (two encoders, pooled embeds and time ids) with Euler, whose step index begins at K."""
    out = tmp_path / "val"
    code, _, err = cli("validate", str(small_run), "--sample", "4", "--model", "tiny-xl", "--device", "cpu",
                       "--resolution", "32", "--scheduler", "euler", "--tier", "device", "--out", str(out),
                       "--warmup", "0", "--no-guidance")
    assert code == 0, err
    rows = _rows(out)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["ran"]["scheduler"] == "EulerDiscreteScheduler"
    assert meta["ran"]["pipeline"] == "StableDiffusionXLPipeline"
    hits = [r for r in rows if r["k_used"] > 0]
    assert hits and all(r["first_step_index"] == r["k_used"] and r["steps_run"] == N - r["k_used"] for r in hits)
    stored = {r["creates_entry"]: r["stored_sha1"] for r in rows if r["k_used"] == 0}
    assert all(r["loaded_sha1"] == stored[r["reads_entry"]][str(r["k_used"])] for r in hits)


@pytest.mark.slow
def test_gpu_validation_script_rehearsal_on_cpu(tmp_path: Path) -> None:
    """benchmarks/gpu/validate.sh with its CPU switch: profiles, simulation, validation and packing all run."""
    env = {**os.environ, "CPU": "1", "SAMPLE_CPU": "4", "LIMIT": "400", "WHEELS": str(tmp_path / "no-wheels"),
           "DEST": str(tmp_path / "dest"), "WORK": str(tmp_path / "work"), "PY": sys.executable}
    run = subprocess.run(["bash", "benchmarks/gpu/validate.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    names = {p.name for p in (tmp_path / "dest").iterdir()}
    assert names == {"tiny-32-cpu-random-measured.yaml", "tiny-xl-32-cpu-random-measured.yaml", "validation.md",
                     "validation.csv", "validation.png", "validation.tar.gz"}
    meta = json.loads((tmp_path / "work" / "sim" / "run" / "validation" / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["ran"]["scheduler"] == "DDIMScheduler"
