"""load_trace: trace.limit reads only the rows and embeddings it needs, and loads what the plain reference does."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sim.errors import InputError
from sim.trace import (
    Strings,
    embeddings_path,
    first_appearance,
    load_trace,
    prompt_sha1,
    write_embeddings,
    write_trace,
)

TINY = Path(__file__).resolve().parent.parent / "traces" / "tiny" / "trace.parquet"
DIM = 8


def _unit(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _trace(tmp: Path, prompts: list[str], vectors: dict[str, np.ndarray] | None = None,
           row_group_size: int | None = None, users: list[str | None] | None = None) -> Path:
    """A trace with one request per entry of ``prompts``; embeddings of its distinct prompts (``vectors``
    overrides some), written in first-appearance order."""
    n = len(prompts)
    table = pa.table({"request_id": [f"r{i}" for i in range(n)], "arrival_s": np.arange(n, dtype=float),
                      "prompt": prompts, "user": users if users is not None else [f"u{i % 3}" for i in range(n)]})
    path = tmp / "t.parquet"
    write_trace(table, path)
    if row_group_size:
        pq.write_table(pq.read_table(path), path, row_group_size=row_group_size)
    distinct = list(dict.fromkeys(prompts))
    mat = _unit(len(distinct))
    for i, p in enumerate(distinct):
        if vectors and p in vectors:
            mat[i] = vectors[p]
    write_embeddings(distinct, mat, "test", embeddings_path(path))
    if row_group_size:
        emb = embeddings_path(path)
        pq.write_table(pq.read_table(emb), emb, row_group_size=row_group_size)
    return path


def _reference(path: Path, limit: int | None = None) -> dict[str, Any]:
    """What a trace holds, computed the plain way (whole files, Python dicts)."""
    t = pq.read_table(path).slice(0, limit)
    index_of: dict[str, int] = {}
    idx = [index_of.setdefault(p, len(index_of)) for p in t.column("prompt").to_pylist()]
    prompts = list(index_of)
    emb = pq.read_table(embeddings_path(path))
    row_of = {h: i for i, h in enumerate(emb.column("prompt_sha1").to_pylist())}
    mat = np.asarray(emb.column("vector").to_pylist(), dtype=np.float32)
    return {"request_id": t.column("request_id").to_pylist(), "user": t.column("user").to_pylist(),
            "prompt_index": np.array(idx), "prompts": prompts,
            "vectors": mat[[row_of[prompt_sha1(p)] for p in prompts]]}


@pytest.mark.parametrize("limit", [None, 1, 37, 1000, 3999, 4000, 10**9])
def test_tiny_trace_equals_the_plain_reference_at_every_limit(limit: int | None) -> None:
    trace = load_trace(TINY, limit)
    ref = _reference(TINY, limit)
    assert trace.request_id.tolist() == ref["request_id"]
    assert trace.user.tolist() == ref["user"]
    assert np.array_equal(trace.prompt_index, ref["prompt_index"])
    assert list(trace.prompts) == ref["prompts"]
    assert trace.vectors.dtype == np.float32 and trace.vectors.flags.c_contiguous
    assert np.array_equal(trace.vectors, ref["vectors"])


def test_limit_ignores_invalid_vectors_of_prompts_it_does_not_use(tmp_path: Path) -> None:
    bad = np.full(DIM, np.nan, dtype=np.float32)
    path = _trace(tmp_path, ["a", "b", "a", "c", "d", "e"], vectors={"d": bad, "e": 2 * _unit(1)[0]})
    trace = load_trace(path, limit=4)
    assert list(trace.prompts) == ["a", "b", "c"] and trace.vectors.shape == (3, DIM)
    # The whole trace uses them: both checks still name the first offending prompt, NaN before norm.
    with pytest.raises(InputError, match=r"column 'vector': the embedding of prompt 'd' has NaN or inf"):
        load_trace(path)
    path = _trace(tmp_path, ["a", "b", "a", "c", "d", "e"], vectors={"e": 2 * _unit(1)[0], "d": 3 * _unit(1)[0]})
    with pytest.raises(InputError, match=r"prompt 'd' has norm 3\.0000"):
        load_trace(path)


def test_limit_ignores_rows_beyond_it(tmp_path: Path) -> None:
    path = _trace(tmp_path, ["a", "b", "c", "d"], row_group_size=2)
    table = pq.read_table(path)
    ids = table.column("request_id").to_pylist()
    ids[3] = ids[0]  # a repeated id beyond the limit
    pq.write_table(table.set_column(0, "request_id", pa.array(ids)), path, row_group_size=2)
    assert len(load_trace(path, limit=3)) == 3
    with pytest.raises(InputError, match="row 3 repeats id 'r0'"):
        load_trace(path)


def test_row_groups_no_used_prompt_lives_in_are_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIRVANA_SIM_VECTOR_CACHE", "0")  # the decoder itself, not the cache of its results
    prompts = [f"p{i}" for i in range(20)]
    path = _trace(tmp_path, prompts, row_group_size=4)
    groups: list[list[int]] = []
    real = pq.ParquetFile.iter_batches

    def spy(self: pq.ParquetFile, *args: Any, **kw: Any) -> Any:
        if kw.get("row_groups") is not None:  # the embeddings reader names the row groups it decodes
            groups.append(list(kw["row_groups"]))
        return real(self, *args, **kw)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    trace = load_trace(path, limit=6)
    assert list(trace.prompts) == prompts[:6]
    assert groups == [[0], [1]]  # the vectors of rows 0-3 and 4-7 of 20: groups 2-4 untouched
    assert np.array_equal(trace.vectors, load_trace(path).vectors[:6])


def test_decoded_vectors_are_cached_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second load of a trace maps the decoded vectors from the cache; a changed embeddings file (or
    limit) is another key, never served stale."""
    from sim import vectors_cache

    monkeypatch.setattr(vectors_cache, "DEFAULT_DIR", tmp_path / "cache")
    monkeypatch.setattr(vectors_cache.load_or_make, "__defaults__", (tmp_path / "cache",))
    path = _trace(tmp_path, ["a", "b", "c", "a"])
    first = load_trace(path)
    again = load_trace(path)
    assert isinstance(again.vectors, np.memmap) and np.array_equal(first.vectors, again.vectors)
    assert again.embedder == first.embedder == "test"
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert np.array_equal(load_trace(path, limit=2).vectors, first.vectors[:2])  # its own entry
    emb = embeddings_path(path)
    t = pq.read_table(emb)
    other = _unit(3, seed=5)
    pq.write_table(t.set_column(1, "vector", pa.FixedSizeListArray.from_arrays(pa.array(other.reshape(-1)), DIM)),
                   emb)
    assert np.array_equal(load_trace(path).vectors, other)


