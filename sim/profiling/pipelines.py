"""Diffusers text-to-image pipelines for profiling: a model folder (real weights) or a named architecture (random)."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.errors import ConfigError, InputError

if TYPE_CHECKING:
    import torch

# Published configurations, transcribed as data (keys left out take diffusers'/transformers' defaults, which
# equal the published values). Per-step compute depends on shapes only, so these architectures with random
# weights time like the released models.
# SD-1.5: config.json files of runwayml/stable-diffusion-v1-5 (unet/, vae/, text_encoder/ = CLIP ViT-L/14 text,
# scheduler/ = PNDM), read from the mirror HDRJ-One/runwayml-stable-diffusion-v1-5 on GitHub.
_CLIP_L_TEXT = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                "projection_dim": 768, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
_SD_BETAS = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "prediction_type": "epsilon", "steps_offset": 1}
_SD_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [128, 256, 512, 512],
           "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
           "layers_per_block": 2, "norm_num_groups": 32, "act_fn": "silu"}
# SDXL base 1.0: config.json files of stabilityai/stable-diffusion-xl-base-1.0 (unet/, vae/ with force_upcast,
# text_encoder/ = CLIP ViT-L/14, text_encoder_2/ = OpenCLIP ViT-bigG/14 with projection, scheduler/ = Euler,
# model_index.json force_zeros_for_empty_prompt), read from a derived repository that keeps them unchanged
# (PRITHIVSAKTHIUR/AI-Art-Generator-SDXL on GitHub).
_BIGG_TEXT = {"vocab_size": 49408, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
              "num_attention_heads": 20, "max_position_embeddings": 77, "hidden_act": "gelu",
              "projection_dim": 1280, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
# Tiny: the size diffusers' own pipeline tests use (ENVIRONMENT.md: ~0.2 s per step on 2 CPU cores).
_TINY_TEXT = {"vocab_size": 1000, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 5,
              "num_attention_heads": 4, "max_position_embeddings": 77, "projection_dim": 32,
              "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
_TINY_VAE = {"block_out_channels": [32, 64], "down_block_types": ["DownEncoderBlock2D"] * 2,
             "up_block_types": ["UpDecoderBlock2D"] * 2, "latent_channels": 4, "norm_num_groups": 32,
             "sample_size": 64}


@dataclass(frozen=True)
class Architecture:
    """A named model: component configs for random weights and its native square resolution."""

    name: str
    resolution: int
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoders: tuple[tuple[str, dict[str, Any]], ...]  # (transformers class, config); two for SDXL-style
    scheduler: tuple[str, dict[str, Any]]
    source: str


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture(
        "sd15", 512,
        unet={"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
              "block_out_channels": [320, 640, 1280, 1280],
              "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
              "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
              "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32,
              "use_linear_projection": False},
        vae={**_SD_VAE, "sample_size": 512, "scaling_factor": 0.18215},
        text_encoders=(("CLIPTextModel", _CLIP_L_TEXT),),
        scheduler=("PNDMScheduler", {**_SD_BETAS, "skip_prk_steps": True, "set_alpha_to_one": False}),
        source="runwayml/stable-diffusion-v1-5 config.json files (unet, vae, text_encoder, scheduler)",
    ),
    Architecture(
        "sdxl", 1024,
        unet={"sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
              "block_out_channels": [320, 640, 1280],
              "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
              "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
              "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [5, 10, 20],
              "cross_attention_dim": 2048, "use_linear_projection": True, "norm_num_groups": 32,
              "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
              "projection_class_embeddings_input_dim": 2816},
        vae={**_SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
        text_encoders=(("CLIPTextModel", _CLIP_L_TEXT), ("CLIPTextModelWithProjection", _BIGG_TEXT)),
        scheduler=("EulerDiscreteScheduler", {**_SD_BETAS, "timestep_spacing": "leading",
                                              "interpolation_type": "linear", "use_karras_sigmas": False}),
        source="stabilityai/stable-diffusion-xl-base-1.0 config.json files (unet, vae, text_encoder, "
               "text_encoder_2, scheduler, model_index)",
    ),
    Architecture(
        "tiny", 64,
        unet={"sample_size": 32, "block_out_channels": [32, 64], "layers_per_block": 2,
              "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
              "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "cross_attention_dim": 32,
              "norm_num_groups": 32},
        vae=_TINY_VAE,
        text_encoders=(("CLIPTextModel", _TINY_TEXT),),
        scheduler=("DDIMScheduler", {**_SD_BETAS, "clip_sample": False, "set_alpha_to_one": False}),
        source="diffusers' pipeline-test sizes (CPU tests only; not a real model)",
    ),
    # SDXL-shaped tiny model: two text encoders, pooled + time-id conditioning, Euler; tests the SDXL code path.
    Architecture(
        "tiny-xl", 64,
        unet={"sample_size": 32, "block_out_channels": [32, 64], "layers_per_block": 2,
              "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
              "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "transformer_layers_per_block": [1, 2],
              "attention_head_dim": [2, 4], "cross_attention_dim": 64, "use_linear_projection": True,
              "norm_num_groups": 32, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
              "projection_class_embeddings_input_dim": 8 * 6 + 32},
        vae={**_TINY_VAE, "force_upcast": True},
        text_encoders=(("CLIPTextModel", _TINY_TEXT), ("CLIPTextModelWithProjection", _TINY_TEXT)),
        scheduler=("EulerDiscreteScheduler", {**_SD_BETAS, "timestep_spacing": "leading"}),
        source="diffusers' pipeline-test sizes, SDXL layout (CPU tests only; not a real model)",
    ),
)}

DTYPES = ("fp16", "bf16", "fp32")


def torch_device(name: str) -> torch.device:
    import torch

    if name not in ("cuda", "cpu"):
        raise ConfigError(f"--device: expected cuda or cpu, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device cuda: no CUDA device is visible (torch {torch.__version__})")
    return torch.device(name)


def torch_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """fp16 by default on CUDA (as served), fp32 on CPU; half precision on CPU is refused (too slow to mean much)."""
    import torch

    name = name or ("fp16" if device.type == "cuda" else "fp32")
    if name not in DTYPES:
        raise ConfigError(f"--dtype: expected one of {', '.join(DTYPES)}, got {name!r}")
    if name == "fp16" and device.type == "cpu":
        raise ConfigError("--dtype fp16: needs --device cuda; use fp32 or bf16 on CPU")
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def _byte_unicode() -> list[str]:
    # The printable-character stand-ins for the 256 byte values used by byte-level BPE (GPT-2, CLIP).
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]


def stand_in_tokenizer() -> Any:
    """A CLIP tokenizer with a byte-level vocabulary and no merges: 514 ids, padded to CLIP's 77 tokens.

    Random-weight pipelines ship no tokenizer (none can be downloaded here). Token ids differ from real
    CLIP ids, but shapes, and so the text encoder's compute, are the same.
    """
    from transformers import CLIPTokenizer

    chars = _byte_unicode()
    vocab = {tok: i for i, tok in enumerate([*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"])}
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "vocab.json").write_text(json.dumps(vocab))
        Path(folder, "merges.txt").write_text("#version: 0.2\n")
        # transformers 5: built from files without a config it silently gets a 2-token vocabulary
        Path(folder, "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
        return CLIPTokenizer.from_pretrained(folder)


def build_random(name: str, device: torch.device, dtype: torch.dtype) -> Any:
    """The named architecture with random weights, created directly on ``device`` (fast init on a GPU)."""
    import diffusers
    import torch
    import transformers

    arch = ARCHITECTURES[name]
    # Seeded without touching the caller's generators: the same random pipeline every time (reproducible tests).
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.device(device):
        torch.manual_seed(0)
        unet = diffusers.UNet2DConditionModel.from_config(arch.unet)
        vae = diffusers.AutoencoderKL.from_config(arch.vae)
        encoders = [getattr(transformers, cls)(transformers.CLIPTextConfig(**cfg)) for cls, cfg in arch.text_encoders]
    cls_name, sched_cfg = arch.scheduler
    scheduler = getattr(diffusers, cls_name).from_config(sched_cfg)
    if dtype != torch.float32:
        unet, vae, encoders = unet.to(dtype), vae.to(dtype), [e.to(dtype) for e in encoders]
    parts: dict[str, Any] = {"unet": unet, "vae": vae, "scheduler": scheduler}
    if len(encoders) == 2:
        return diffusers.StableDiffusionXLPipeline(
            text_encoder=encoders[0], text_encoder_2=encoders[1], tokenizer=stand_in_tokenizer(),
            tokenizer_2=stand_in_tokenizer(), force_zeros_for_empty_prompt=True, add_watermarker=False, **parts)
    return diffusers.StableDiffusionPipeline(
        text_encoder=encoders[0], tokenizer=stand_in_tokenizer(), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False, **parts)


def _load_folder(folder: Path, dtype: torch.dtype) -> Any:
    import diffusers

    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise InputError(f"--model {folder}: no model_index.json (not a diffusers pipeline folder)")
    index = json.loads(index_file.read_text())
    # The safety checker is not part of the denoising service time NIRVANA models: skip loading it.
    extra = {"safety_checker": None, "requires_safety_checker": False} if "safety_checker" in index else {}
    try:
        pipe = diffusers.DiffusionPipeline.from_pretrained(folder, dtype=dtype, local_files_only=True, **extra)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"--model {folder}: cannot load the pipeline ({exc})") from None
    if getattr(pipe, "unet", None) is None or getattr(pipe, "text_encoder", None) is None:
        raise InputError(f"--model {folder}: a {type(pipe).__name__}; the profiler runs UNet text-to-image "
                         "pipelines (Stable Diffusion 1.x/2.x, SDXL)")
    return pipe


def check_model(model: str) -> None:
    """A known architecture name or an existing folder; checked before torch is imported."""
    if model not in ARCHITECTURES and not Path(model).is_dir():
        raise InputError(f"--model: {model!r} is neither a known architecture ({', '.join(ARCHITECTURES)}) "
                         "nor a model folder")


@dataclass
class Loaded:
    """A pipeline on its device, and what the profile must say about it."""

    pipe: Any
    model: str  # the profile's model name: architecture name, or the folder's name
    weights: str  # random | real
    load_s: float  # build (random) or read (folder) and move to the device, synchronised
    device: torch.device
    dtype: torch.dtype


def load(model: str, device: torch.device, dtype: torch.dtype) -> Loaded:
    """Build the named architecture (random weights) or load a model folder (real weights) onto ``device``."""
    check_model(model)
    import diffusers  # noqa: F401  (imported before the clock starts: load_s excludes import time)
    import torch
    import transformers  # noqa: F401

    folder = Path(model)
    t0 = time.perf_counter()
    if model in ARCHITECTURES:
        pipe, name, weights = build_random(model, device, dtype), model, "random"
    else:
        pipe, name, weights = _load_folder(folder, dtype).to(device), folder.resolve().name, "real"
    if dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False):
        pipe.vae.to(torch.float32)  # as the SDXL pipeline does: its VAE overflows in fp16
    if device.type == "cuda":
        torch.cuda.synchronize()
    pipe.set_progress_bar_config(disable=True)
    return Loaded(pipe, name, weights, time.perf_counter() - t0, device, dtype)


def is_xl(pipe: Any) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


def vae_scale(pipe: Any) -> int:
    return int(2 ** (len(pipe.vae.config.block_out_channels) - 1))


def native_resolution(pipe: Any) -> int:
    return int(pipe.unet.config.sample_size) * vae_scale(pipe)


def tokenize(pipe: Any, prompts: Sequence[str]) -> list[torch.Tensor]:
    """Token ids per text encoder, padded to the tokenizer's length (77 for CLIP)."""
    tokenizers = [pipe.tokenizer, pipe.tokenizer_2] if is_xl(pipe) else [pipe.tokenizer]
    return [tok(list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True,
                return_tensors="pt").input_ids.to(pipe.device) for tok in tokenizers]


