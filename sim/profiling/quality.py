"""`python -m sim profile quality`: image quality of resuming a new prompt from a cached prompt's latent at step K."""

from __future__ import annotations

import argparse
import csv
import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from sim.errors import ConfigError, InputError
from sim.fileio import write_text_atomic

if TYPE_CHECKING:
    import torch

# Similarity bins: the edges of NIRVANA's default K table (DESIGN.md §1), so each bin maps to one default K.
DEFAULT_BINS = (0.65, 0.75, 0.85, 0.90, 0.95, 1.0)
METRICS = ("clip_score", "pickscore")


@dataclass(frozen=True)
class Pair:
    similarity: float  # CLIP text cosine between the two prompts (from the pairs file)
    query: str  # the new prompt, generated from the cached prompt's latent
    cached: str


def bin_of(similarity: float, bins: Sequence[float]) -> int | None:
    """Index of the bin [lo, hi) holding ``similarity`` (the last bin includes its upper edge); None outside."""
    for i, (lo, hi) in enumerate(itertools.pairwise(bins)):
        if lo <= similarity < hi or (i == len(bins) - 2 and similarity == hi):
            return i
    return None


def read_pairs(path: str, bins: Sequence[float], per_bin: int, seed: int) -> list[tuple[int, Pair]]:
    """Up to ``per_bin`` random pairs per similarity bin, as (bin index, pair), from a CSV with clip_score,
    query_prompt and cached_prompt columns (rows without a cached prompt are skipped)."""
    file = Path(path)
    try:
        with file.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"clip_score", "query_prompt", "cached_prompt"} - set(reader.fieldnames or ())
            if missing:
                raise InputError(f"{file}: missing column(s) {', '.join(sorted(missing))} (--pairs)")
            rows = list(reader)
    except FileNotFoundError:
        raise InputError(f"--pairs: {path} not found") from None
    by_bin: dict[int, list[Pair]] = {}
    for line, row in enumerate(rows, start=2):
        if not (row["cached_prompt"] or "").strip():
            continue
        try:
            similarity = float(row["clip_score"])
        except ValueError:
            raise InputError(f"{file}: line {line}, field 'clip_score': not a number ({row['clip_score']!r})") from None
        b = bin_of(similarity, bins)
        if b is not None:
            by_bin.setdefault(b, []).append(Pair(similarity, row["query_prompt"], row["cached_prompt"]))
    rng = np.random.default_rng(seed)
    chosen = []
    for b in sorted(by_bin):
        pool = by_bin[b]
        for i in sorted(rng.choice(len(pool), size=min(per_bin, len(pool)), replace=False)):
            chosen.append((b, pool[int(i)]))
    if not chosen:
        raise InputError(f"{file}: no pair with a cached prompt and a similarity in [{bins[0]}, {bins[-1]}] (--pairs)")
    return chosen


def implied_thresholds(relative: Mapping[tuple[int, int], float | None], bins: Sequence[float], ks: Sequence[int],
                       target: float) -> list[tuple[float, int]]:
    """The K table the measurements imply: rows (similarity above, K), strictly descending, for KTable.

    For each K, walk the bins from the most similar down while relative quality at (K, bin) >= target; the
    lowest such bin's lower edge is K's threshold. Bins without measurements are passed over; a K whose
    most similar measured bin misses the target gets no row. A smaller K whose threshold is not below every
    larger K's can never be selected, so it is dropped.
    """
    floor: dict[int, float] = {}
    for k in ks:
        for b in reversed(range(len(bins) - 1)):
            if (k, b) not in relative:
                continue
            value = relative[(k, b)]
            if value is None or value < target:
                break
            floor[k] = bins[b]
    rows: list[tuple[float, int]] = []
    for k in sorted(floor, reverse=True):
        if not rows or floor[k] < rows[-1][0]:
            rows.append((floor[k], k))
    return rows