def test_a_repeated_digest_must_repeat_its_vector(tmp_path: Path) -> None:
    """A digest written twice with one vector loads; with two different vectors, which one a run used would
    depend on the row order, so it is refused naming both rows."""
    path = _trace(tmp_path, ["a", "b"])
    emb = embeddings_path(path)
    t = pq.read_table(emb)
    first = load_trace(path).vectors
    same = pa.Table.from_arrays(
        [pa.array([prompt_sha1("a"), prompt_sha1("b"), prompt_sha1("a")]),
         pa.FixedSizeListArray.from_arrays(pa.array(first[[0, 1, 0]].reshape(-1)), DIM)], schema=t.schema)
    pq.write_table(pa.concat_tables([t, same]), emb, row_group_size=3)  # repeats within and across groups
    assert np.array_equal(load_trace(path).vectors, first)
    other = _unit(3, seed=9)
    changed = pa.Table.from_arrays(
        [pa.array([prompt_sha1("a"), prompt_sha1("b"), prompt_sha1("a")]),
         pa.FixedSizeListArray.from_arrays(pa.array(other.reshape(-1)), DIM)], schema=t.schema)
    pq.write_table(pa.concat_tables([t, changed]), emb, row_group_size=3)
    with pytest.raises(InputError, match=r"rows 0 and 2 embed the same prompt \(sha1 \w+\) with different vectors"):
        load_trace(path)