@dataclass
class Conditioning:
    """Text conditioning of one batch; with guidance the batch is [unconditional, conditional]."""

    embeds: torch.Tensor
    added: dict[str, torch.Tensor] | None  # SDXL: pooled text embeds and size/crop time ids
    guidance: bool


def encode(pipe: Any, ids: list[torch.Tensor], empty_ids: list[torch.Tensor] | None, height: int,
           width: int) -> Conditioning:
    """Run the text encoder(s) the way the SD / SDXL pipelines do; ``empty_ids`` (the "" prompt) enables guidance."""
    import torch

    guidance = empty_ids is not None
    if not is_xl(pipe):
        embeds = pipe.text_encoder(ids[0])[0]
        if empty_ids is not None:
            embeds = torch.cat([pipe.text_encoder(empty_ids[0])[0], embeds])
        return Conditioning(embeds, None, guidance)
    hidden, pooled = [], None
    for enc, tok_ids in zip((pipe.text_encoder, pipe.text_encoder_2), ids, strict=True):
        out = enc(tok_ids, output_hidden_states=True)
        hidden.append(out.hidden_states[-2])  # SDXL conditions on the penultimate layer
        pooled = getattr(out, "text_embeds", None)
    embeds = torch.cat(hidden, dim=-1)
    assert pooled is not None
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=embeds.dtype, device=embeds.device)
    if empty_ids is not None:
        if pipe.config.force_zeros_for_empty_prompt:
            neg, neg_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
        else:
            neg_cond = encode(pipe, empty_ids, None, height, width)
            neg, neg_pooled = neg_cond.embeds, neg_cond.added["text_embeds"]  # type: ignore[index]
        embeds, pooled = torch.cat([neg, embeds]), torch.cat([neg_pooled, pooled])
    time_ids = time_ids.repeat(embeds.shape[0], 1)
    return Conditioning(embeds, {"text_embeds": pooled, "time_ids": time_ids}, guidance)


