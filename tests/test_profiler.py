"""Profiler: argument checks and the threshold table (fast); latency and quality end to end on tiny CPU pipelines."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from sim.errors import ConfigError, InputError
from sim.hardware.profiles import load_latency_table
from sim.profiling.latency import gpu_slug, parse_int_list, parse_resolution
from sim.profiling.pipelines import ARCHITECTURES
from sim.profiling.quality import DEFAULT_BINS, bin_of, implied_thresholds, read_pairs, summarise

Cli = Callable[..., tuple[int, str, str]]
ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_batch_and_resolution_parsing() -> None:
    assert parse_int_list("1,2,4,8", "--batch") == (1, 2, 4, 8)
    for bad in ("1,,2", "a", "2,1", "0,1", "1,1"):
        with pytest.raises(ConfigError, match="--batch"):
            parse_int_list(bad, "--batch")
    assert parse_resolution("512") == (512, 512)
    assert parse_resolution("768x512") == (768, 512)
    with pytest.raises(ConfigError, match="--resolution"):
        parse_resolution("512px")


def test_gpu_slug() -> None:
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "h100"
    assert gpu_slug("NVIDIA A10G") == "a10g"
    assert gpu_slug("NVIDIA A100-SXM4-80GB") == "a100"
    assert gpu_slug("NVIDIA L4") == "l4"
    assert gpu_slug("NVIDIA RTX 6000 Ada Generation") == "rtx-6000-ada-generation"


def test_architecture_configs_are_consistent() -> None:
    sd15, sdxl = ARCHITECTURES["sd15"], ARCHITECTURES["sdxl"]
    assert sd15.unet["cross_attention_dim"] == sd15.text_encoders[0][1]["hidden_size"] == 768
    # SDXL conditions on both encoders' hidden states, and on pooled bigG embeds + 6 size/crop ids
    assert sdxl.unet["cross_attention_dim"] == sum(cfg["hidden_size"] for _, cfg in sdxl.text_encoders) == 2048
    assert sdxl.unet["projection_class_embeddings_input_dim"] == (
        6 * sdxl.unet["addition_time_embed_dim"] + sdxl.text_encoders[1][1]["projection_dim"])
    assert (sd15.resolution, sdxl.resolution) == (512, 1024)
    for arch in ARCHITECTURES.values():  # the VAE's downsampling maps the native size onto the UNet's
        assert arch.unet["sample_size"] * 2 ** (len(arch.vae["block_out_channels"]) - 1) == arch.resolution


def test_implied_thresholds_on_made_up_numbers() -> None:
    bins = DEFAULT_BINS  # 0.65 | 0.75 | 0.85 | 0.90 | 0.95 | 1.0 -> bin indices 0..4
    rel = {}
    for b, q in enumerate([0.90, 0.94, 0.96, 0.97, 0.99]):
        rel[(5, b)] = q + 0.04  # K=5 keeps the target down to bin 0.75 (0.98) but not at 0.65 (0.94)
        rel[(10, b)] = q  # K=10 down to 0.85
        rel[(25, b)] = q - 0.03  # K=25 only in the top bin
    rel[(15, 4)] = None  # K=15: no usable score at the top: no row
    rel[(20, 4)], rel[(20, 3)] = 0.99, 0.99  # K=20: two measured bins, both pass -> 0.90
    table = implied_thresholds(rel, bins, (5, 10, 15, 20, 25), target=0.95)
    assert table == [(0.95, 25), (0.90, 20), (0.85, 10), (0.75, 5)]
    # A smaller K that needs as much similarity as a larger one is never chosen: dropped
    assert implied_thresholds({(5, 4): 0.99, (10, 4): 0.99}, bins, (5, 10), 0.95) == [(0.95, 10)]
    # A bin without measurements is passed over, not a stop
    assert implied_thresholds({(5, 4): 0.99, (5, 2): 0.97}, bins, (5,), 0.95) == [(0.85, 5)]


def test_summarise_relative_quality() -> None:
    # two pairs in bin 4, one in bin 0; scores at K = 0 (scratch), 5 and 10
    clip = {(0, 0): 30.0, (0, 5): 29.0, (0, 10): 27.0, (1, 0): 32.0, (1, 5): 31.0, (1, 10): 30.0,
            (2, 0): 30.0, (2, 5): 24.0, (2, 10): 21.0}
    out = summarise({"clip_score": clip}, [4, 4, 0], (5, 10), DEFAULT_BINS, "clip_score", 0.95)
    assert out["by_k"] == {0: 1.0, 5: round(84 / 92, 4), 10: round(78 / 92, 4)}
    top = {row["k"]: row for row in out["by_k_bin"] if row["similarity"] == [0.95, 1.0]}
    assert top[5]["relative"]["clip_score"] == round(60 / 62, 4) and top[5]["pairs"] == 2
    assert out["thresholds"] == [{"above": 0.95, "k": 5}]


def test_bins_and_pairs(tmp_path: Path) -> None:
    assert [bin_of(s, DEFAULT_BINS) for s in (0.6, 0.65, 0.8, 0.95, 1.0)] == [None, 0, 1, 4, 4]
    csv = tmp_path / "pairs.csv"
    csv.write_text("clip_score,query_prompt,cached_prompt\n0.97,a,b\n0.70,c,d\n0.71,e,f\n0.5,g,\n0.99,h,\n")
    pairs = read_pairs(str(csv), DEFAULT_BINS, per_bin=1, seed=0)
    assert [b for b, _ in pairs] == [0, 4] and pairs[1][1].query == "a"
    csv.write_text("score,query_prompt\n")
    with pytest.raises(InputError, match="missing column"):
        read_pairs(str(csv), DEFAULT_BINS, 1, 0)


def test_bad_input_is_one_line(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("profile", "latency", "--model", "nope", "--device", "cpu")
    assert code == 2 and "--model" in err and "sd15" in err
    code, _, err = cli("profile", "latency", "--model", "tiny", "--batch", "1,x")
    assert code == 2 and "--batch" in err
    code, _, err = cli("profile", "quality", "--model", "sd15", "--pairs", "p.csv", "--out", str(tmp_path / "q"))
    assert code == 2 and "real weights" in err


@pytest.mark.slow
def test_published_parameter_counts() -> None:
    """The sd15/sdxl configs rebuild the released models: parameter counts equal theirs (meta device, no memory)."""
    import diffusers
    import torch
    import transformers

    expected = {"sd15": (859_520_964, 83_653_863, [123_060_480]),
                "sdxl": (2_567_463_684, 83_653_863, [123_060_480, 694_659_840])}
    for name, (unet_n, vae_n, text_n) in expected.items():
        arch = ARCHITECTURES[name]
        with torch.device("meta"):
            unet = diffusers.UNet2DConditionModel.from_config(arch.unet)
            vae = diffusers.AutoencoderKL.from_config(arch.vae)
            texts = [getattr(transformers, c)(transformers.CLIPTextConfig(**cfg)) for c, cfg in arch.text_encoders]
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert (count(unet), count(vae), [count(t) for t in texts]) == (unet_n, vae_n, text_n), name


@pytest.mark.slow
def test_latency_profile_on_cpu(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "lat.yaml"
    code, _, err = cli("profile", "latency", "--model", "tiny", "--device", "cpu", "--resolution", "64",
                       "--batch", "1,2", "--steps", "4", "--warmup", "0", "--repeats", "1", "--out", str(out))
    assert code == 0, err
    table = load_latency_table(str(out), "tiny", "cpu", 64, 64)
    assert table.batches == (1, 2)
    assert all(p.step_s > 0 and p.text_encoder_s > 0 and p.vae_decode_s > 0 for p in table.points)
    data = yaml.safe_load(out.read_text())
    prov = data["provenance"]
    for field in ("command", "date", "hardware", "gpu", "driver", "cuda", "versions", "dtype", "attention",
                  "weights", "guidance", "scheduler"):
        assert field in prov, field
    assert prov["weights"] == "random" and prov["gpu"] == "cpu" and prov["guidance"]["enabled"] is True
    assert {"torch", "diffusers", "transformers"} <= set(prov["versions"])
    for entry in data["entries"]:
        assert 0 < entry["step_p50_s"] <= entry["step_p99_s"] and entry["load_s"] > 0
        assert entry["steps_per_pass"] == 4 and entry["unet_batch"] == 2 * entry["batch"]


@pytest.mark.slow
def test_latency_sdxl_layout_without_guidance(cli: Cli, tmp_path: Path) -> None:
    """The SDXL path (two encoders, pooled embeds, time ids, Euler) on the tiny SDXL-shaped model."""
    code, _, err = cli("profile", "latency", "--model", "tiny-xl", "--device", "cpu", "--batch", "1",
                       "--steps", "2", "--warmup", "1", "--repeats", "1", "--no-guidance", "--out", f"{tmp_path}/")
    assert code == 0, err
    out = tmp_path / "tiny-xl-64-cpu-random-measured.yaml"
    data = yaml.safe_load(out.read_text())
    assert data["provenance"]["pipeline"] == "StableDiffusionXLPipeline"
    assert data["provenance"]["scheduler"] == "EulerDiscreteScheduler"
    assert data["entries"][0]["unet_batch"] == 1
    assert load_latency_table(str(out), "tiny-xl", "cpu", 64, 64).at(1).step_s > 0


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny random pipeline saved as a model folder, and a tiny random CLIP scorer folder."""
    import torch

    from sim.profiling import pipelines as P

    root = tmp_path_factory.mktemp("tiny")
    P.load("tiny", torch.device("cpu"), torch.float32).pipe.save_pretrained(root / "pipe")
    return root / "pipe", P.save_tiny_clip_scorer(root / "clip")


