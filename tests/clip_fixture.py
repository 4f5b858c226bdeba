"""Build a tiny random CLIP text model with CLIP's real tokenizer in a local folder, fully offline."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "clip-tokenizer"
WINDOW_TOKENS = 77  # CLIP's text window, <|startoftext|> and <|endoftext|> included


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP byte-level BPE: printable bytes map to themselves, the rest to code points from 256
    # up, so every byte has a visible, whitespace-free symbol (same table as open_clip's tokenizer).
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars), strict=True))


def write_clip_tokenizer(folder: Path) -> None:
    """vocab.json, merges.txt and the configs CLIPTokenizer.from_pretrained(folder) needs (49,408 ids)."""
    merges_text = gzip.decompress((FIXTURE / "merges.txt.gz").read_bytes()).decode("utf-8")
    merges = [m for m in merges_text.split("\n")[1:] if m]
    # Ids as in CLIP: bytes, bytes + '</w>', one per merge in order, then the two special tokens.
    symbols = list(_bytes_to_unicode().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(m.replace(" ", "") for m in merges),
              "<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")
    # transformers 5: building CLIPTokenizer from file arguments silently yields a 2-token vocabulary;
    # from_pretrained(folder) with this config reads the files properly.
    config = {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": WINDOW_TOKENS,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def make_tiny_clip(folder: Path, *, seed: int = 0, hidden_size: int = 32, projection_dim: int = 16) -> Path:
    """A CLIPTextModelWithProjection (2 layers, random weights from ``seed``) and tokenizer in ``folder``."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=WINDOW_TOKENS, projection_dim=projection_dim,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )
    torch.manual_seed(seed)
    model = CLIPTextModelWithProjection(config).eval()
    model.save_pretrained(folder)
    write_clip_tokenizer(folder)
    return folder