class Scorer:
    """A CLIP-architecture scorer from a folder: clip_score = max(100 cos, 0); pickscore = logit scale x cos."""

    def __init__(self, metric: str, folder: str, processor: str | None, flag: str, device: torch.device) -> None:
        from transformers import CLIPModel, CLIPProcessor

        try:
            model: Any = CLIPModel.from_pretrained(folder, local_files_only=True)
            self._model = model.to(device).eval()
            self._processor = CLIPProcessor.from_pretrained(processor or folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise InputError(f"{flag}: cannot load a CLIP model and processor from {folder} ({exc})") from None
        self.metric = metric
        self._device = device

    def score(self, images: torch.Tensor, texts: Sequence[str]) -> list[float]:
        import torch
        from PIL import Image

        pixels = (images.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        inputs = self._processor(text=list(texts), images=[Image.fromarray(p) for p in pixels], return_tensors="pt",
                                 padding=True, truncation=True, max_length=77).to(self._device)
        with torch.inference_mode():
            out = self._model(**inputs)
            img = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
            txt = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
            cos = (img * txt).sum(-1)
            scores = (100 * cos).clamp(min=0) if self.metric == "clip_score" else self._model.logit_scale.exp() * cos
        return [float(s) for s in scores.cpu()]


@dataclass(frozen=True)
class Sampling:
    """How every image of a quality profile is generated: N steps, size, scheduler, guidance."""

    steps: int
    height: int
    width: int
    scheduler: str
    guidance_scale: float


def generate(pipe: Any, prompt: str, sampling: Sampling, *, seed: int, start: int = 0,
             start_latent: torch.Tensor | None = None,
             capture: Collection[int] = ()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Generate ``prompt`` from noise (start 0), or resume it from another prompt's latent at step ``start``:
    fresh scheduler, set_timesteps(steps), set_begin_index(start), timesteps[start:]. Returns (image, captures)."""
    import torch

    from sim.profiling import pipelines as P

    steps, height, width = sampling.steps, sampling.height, sampling.width
    guidance_scale = sampling.guidance_scale
    sched = P.make_scheduler(pipe, sampling.scheduler, steps, start)
    if start and type(sched).__name__ == "PNDMScheduler":
        # PNDM's schedule repeats one timestep (N + 1 entries): timesteps[K:] of a fresh one skips a step
        raise ConfigError("--scheduler: PNDM cannot resume from a cached latent; use ddim, euler or dpm")
    latents = P.initial_latents(pipe, sched, 1, height, width, seed) if start_latent is None else start_latent
    with torch.inference_mode():
        empty = P.tokenize(pipe, [""]) if guidance_scale > 1 else None
        cond = P.encode(pipe, P.tokenize(pipe, [prompt]), empty, height, width)
        latents, captured = P.denoise(pipe, sched, latents, cond, start=start, guidance_scale=guidance_scale,
                                      capture=capture)
        return P.decode(pipe, latents), captured


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den <= 0 else round(num / den, 4)


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def summarise(scores: Mapping[str, Mapping[tuple[int, int], float]], pair_bins: Sequence[int], ks: Sequence[int],
              bins: Sequence[float], primary: str, target: float) -> dict[str, Any]:
    """Per-(pair, K) scores (K = 0: from scratch) -> by_k, by_k_bin and the implied thresholds."""
    rows, relative = [], {}
    for b in sorted(set(pair_bins)):
        idx = [i for i, pb in enumerate(pair_bins) if pb == b]
        for k in (0, *ks):
            means = {m: _mean([s[(i, k)] for i in idx]) for m, s in scores.items()}
            rel = {m: _ratio(means[m], _mean([s[(i, 0)] for i in idx])) for m, s in scores.items()}
            rows.append({"k": k, "similarity": [bins[b], bins[b + 1]], "pairs": len(idx), "mean": means,
                         "relative": rel})
            relative[(k, b)] = rel[primary]
    prim = scores[primary]
    by_k = {0: 1.0} | {k: _ratio(_mean([prim[(i, k)] for i in range(len(pair_bins))]),
                                 _mean([prim[(i, 0)] for i in range(len(pair_bins))])) for k in ks}
    table = implied_thresholds(relative, bins, ks, target)
    return {"metric": f"relative_{primary}", "by_k": by_k, "target": target, "bins": list(bins),
            "thresholds": [{"above": above, "k": k} for above, k in table], "by_k_bin": rows}


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if len(values) < 2 or list(values) != sorted(set(values)) or not -1 <= values[0] < values[-1] <= 1:
        raise ConfigError(f"{flag}: expected at least two strictly increasing similarities in [-1, 1], got {text!r}")
    return values


def _check_flags(a: argparse.Namespace, ks: Sequence[int]) -> str:
    """Every flag checked before a model is loaded; returns the primary metric."""
    from sim.profiling import pipelines as P

    if a.steps <= ks[-1]:
        raise ConfigError(f"--steps: must exceed the largest K ({ks[-1]}), got {a.steps}")
    if not 0 < a.target <= 1:
        raise ConfigError(f"--target: expected a relative quality in (0, 1], got {a.target}")
    if a.pairs_per_bin < 1:
        raise ConfigError(f"--pairs-per-bin: expected an integer >= 1, got {a.pairs_per_bin}")
    if a.model in P.ARCHITECTURES or not Path(a.model).is_dir():
        raise InputError(f"--model: {a.model!r} is not a model folder (quality needs real weights on disk)")
    if a.scheduler not in P.SCHEDULERS:
        raise ConfigError(f"--scheduler: expected one of {', '.join(P.SCHEDULERS)}, got {a.scheduler!r}")
    if not (a.clip_model or a.pickscore):
        raise ConfigError("--clip-model / --pickscore: give at least one scorer folder")
    primary = str(a.metric or ("clip_score" if a.clip_model else "pickscore"))
    if primary not in METRICS or (primary == "clip_score" and not a.clip_model) or (
            primary == "pickscore" and not a.pickscore):
        raise ConfigError(f"--metric: {primary!r} needs its scorer folder (clip_score: --clip-model, "
                          "pickscore: --pickscore)")
    for flag, path in (("--clip-model", a.clip_model), ("--pickscore", a.pickscore),
                       ("--pickscore-processor", a.pickscore_processor)):
        if path is not None and not Path(path).is_dir():
            raise InputError(f"{flag}: folder {path} not found")
    return primary


def _score_pairs(pipe: Any, pairs: list[tuple[int, Pair]], sampling: Sampling, ks: Sequence[int],
                 scorers: list[Scorer], a: argparse.Namespace, primary: str,
                 log: Callable[[str], object]) -> dict[str, dict[tuple[int, int], float]]:
    """Each pair: the cached prompt from seeded noise (latents kept at every K), the new prompt from the same
    noise (K = 0) and resumed from each cached latent; every image scored against the new prompt."""
    scores: dict[str, dict[tuple[int, int], float]] = {s.metric: {} for s in scorers}
    images_dir = Path(a.images) if a.images else None
    for i, (_, pair) in enumerate(pairs):
        seed = a.seed + i  # the cached and the new prompt start from the same noise: K = 0 is the scratch image
        _, cached = generate(pipe, pair.cached, sampling, seed=seed, capture=set(ks))
        images = {0: generate(pipe, pair.query, sampling, seed=seed)[0]}
        for k in ks:
            images[k] = generate(pipe, pair.query, sampling, seed=seed, start=k, start_latent=cached[k])[0]
        for scorer in scorers:
            for k, value in zip(images, scorer.score(_stack(images.values()), [pair.query] * len(images)),
                                strict=True):
                scores[scorer.metric][(i, k)] = value
        if images_dir is not None:
            _save(images_dir, i, images)
        log(f"pair {i + 1}/{len(pairs)} (similarity {pair.similarity:.3f}): "
            + ", ".join(f"K={k} {scores[primary][(i, k)]:.2f}" for k in images))
    return scores


def profile_quality(a: argparse.Namespace, log: Callable[[str], object] = print) -> Path:
    """Generate, resume and score every chosen pair; write the quality profile."""
    from sim.profiling import pipelines as P
    from sim.profiling.latency import measured_provenance, parse_int_list, parse_resolution

    ks = parse_int_list(a.ks, "--ks")
    bins = _floats(a.bins, "--bins")
    primary = _check_flags(a, ks)
    pairs = read_pairs(a.pairs, bins, a.pairs_per_bin, a.seed)
    device = P.torch_device(a.device)
    loaded = P.load(a.model, device, P.torch_dtype(a.dtype, device))
    pipe = loaded.pipe
    width, height = parse_resolution(a.resolution) if a.resolution else (P.native_resolution(pipe),) * 2
    scorers = [Scorer("clip_score", a.clip_model, None, "--clip-model", device)] if a.clip_model else []
    if a.pickscore:
        scorers.append(Scorer("pickscore", a.pickscore, a.pickscore_processor, "--pickscore", device))
    sampling = Sampling(a.steps, height, width, a.scheduler, a.guidance_scale)
    scores = _score_pairs(pipe, pairs, sampling, ks, scorers, a, primary, log)
    summary = summarise(scores, [b for b, _ in pairs], ks, bins, primary, a.target)
    command = (f"python -m sim profile quality --model {a.model} --pairs {a.pairs} --ks {a.ks} --bins {a.bins} "
               f"--pairs-per-bin {a.pairs_per_bin} --steps {a.steps} --scheduler {a.scheduler} "
               f"--guidance-scale {a.guidance_scale} --target {a.target} --seed {a.seed} --device {a.device}"
               + (f" --clip-model {a.clip_model}" if a.clip_model else "")
               + (f" --pickscore {a.pickscore}" if a.pickscore else "") + f" --out {a.out}")
    provenance = measured_provenance(
        command, loaded,
        "for each chosen (cached, new) prompt pair: generate the cached prompt from seeded noise, keeping its "
        "latent before step K; generate the new prompt from the same noise (K = 0, from scratch) and resume it "
        "from each cached latent for the remaining steps (fresh scheduler, set_timesteps(steps), "
        "set_begin_index(K)); score each image against the new prompt. relative = mean score at K / mean score "
        "from scratch over the same pairs; clip_score = max(100 x image-text cosine, 0), pickscore = PickScore's "
        "logit scale x cosine",
        model=loaded.model, resolution=f"{width}x{height}", steps=a.steps,
        scheduler=type(P.make_scheduler(pipe, a.scheduler, a.steps)).__name__, guidance_scale=a.guidance_scale,
        pairs_file=a.pairs, pairs=len(pairs), seed=a.seed,
        scorers={s.metric: (a.clip_model if s.metric == "clip_score" else a.pickscore) for s in scorers},
    )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, yaml.safe_dump({"kind": "quality", "provenance": provenance, **summary}, sort_keys=False,
                                          width=110))
    return out


def _stack(images: Collection[torch.Tensor]) -> torch.Tensor:
    import torch

    return torch.cat(list(images))


def _save(folder: Path, pair: int, images: Mapping[int, torch.Tensor]) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k, img in images.items():
        pixels = (img[0].float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        Image.fromarray(pixels).save(folder / f"pair{pair:03d}_k{k:02d}.png")


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "quality", help="measure quality vs (K, similarity) by resuming prompts from cached latents",
        description="For prompt pairs across similarity bins, generate from the cached prompt's latent at each K "
                    "and from scratch, score CLIP score (and PickScore), and write quality vs (K, similarity) "
                    "with the threshold table it implies. Needs real weights on disk.",
    )
    cmd.add_argument("--model", required=True, help="a diffusers text-to-image model folder (real weights)")
    cmd.add_argument("--pairs", required=True, help="CSV with clip_score, query_prompt, cached_prompt")
    cmd.add_argument("--ks", default="5,10,15,20,25", help="steps K at which latents are cached")
    cmd.add_argument("--bins", default=",".join(map(str, DEFAULT_BINS)), help="similarity bin edges")
    cmd.add_argument("--pairs-per-bin", type=int, default=8)
    cmd.add_argument("--clip-model", help="CLIP model folder (CLIPModel + CLIPProcessor) for CLIP score")
    cmd.add_argument("--pickscore", help="PickScore model folder")
    cmd.add_argument("--pickscore-processor", help="its processor folder (default: the PickScore folder)")
    cmd.add_argument("--metric", help="score behind by_k and thresholds: clip_score or pickscore")
    cmd.add_argument("--target", type=float, default=0.95, help="relative quality a K must keep (default 0.95)")
    cmd.add_argument("--steps", type=int, default=50)
    cmd.add_argument("--scheduler", default="ddim", help="ddim (default), euler, dpm or default (the pipeline's)")
    cmd.add_argument("--guidance-scale", type=float, default=7.5, help="<= 1 turns classifier-free guidance off")
    cmd.add_argument("--resolution", help="N or WxH (default: the model's native size)")
    cmd.add_argument("--device", default="cuda")
    cmd.add_argument("--dtype", help="fp16, bf16 or fp32 (default fp16 on cuda, fp32 on cpu)")
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--images", help="also save every generated image as PNG in this folder")
    cmd.add_argument("--out", required=True, help="output YAML, e.g. profiles/quality/sd15-measured.yaml")
    cmd.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    print(f"wrote {profile_quality(args)}")
    return 0