SCHEDULERS = ("default", "ddim", "euler", "dpm")


def make_scheduler(pipe: Any, kind: str, steps: int, start: int = 0) -> Any:
    """A fresh scheduler on ``steps`` timesteps, positioned at step ``start`` (resuming a cached latent)."""
    import diffusers

    classes = {"ddim": diffusers.DDIMScheduler, "euler": diffusers.EulerDiscreteScheduler,
               "dpm": diffusers.DPMSolverMultistepScheduler}
    if kind not in SCHEDULERS:
        raise ConfigError(f"--scheduler: expected one of {', '.join(SCHEDULERS)}, got {kind!r}")
    cls = type(pipe.scheduler) if kind == "default" else classes[kind]
    sched = cls.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps, device=pipe.device)
    if not 0 <= start < len(sched.timesteps):
        raise ConfigError(f"--ks: K={start} is outside the {len(sched.timesteps)} steps of the schedule")
    if hasattr(sched, "set_begin_index"):  # DDIM/PNDM have no step index: looping from timesteps[start] suffices
        sched.set_begin_index(start)
    return sched


def initial_latents(pipe: Any, scheduler: Any, batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    import torch

    scale = vae_scale(pipe)
    if height % scale or width % scale:
        raise ConfigError(f"--resolution: {width}x{height} is not a multiple of the VAE factor {scale}")
    shape = (batch, pipe.unet.config.in_channels, height // scale, width // scale)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))  # CPU draw: same on every device
    return (noise * scheduler.init_noise_sigma).to(pipe.device, pipe.unet.dtype)


def denoise(pipe: Any, scheduler: Any, latents: torch.Tensor, cond: Conditioning, *, start: int = 0,
            stop: int | None = None, guidance_scale: float = 7.5, capture: Collection[int] = (),
            on_step: Callable[[int], None] | None = None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Run timesteps[start:stop]; ``capture`` keeps the latent as it stands before step K (the cached noise at K)."""
    import torch

    captured = {}
    timesteps = scheduler.timesteps
    for i in range(start, len(timesteps) if stop is None else min(stop, len(timesteps))):
        if i in capture:
            captured[i] = latents.clone()
        t = timesteps[i]
        model_in = scheduler.scale_model_input(torch.cat([latents] * 2) if cond.guidance else latents, t)
        noise = pipe.unet(model_in, t, encoder_hidden_states=cond.embeds, added_cond_kwargs=cond.added,
                          return_dict=False)[0]
        if cond.guidance:
            uncond, text = noise.chunk(2)
            noise = uncond + guidance_scale * (text - uncond)
        latents = scheduler.step(noise, t, latents, return_dict=False)[0]
        if on_step is not None:
            on_step(i)
    return latents, captured


def decode(pipe: Any, latents: torch.Tensor) -> torch.Tensor:
    """Latents -> images in [0, 1], (batch, 3, H, W)."""
    vae = pipe.vae
    x = latents.to(vae.dtype) / vae.config.scaling_factor
    if getattr(vae.config, "shift_factor", None) is not None:
        x = x + vae.config.shift_factor
    return (vae.decode(x, return_dict=False)[0] / 2 + 0.5).clamp(0, 1)


def save_tiny_clip_scorer(folder: Path) -> Path:
    """Write a tiny random CLIPModel + processor (32 px images): the scorer the CPU tests use in place of CLIP."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tiny = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(text_config={**_TINY_TEXT, **tiny}, projection_dim=16,
                        vision_config={**tiny, "image_size": 32, "patch_size": 8})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(config)
    model.save_pretrained(folder)
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=stand_in_tokenizer()).save_pretrained(folder)
    return folder