def test_empty_ids_empty_samplers_and_arrivals_beyond_the_clock_are_refused(tmp_path: Path) -> None:
    path = _trace(tmp_path, ["a", "b", "c"])
    t = pq.read_table(path)
    cases = [("request_id", pa.array(["r0", "", "r2"]), r"column 'request_id': row 1 is empty"),
             ("sampler", pa.array(["ddim", None, ""]), r"column 'sampler': row 2 is an empty string"),
             ("arrival_s", pa.array([0.0, 1.0, 1e15]),
              r"column 'arrival_s': row 2 is 1000000000000000\.0, expected a finite number in 0\.\.1e\+10 s")]
    for column, values, message in cases:
        pq.write_table(t.set_column(t.schema.get_field_index(column), column, values.cast(t.schema.field(column).type)),
                       path)
        with pytest.raises(InputError, match=message):
            load_trace(path)


def test_a_null_vector_is_an_error_naming_its_file_row_only_when_used(tmp_path: Path) -> None:
    path = _trace(tmp_path, ["a", "b", "c"])
    emb = embeddings_path(path)
    t = pq.read_table(emb)
    rows = t.column("vector").to_pylist()
    rows[2] = None
    pq.write_table(t.set_column(1, "vector", pa.array(rows, t.schema.field("vector").type)), emb)
    assert load_trace(path, limit=2).vectors.shape == (2, DIM)
    with pytest.raises(InputError, match=r"t\.embeddings\.parquet: column 'vector': row 2 is null"):
        load_trace(path)


def test_prompt_errors_name_the_first_bad_row_null_or_blank(tmp_path: Path) -> None:
    for prompts, row in ((["a", "b", " \t", None, "a"], 2), (["a", None, "b", "  ", "\u3000"], 1),
                         (["a", "b", "a", "\x1c"], 3)):  # str.strip's whitespace, as before
        path = _trace(tmp_path, [p if p is not None else "x" for p in prompts])
        t = pq.read_table(path)
        pq.write_table(t.set_column(2, "prompt", pa.array(prompts, pa.string())), path)
        with pytest.raises(InputError, match=rf"column 'prompt': row {row} is empty or null"):
            load_trace(path)


def test_users_are_interned_and_keep_nulls(tmp_path: Path) -> None:
    users = ["ann", None, "bob", "ann", None]
    trace = load_trace(_trace(tmp_path, ["a", "b", "c", "d", "e"], users=users))
    assert trace.user.dtype == object and trace.user.tolist() == users
    assert trace.user[0] is trace.user[3]
    assert trace.sampler.tolist() == [None] * 5


def test_first_appearance_relabels_codes() -> None:
    codes, order = first_appearance(np.array([2, 2, 0, -1, 1, 0]))
    assert codes.tolist() == [0, 0, 1, -1, 2, 1] and order is not None and order.tolist() == [2, 0, 1]
    same, none = first_appearance(np.array([0, -1, 1, 0, 2]))
    assert same.tolist() == [0, -1, 1, 0, 2] and none is None


def test_strings_reads_like_a_list() -> None:
    values = [f"id{i}" for i in range(70_000)]  # more than one batch of iteration
    s = Strings(pa.chunked_array([pa.array(values[:30_000]), pa.array(values[30_000:])]))
    assert len(s) == 70_000 and s[0] == "id0" and s[-1] == "id69999" and s[np.int64(40_000)] == "id40000"
    assert list(s) == values and s.tolist() == values
    assert s[5:8].tolist() == values[5:8] and s[::20_000].tolist() == values[::20_000]
    assert pickle.loads(pickle.dumps(s)).tolist() == values
    assert pa.array(s, pa.string()).to_pylist() == values
    with pytest.raises(IndexError):
        s[70_000]
