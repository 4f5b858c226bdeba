"""`python -m sim validate RUN_DIR`: execute a stratified sample of a simulated run for real and report Diff%."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sim.errors import ConfigError, InputError
from sim.fileio import check_output_dir, check_replaceable
from sim.schema import INT_LIMIT
from sim.validate.report import foreign_entry
from sim.validate.rundir import SIM_COLUMNS, RunFolder, profile_provenances, read_run
from sim.validate.sample import Pick, stratified_sample

TINY = ("tiny", "tiny-xl")  # test architectures: run at their native size, not the run's 1024²
#: bounds of the numeric flags (far above any real validation: a typo is an error, not an hour-long run)
MAX_SAMPLE = 100_000
MAX_WARMUP = 100
MAX_GUIDANCE = 100.0


def _check_model(model: str, weights: str) -> str:
    """The source to load (architecture name or folder), checked before torch is imported."""
    from sim.profiling.pipelines import ARCHITECTURES

    if weights != "random":
        if model not in ARCHITECTURES and Path(model).resolve() != Path(weights).resolve():
            raise ConfigError(f"--weights {weights}: give --model as an architecture name ({', '.join(ARCHITECTURES)}) "
                              "or the same folder")
        source = weights
    else:
        source = model
    if source in ARCHITECTURES:
        return source
    folder = Path(source)
    flag = "--weights" if weights != "random" else "--model"
    if not folder.is_dir():
        raise InputError(f"{flag}: {source!r} is neither a known architecture ({', '.join(ARCHITECTURES)}) "
                         "nor an existing model folder")
    if not (folder / "model_index.json").is_file():
        raise InputError(f"{flag} {folder}: no model_index.json (not a diffusers pipeline folder)")
    return source


def _jobs(run: RunFolder, picks: list[Pick], resolution: tuple[int, int] | None, native: int | None,
          seed: int) -> list[Any]:
    from sim.validate.gpu import Job

    rec = run.records
    needed: dict[int, int] = {}  # entry -> largest K a sampled hit reads from it
    for p in picks:
        if p.stratum > 0:
            entry = int(rec["matched_entry"][p.row])
            needed[entry] = max(needed.get(entry, 0), p.stratum)
    jobs = []
    for p in picks:
        r = p.row
        k = int(rec["k_used"][r])
        if resolution is not None:
            width, height = resolution
        elif native is not None:
            width = height = native
        else:
            width, height = int(run.widths[r]), int(run.heights[r])
        jobs.append(Job(r, str(rec["request_id"][r]), run.prompts[r], int(rec["num_steps"][r]), k,
                        int(rec["matched_entry"][r]) if k > 0 else -1,
                        int(rec["admitted_entry"][r]) if k == 0 else -1, width, height, seed * 1_000_003 + r,
                        needed[int(rec["admitted_entry"][r])] if p.role == "support" else None))
    return jobs


def _sim_row(run: RunFolder, r: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in SIM_COLUMNS:
        if name in run.records:
            v = run.records[name][r]
            out[f"sim_{name}"] = v.item() if hasattr(v, "item") else v
    comp = run.sim_components(r)
    out.update(sim_text_encoder_s=comp.text_encoder_s, sim_step_s=comp.step_s, sim_vae_decode_s=comp.vae_decode_s)
    return out


def _command(a: argparse.Namespace) -> str:
    parts = ["python -m sim validate", str(a.run_dir), f"--sample {a.sample}", f"--model {a.model}",
             f"--device {a.device}", f"--weights {a.weights}", f"--seed {a.seed}", f"--tier {a.tier}",
             f"--scheduler {a.scheduler}"]
    for flag, value in (("--dtype", a.dtype), ("--resolution", a.resolution), ("--clip-model", a.clip_model),
                        ("--out", a.out)):
        if value:
            parts.append(f"{flag} {value}")
    if not a.guidance:
        parts.append("--no-guidance")
    return " ".join(parts)


def _check_flags(a: argparse.Namespace) -> None:
    """The numeric and choice flags, before any file is read."""
    from sim.validate.gpu import TIERS

    if not 1 <= a.sample <= MAX_SAMPLE:
        raise ConfigError(f"--sample: expected an integer in 1..{MAX_SAMPLE:,}, got {a.sample}")
    if not 0 <= a.seed <= INT_LIMIT:
        raise ConfigError(f"--seed: expected an integer in 0..2**63 - 1, got {a.seed}")
    if not 0 <= a.warmup <= MAX_WARMUP:
        raise ConfigError(f"--warmup: expected an integer in 0..{MAX_WARMUP}, got {a.warmup}")
    if not (math.isfinite(a.guidance_scale) and 0 <= a.guidance_scale <= MAX_GUIDANCE):
        raise ConfigError(f"--guidance-scale: expected a number in 0..{MAX_GUIDANCE:g}, got {a.guidance_scale}")
    if a.tier not in TIERS:
        raise ConfigError(f"--tier: expected one of {', '.join(TIERS)}, got {a.tier!r}")


def _check_inputs(a: argparse.Namespace) -> tuple[RunFolder, tuple[int, int] | None, str, Path]:
    """(run, resolution, model source, output folder): every input checked, nothing written yet."""
    from sim.profiling.latency import parse_resolution

    _check_flags(a)
    run = read_run(Path(a.run_dir))
    if run.config.run.executor != "engine":
        raise InputError(f"{run.folder}: an untimed run (run.executor: {run.config.run.executor}) has no times to "
                         "validate; validate a run of the timed engine")
    resolution = parse_resolution(a.resolution) if a.resolution else None
    source = _check_model(a.model, a.weights)
    if a.clip_model and not Path(a.clip_model).is_dir():
        raise InputError(f"--clip-model: {a.clip_model} is not a folder (a CLIPModel + CLIPProcessor folder)")
    out = Path(a.out) if a.out else run.folder / "validation"
    check_output_dir(out)
    if out.exists() and any(out.iterdir()):
        if not a.overwrite:
            raise ConfigError(f"--out {out}: exists and is not empty; pass --overwrite to replace it")
        check_replaceable(out, [run.folder], foreign_entry, "`python -m sim validate` output")
    return run, resolution, source, out


def validate(a: argparse.Namespace, log: Callable[[str], object] = print) -> tuple[Path, str]:
    """Sample, execute and report; returns (output folder, status: complete | interrupted)."""
    from sim.validate.report import write_report

    run, resolution, source, out = _check_inputs(a)
    picks, orphans = stratified_sample(run.records["k_used"], run.records["matched_entry"],
                                       run.records["admitted_entry"], run.records["service_s"], a.sample, a.seed)

    import torch

    from sim.profiling import pipelines as P
    from sim.profiling.latency import gpu_slug, measured_provenance
    from sim.validate.gpu import GpuExecutor, LatentTier

    device = P.torch_device(a.device)
    dtype = P.torch_dtype(a.dtype, device)
    if out.exists():
        shutil.rmtree(out)  # only once every input is known good
    loaded = P.load(source, device, dtype)
    if a.model in P.ARCHITECTURES and loaded.model != a.model:
        loaded.model = a.model  # real weights of a named architecture keep the architecture's name
    log(f"loaded {loaded.model} ({loaded.weights} weights) on {device} as {dtype} in {loaded.load_s:.2f} s")
    native = P.native_resolution(loaded.pipe) if source in TINY and resolution is None else None
    jobs = _jobs(run, picks, resolution, native, a.seed)
    scorer = None
    if a.clip_model:
        from sim.profiling.quality import Scorer

        scorer = Scorer("clip_score", a.clip_model, None, "--clip-model", device)

    out.mkdir(parents=True, exist_ok=True)
    scratch = None
    if a.tier == "files" and not a.latent_dir:
        scratch = tempfile.mkdtemp(prefix="validate-latents-")
    latent_dir = a.latent_dir or scratch
    tier = LatentTier(a.tier, device, Path(latent_dir) if a.tier == "files" and latent_dir else None)
    scheduler = a.scheduler
    if scheduler == "run":  # the sampler the run simulated, when this loop has it; else the pipeline's own
        scheduler = run.config.model.sampler if run.config.model.sampler in P.SCHEDULERS else "default"
    executor = GpuExecutor(loaded, tier, run.config.cache.ks, scheduler=scheduler, guidance=a.guidance,
                           guidance_scale=a.guidance_scale, scorer=scorer)
    steps = sorted({j.num_steps for j in jobs})
    provenance = measured_provenance(
        _command(a), loaded,
        "each sampled request executed alone (batch 1) in arrival order, after its cached entry's miss (a support "
        "miss, not itself sampled, runs only up to the largest K its sampled hits read, without decode): text "
        "encoder, latent fetch (hits: from the tier, synchronised wall clock), each denoising step (UNet on the "
        "guidance-doubled batch, guidance mix, scheduler step), VAE decode; "
        + ("CUDA events on the default stream" if device.type == "cuda" else "time.perf_counter with synchronisation")
        + f"; {a.warmup} untimed warm-up generation(s) first",
        scheduler=executor.scheduler_class(steps[0]), scheduler_choice=f"{a.scheduler} -> {scheduler}", steps=steps,
        guidance={"enabled": a.guidance, "scale": a.guidance_scale}, tier=a.tier,
        gpu_slug=gpu_slug(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu",
    )
    if loaded.weights == "random" and loaded.model in P.ARCHITECTURES:
        provenance["architecture_source"] = P.ARCHITECTURES[loaded.model].source
    counts: dict[str, int] = {}
    for p in picks:
        key = f"{'miss' if p.stratum == 0 else f'K={p.stratum}'} ({p.role})"
        counts[key] = counts.get(key, 0) + 1
    meta: dict[str, Any] = {
        "run_dir": str(run.folder), "run_name": run.config.name, "model_name": run.config.model.name,
        "ran_model": loaded.model,
        "requested_sample": a.sample, "planned": len(jobs), "plan": counts, "hits_without_their_miss": orphans,
        "seed": a.seed, "status": "running", "started": _now(), "ran": provenance,
        "profiles": profile_provenances(run),
        "pools": sorted({f"{g} <- {p}" for g, p in run.pools}),
        "sim_max_batch": int(max(run.records.get("batch_size", [1]))),
    }
    _write_meta(out, meta)
    status = "complete"
    try:
        for _ in range(a.warmup):
            executor.warmup(jobs[0].width, jobs[0].height, jobs[0].num_steps)
        with (out / "measured.jsonl").open("a") as fh:
            for i, (pick, job) in enumerate(zip(picks, jobs, strict=True)):
                try:
                    m = executor.run(job)
                except torch.cuda.OutOfMemoryError:
                    raise InputError(f"request {job.request_id}: out of GPU memory at batch 1, {job.width}x"
                                     f"{job.height}, {loaded.model} {dtype} (the {i} requests before it are "
                                     f"reported in {out})") from None
                if scorer is not None and job.k_used > 0 and pick.role == "sample":
                    m["clip_score_scratch"] = executor.scratch_score(job)  # after the timed run: not in its times
                row = {"request_id": job.request_id, "row": job.row, "role": pick.role,
                       "outcome": run.outcome(job.row), "k_used": job.k_used, "num_steps": job.num_steps,
                       "reads_entry": job.reads_entry, "creates_entry": job.creates_entry, "width": job.width,
                       "height": job.height, "prompt": job.prompt, **m, **_sim_row(run, job.row)}
                fh.write(json.dumps(row) + "\n")
                fh.flush()  # an interrupted validation keeps every request measured so far
                done = (f"service {m['service_s']:.3f} s (simulated {row['sim_service_s']:.3f} s)"
                        if m["service_s"] is not None else f"support: {job.stop_step} steps, latents kept")
                log(f"[{i + 1}/{len(jobs)}] {job.request_id} {row['outcome']} K={job.k_used}: {done}")
    except KeyboardInterrupt:
        status = "interrupted"
    except InputError:
        meta.update(status="failed", finished=_now())
        _write_meta(out, meta)
        write_report(out)
        raise
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    meta.update(status=status, finished=_now())
    _write_meta(out, meta)
    write_report(out)
    return out, status


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    from sim.fileio import write_text_atomic

    write_text_atomic(out / "meta.json", json.dumps(meta, indent=2, default=str) + "\n")


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "validate", help="execute sampled requests of a run with diffusers; report simulated vs measured",
        description="Execute a stratified sample of a simulated run's requests (misses and hits at every K, with "
                    "the misses whose latents the hits resume from) on a real diffusers pipeline, and write "
                    "simulated vs measured Diff% per component, percentile and K bucket to RUN_DIR/validation/.",
    )
    cmd.add_argument("run_dir", help="a run folder written by `python -m sim run` (config.yaml, requests.parquet)")
    cmd.add_argument("--sample", type=int, default=64, help="requests to sample (default 64), plus support misses")
    cmd.add_argument("--model", required=True, help="sd15, sdxl, tiny, tiny-xl, or a diffusers model folder")
    cmd.add_argument("--device", default="cuda", help="cuda or cpu (default cuda)")
    cmd.add_argument("--weights", default="random", help="random (latency only), or a diffusers model folder")
    cmd.add_argument("--seed", type=int, default=0, help="sample and initial-noise seed (default 0)")
    cmd.add_argument("--out", help="output folder (default RUN_DIR/validation)")
    cmd.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    cmd.add_argument("--tier", default="host", help="where misses keep latents: device, host or files (default host)")
    cmd.add_argument("--latent-dir", help="folder for --tier files (default: a temporary folder, removed after)")
    cmd.add_argument("--dtype", help="fp16, bf16 or fp32 (default fp16 on cuda, fp32 on cpu)")
    cmd.add_argument("--resolution", metavar="N|WxH",
                     help="image size for every request (default: the run's; tiny models: their native size)")
    cmd.add_argument("--scheduler", default="run",
                     help="run (the run's model.sampler if ddim, euler or dpm; else the pipeline's own), default "
                          "(the pipeline's own; SD-1.5's PNDM repeats its second timestep, so a resumed PLMS history "
                          "is off by one), ddim, euler or dpm")
    cmd.add_argument("--guidance", action=argparse.BooleanOptionalAction, default=True,
                     help="classifier-free guidance, which doubles the UNet batch (default on, as served)")
    cmd.add_argument("--guidance-scale", type=float, default=7.5)
    cmd.add_argument("--warmup", type=int, default=1, help="untimed warm-up generations first (default 1)")
    cmd.add_argument("--clip-model", help="CLIP model folder: CLIP score of each image against its prompt, and of "
                                           "each sampled hit's prompt generated from scratch (untimed)")
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    out, status = validate(args)
    if status == "interrupted":
        print(f"interrupted: the requests measured so far are reported in {out}", file=sys.stderr)
        return 130
    print(f"wrote {out}/validation.md, validation.csv, validation.png")
    return 0
