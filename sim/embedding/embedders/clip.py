"""CLIP text embeddings (`text_embeds`, the vectors CLIP compares with images) from a local transformers folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from sim.embedding.embedders import EMBEDDERS
from sim.embedding.embedders.base import Embedder
from sim.errors import InputError, SimError

# Files whose bytes decide the vectors besides the weights; hashed whole into the tag.
_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_SAMPLE_BYTES = 1 << 16


def _fingerprint(folder: Path) -> str:
    """Short hash of the config, tokenizer files and samples of the weight files.

    Hashing multi-GB weights whole would cost seconds per start; three 64 KiB samples plus the size
    still tell apart two checkpoints of one architecture (e.g. two random seeds), while a copy of
    the same folder elsewhere keeps its cache entries.
    """
    h = hashlib.sha1()
    for name in ("config.json", *_TOKENIZER_FILES):
        f = folder / name
        if f.is_file():
            h.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
    for f in sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file()):
        size = f.stat().st_size
        h.update(f"{f.name}\0{size}\0".encode())
        with f.open("rb") as fh:
            for start in (0, max(0, size // 2 - _SAMPLE_BYTES // 2), max(0, size - _SAMPLE_BYTES)):
                fh.seek(start)
                h.update(fh.read(_SAMPLE_BYTES))
    return h.hexdigest()[:10]


@EMBEDDERS.register("clip")
class CLIP(Embedder):
    """NIRVANA's thresholds are cosines of these vectors (from the real CLIP text encoder it was tuned on).

    ``model_path`` is a folder written by ``CLIPTextModelWithProjection.save_pretrained`` (or a full
    ``CLIPModel`` folder, whose text half is used) holding CLIP's tokenizer files too. Prompts longer
    than the model's window (``max_position_embeddings``, 77 for CLIP) keep their first tokens and
    end with <|endoftext|>, as CLIP itself truncates; ``num_truncated`` counts them.
    """

    name = "clip"

    def __init__(self, model_path: str | Path | None = None, batch_size: int = 64) -> None:
        if model_path is None:
            raise SimError("the clip embedder needs a local CLIP text model folder (--model-path DIR); "
                           "it never downloads one")
        folder = Path(model_path).expanduser().resolve()
        if not folder.is_dir():
            raise InputError(f"{folder}: CLIP model folder not found")
        config_file = folder / "config.json"
        try:
            raw_config = json.loads(config_file.read_text())
            model_type = raw_config.get("model_type")
        except FileNotFoundError:
            raise InputError(f"{folder}: no config.json (not a transformers model folder)") from None
        except (ValueError, AttributeError) as exc:
            raise InputError(f"{config_file}: not a JSON object ({exc})") from None
        if model_type not in ("clip_text_model", "clip"):
            raise InputError(f"{config_file}: model_type is {model_type!r}, expected 'clip_text_model' or 'clip'")
        if batch_size < 1:
            raise SimError(f"clip embedder: batch_size must be >= 1, got {batch_size}")

        # torch and transformers load here, not at import: `import sim.embedding.embedders` stays light.
        import torch
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        # A full CLIPModel folder also holds the vision tower: its weights are expected leftovers here,
        # and transformers' table of them would bury the output. Missing keys are checked below.
        hf_logging.set_verbosity_error()
        try:
            kwargs: dict[str, Any] = {}
            if model_type == "clip":
                # CLIPConfig keeps projection_dim at the top level, not in text_config.
                text_config = CLIPTextConfig.from_pretrained(folder, local_files_only=True)
                text_config.projection_dim = int(raw_config.get("projection_dim", text_config.projection_dim))
                kwargs["config"] = text_config
            tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
            # output_loading_info=True makes it a (model, info) pair, which the stubs do not say
            loaded: Any = CLIPTextModelWithProjection.from_pretrained(
                folder, local_files_only=True, output_loading_info=True, **kwargs)
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise InputError(f"{folder}: cannot load a CLIP text model and tokenizer "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        finally:
            hf_logging.set_verbosity(verbosity)
        model, info = loaded
        missing = list(info.get("missing_keys", ()))
        if missing:
            # A plain CLIPTextModel (e.g. Stable Diffusion 1.x's text_encoder) has no text_projection:
            # transformers would fill it with random weights and the cosines would mean nothing.
            raise InputError(f"{folder}: the weights lack {', '.join(sorted(missing)[:3])}; the clip embedder "
                             "needs CLIPTextModelWithProjection or CLIPModel weights")
        config = model.config
        vocab_size = int(config.vocab_size)
        if not 2 < len(tokenizer) <= vocab_size:
            raise InputError(f"{folder}: the tokenizer has {len(tokenizer)} tokens, the model {vocab_size}")
        self._eos_id = int(tokenizer.eos_token_id)
        # Pooling reads the hidden state at the first <|endoftext|> (or, for configs with the legacy
        # eos_token_id 2, at the largest id, which is <|endoftext|> in CLIP's vocabulary).
        if int(config.eos_token_id) not in (2, self._eos_id):
            raise InputError(f"{folder}: config eos_token_id {config.eos_token_id} is not the tokenizer's "
                             f"<|endoftext|> id {self._eos_id}")
        pad_id = tokenizer.pad_token_id
        self._pad_id = self._eos_id if pad_id is None else int(pad_id)
        self._window = int(config.max_position_embeddings)
        self.window_tokens = self._window
        self.dim = int(config.projection_dim)
        self.num_truncated = 0
        self._torch = torch
        self._tokenizer = tokenizer
        self._model = model.eval()
        self._batch_size = batch_size
        self._tag = f"clip:{folder.name}@{_fingerprint(folder)}"

    def _token_ids(self, prompts: list[str]) -> list[list[int]]:
        # verbose=False: lengths above the window are expected here and handled below, not warned about
        ids: list[list[int]] = self._tokenizer(prompts, add_special_tokens=True, verbose=False)["input_ids"]
        return ids

    def count_truncated(self, prompts: list[str]) -> int:
        return sum(len(ids) > self._window for ids in self._token_ids(prompts))

    def embed(self, prompts: list[str]) -> np.ndarray:
        out = np.empty((len(prompts), self.dim), dtype=np.float32)
        if not prompts:
            return out
        ids = self._token_ids(prompts)
        for i, row in enumerate(ids):
            if len(row) > self._window:
                # CLIP's own rule (clip.tokenize(truncate=True)): keep the first tokens, end with EOT.
                ids[i] = [*row[: self._window - 1], self._eos_id]
                self.num_truncated += 1
        # Length-sorted batches pad little; causal attention makes each vector independent of padding.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        batches = [order[s : s + self._batch_size] for s in range(0, len(order), self._batch_size)]
        for batch in self._progress(batches, len(prompts)):
            width = max(len(ids[i]) for i in batch)
            input_ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for r, i in enumerate(batch):
                input_ids[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            with self._torch.inference_mode():
                result = self._model(input_ids=self._torch.from_numpy(input_ids),
                                     attention_mask=self._torch.from_numpy(mask))
            vectors = result.text_embeds.float().numpy().astype(np.float64)
            out[batch] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return out

    @staticmethod
    def _progress(batches: list[list[int]], num_prompts: int) -> Any:
        if num_prompts <= 1000:
            return batches
        from tqdm import tqdm

        return tqdm(batches, desc="clip embed", unit="batch")

    @property
    def tag(self) -> str:
        return self._tag