@pytest.mark.slow
def test_resume_from_cached_latent(tiny_folders: tuple[Path, Path]) -> None:
    import torch

    from sim.profiling import pipelines as P
    from sim.profiling.quality import Sampling, generate

    pipe = P.load(str(tiny_folders[0]), torch.device("cpu"), torch.float32).pipe
    sampling = Sampling(steps=4, height=64, width=64, scheduler="ddim", guidance_scale=7.5)
    cached_img, cached = generate(pipe, "a lighthouse at dusk", sampling, seed=3, capture={2})
    scratch, _ = generate(pipe, "a castle at night", sampling, seed=3)
    resumed, _ = generate(pipe, "a castle at night", sampling, seed=3, start=2, start_latent=cached[2])
    assert resumed.shape == scratch.shape == (1, 3, 64, 64)
    assert not torch.allclose(resumed, scratch)
    # sensitivity partner: resuming a prompt from its own latent reproduces its from-scratch image
    again, _ = generate(pipe, "a lighthouse at dusk", sampling, seed=3, start=2, start_latent=cached[2])
    assert torch.allclose(again, cached_img, atol=1e-5)


@pytest.mark.slow
def test_quality_profile_end_to_end(cli: Cli, tiny_folders: tuple[Path, Path], tmp_path: Path) -> None:
    pipe, clip = tiny_folders
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("clip_score,query_prompt,cached_prompt\n"
                     '0.97,"a red fox in snow","a red fox in the snow"\n0.70,"a castle at night","a lighthouse"\n')
    out = tmp_path / "q.yaml"
    code, _, err = cli("profile", "quality", "--model", str(pipe), "--pairs", str(pairs), "--ks", "1,2",
                       "--steps", "3", "--device", "cpu", "--clip-model", str(clip), "--pickscore", str(clip),
                       "--out", str(out))
    assert code == 0, err
    data = yaml.safe_load(out.read_text())
    assert set(data["by_k"]) == {0, 1, 2} and data["by_k"][0] == 1.0
    assert data["provenance"]["type"] == "measured" and data["provenance"]["pairs"] == 2
    assert {row["k"] for row in data["by_k_bin"]} == {0, 1, 2}
    assert all(set(row["mean"]) == {"clip_score", "pickscore"} for row in data["by_k_bin"])
    from sim.quality import load_quality  # the simulator reads what the profiler wrote

    model = load_quality(str(out), (1, 2))  # seeded tiny pipeline and scorer: scores are positive
    assert model.by_k[0] == 1.0 and model.bins == tuple(DEFAULT_BINS)


@pytest.mark.slow
def test_gpu_script_rehearsal_on_cpu(tmp_path: Path) -> None:
    """benchmarks/gpu/profile_latency.sh with tiny models on the CPU: the device run's exact commands work."""
    env = {**os.environ, "SD15": "tiny", "SDXL": "tiny-xl", "RES15": "64", "RESXL": "64", "DEVICE": "cpu",
           "DTYPE": "fp32", "STEPS": "2", "BATCH": "1,2", "WARMUP": "0", "REPEATS15": "1", "REPEATSXL": "1",
           "WHEELS": str(tmp_path / "no-wheels"), "DEST": str(tmp_path), "PY": sys.executable}
    run = subprocess.run(["bash", "benchmarks/gpu/profile_latency.sh"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    for name in ("tiny-64-cpu-random-measured.yaml", "tiny-xl-64-cpu-random-measured.yaml"):
        assert load_latency_table(str(tmp_path / name), name.split("-64")[0], "cpu", 64, 64).batches == (1, 2)
