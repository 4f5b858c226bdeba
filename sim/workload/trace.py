"""Canonical trace format: a parquet of requests plus a parquet of prompt embeddings beside it.

``T.parquet`` columns (see traces/README.md): request_id (string, unique), arrival_s (float64,
non-decreasing), prompt (string, non-empty), user (string, null = unknown), and optional width,
height, steps (int, null = the experiment's model default) and sampler (string).
``T.embeddings.parquet``: prompt_sha1 (string) and vector (fixed-size list of float32, unit norm),
with the embedder's name and dimension in the schema metadata.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sim.errors import InputError
from sim.fileio import os_reason
from sim.limits import MAX_SIDE_PX, MAX_STEPS
from sim.paths import resolve

REQUIRED = {
    "request_id": pa.string(),
    "arrival_s": pa.float64(),
    "prompt": pa.string(),
    "user": pa.string(),
}
OPTIONAL = {"width": pa.int32(), "height": pa.int32(), "steps": pa.int32(), "sampler": pa.string()}
TRACE_SCHEMA = pa.schema([pa.field(n, t) for n, t in {**REQUIRED, **OPTIONAL}.items()])
#: largest value each optional integer column may hold (sim/limits.py)
INT_BOUNDS = {"width": MAX_SIDE_PX, "height": MAX_SIDE_PX, "steps": MAX_STEPS}


def embeddings_path(trace_path: Path) -> Path:
    return trace_path.with_name(trace_path.name.removesuffix(".parquet") + ".embeddings.parquet")


def prompt_sha1(prompt: str) -> str:
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Trace:
    """A loaded trace: request columns as numpy arrays, prompts deduplicated, embeddings aligned."""

    path: Path
    request_id: np.ndarray  # object (str)
    arrival_s: np.ndarray  # float64
    prompt_index: np.ndarray  # int64 into ``prompts`` / ``vectors``
    user: np.ndarray  # object (str or None)
    width: np.ndarray  # int64, -1 = model default
    height: np.ndarray
    steps: np.ndarray
    sampler: np.ndarray  # object (str or None)
    prompts: list[str]
    vectors: np.ndarray  # float32 [num_prompts, dim], unit norm
    embedder: str

    def __len__(self) -> int:
        return len(self.arrival_s)


def _column(table: pa.Table, name: str, dtype: pa.DataType, file: Path) -> pa.ChunkedArray:
    col = table.column(name)
    if col.type != dtype:
        if pa.types.is_integer(dtype) and pa.types.is_integer(col.type):
            try:
                return col.cast(dtype)
            except pa.ArrowInvalid:  # a value beyond int32: report the row, not Arrow's overflow
                values = col.to_numpy(zero_copy_only=False)
                info = np.iinfo(np.int32)
                row = int(np.flatnonzero((values > info.max) | (values < info.min))[0])
                raise InputError(f"{file}: column '{name}': row {row} is {values[row]}, beyond the "
                                 f"largest accepted value {INT_BOUNDS.get(name, np.iinfo(np.int32).max)}") from None
        if dtype == pa.string() and col.type == pa.large_string():
            return col.cast(dtype)
        if dtype == pa.float64() and (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            return col.cast(dtype)
        raise InputError(f"{file}: column '{name}': expected {dtype}, got {col.type}")
    return col


def read_parquet(file: Path, what: str, shown: str | Path | None = None, columns: list[str] | None = None
                 ) -> pa.Table:
    """The table (or ``columns``) in one parquet file; every file-level problem is an InputError naming the file."""
    name = shown if shown is not None else file
    if str(file) in ("", "."):
        raise InputError(f"{what}: empty path")
    with parquet_errors(file, what, shown):
        if file.is_dir():
            raise InputError(f"{name}: is a directory, expected a {what} parquet file")
        names = pq.read_schema(file).names
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            raise InputError(f"{file}: column '{dup[0]}' appears more than once")
        missing = [c for c in columns or () if c not in names]
        if missing:
            raise InputError(f"{file}: missing column '{missing[0]}' (has {names})")
        table = pq.read_table(file, columns=columns)
    return table


@contextmanager
def parquet_errors(file: Path, what: str, shown: str | Path | None = None) -> Iterator[None]:
    """Opening or reading a parquet file: not found, unreadable, or not parquet at all become one
    InputError naming the file (``shown``: how the user wrote it)."""
    name = shown if shown is not None else file
    try:
        yield
    except FileNotFoundError:
        raise InputError(f"{name}: {what} file not found") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory, expected a {what} parquet file") from None
    except OSError as exc:
        if exc.errno is not None:
            raise InputError(f"{name}: cannot read the {what} ({os_reason(exc)})") from None
        raise InputError(f"{file}: not a readable parquet file ({_short(exc)})") from None
    except pa.ArrowException as exc:
        raise InputError(f"{file}: not a readable parquet file ({_short(exc)})") from None


def _exists(file: Path) -> bool:
    try:
        return file.exists() or file.is_symlink()
    except OSError:  # a name too long: read_parquet names the problem
        return True


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."


def load_trace(path: str | Path, limit: int | None = None) -> Trace:
    """Load and validate a trace; ``limit`` keeps the first N requests (N above the length keeps all)."""
    file = resolve(path)
    if not str(path).strip():
        raise InputError("trace.path: empty path")
    if not _exists(file):
        hint = " (build the default experiment's trace with `make traces`)" if "traces/synth/" in str(path) else ""
        raise InputError(f"{path}: trace file not found{hint}")
    table = read_parquet(file, "trace", shown=path)
    for name in REQUIRED:
        if name not in table.column_names:
            raise InputError(f"{file}: missing required column '{name}' (has {table.column_names})")
    if limit is not None:
        table = table.slice(0, min(limit, table.num_rows))
    n = table.num_rows
    if n == 0:
        raise InputError(f"{file}: the trace has no requests")

    request_id = np.asarray(utf8_strings(_column(table, "request_id", pa.string(), file), "request_id", file),
                            dtype=object)
    arrival_col = _column(table, "arrival_s", pa.float64(), file)
    if arrival_col.null_count:
        raise InputError(f"{file}: column 'arrival_s': row {_first_null(arrival_col)} is null")
    arrival = arrival_col.to_numpy()
    bad = np.flatnonzero(~np.isfinite(arrival) | (arrival < 0))
    if len(bad):
        raise InputError(
            f"{file}: column 'arrival_s': row {bad[0]} is {arrival[bad[0]]}, expected a finite number >= 0"
        )
    back = np.flatnonzero(np.diff(arrival) < 0)
    if len(back):
        i = back[0] + 1
        raise InputError(
            f"{file}: column 'arrival_s': row {i} ({arrival[i]}) is earlier than row {i - 1} "
            f"({arrival[i - 1]}); sort the trace by arrival"
        )
    if None in request_id:
        raise InputError(f"{file}: column 'request_id': row {list(request_id).index(None)} is null")
    if len(set(request_id)) != n:
        seen: set[str] = set()
        for i, rid in enumerate(request_id):
            if rid in seen:
                raise InputError(f"{file}: column 'request_id': row {i} repeats id {rid!r}")
            seen.add(rid)

    prompt_list = utf8_strings(_column(table, "prompt", pa.string(), file), "prompt", file)
    prompts: list[str] = []
    index_of: dict[str, int] = {}
    prompt_index = np.empty(n, dtype=np.int64)
    for i, p in enumerate(prompt_list):
        if p is None or not p.strip():
            raise InputError(f"{file}: column 'prompt': row {i} is empty or null")
        j = index_of.get(p)
        if j is None:
            j = index_of[p] = len(prompts)
            prompts.append(p)
        prompt_index[i] = j

    user = np.asarray(utf8_strings(_column(table, "user", pa.string(), file), "user", file), dtype=object)
    ints = {}
    for name in ("width", "height", "steps"):
        if name in table.column_names:
            col = _column(table, name, pa.int32(), file)
            ints[name] = np.asarray(col.fill_null(-1).to_numpy(), dtype=np.int64)
            bad = np.flatnonzero(((ints[name] < 1) & (ints[name] != -1)) | (ints[name] > INT_BOUNDS[name]))
            if len(bad):
                raise InputError(
                    f"{file}: column '{name}': row {bad[0]} is {ints[name][bad[0]]}, "
                    f"expected an integer in 1..{INT_BOUNDS[name]} or null"
                )
        else:
            ints[name] = np.full(n, -1, dtype=np.int64)
    if "sampler" in table.column_names:
        sampler = np.asarray(utf8_strings(_column(table, "sampler", pa.string(), file), "sampler", file),
                             dtype=object)
    else:
        sampler = np.full(n, None, dtype=object)

    vectors, embedder = _load_embeddings(embeddings_path(file), prompts)
    return Trace(file, request_id, arrival, prompt_index, user, ints["width"], ints["height"],
                 ints["steps"], sampler, prompts, vectors, embedder)


def utf8_strings(col: pa.ChunkedArray, name: str, file: Path) -> list[str | None]:
    """A string column as Python values; bytes that are not UTF-8 are an error naming the row.

    Parquet readers do not validate string columns, so a writer's bad bytes surface only here.
    """
    try:
        return col.to_pylist()
    except UnicodeDecodeError:
        row = 0
        for chunk in col.chunks:
            for value in chunk:
                try:
                    value.as_py()
                except UnicodeDecodeError as exc:
                    raise InputError(f"{file}: column '{name}': row {row} is not valid UTF-8 ({exc.reason} at "
                                     f"byte {exc.start}: {exc.object[max(0, exc.start - 20):exc.end + 20]!r})"
                                     ) from None
                row += 1
        raise


def _first_null(col: pa.ChunkedArray) -> int:
    return int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])


def _load_embeddings(file: Path, prompts: list[str]) -> tuple[np.ndarray, str]:
    if not _exists(file):
        raise InputError(f"{file}: embeddings file not found (every trace needs one beside it; "
                         "`python -m sim trace embed` writes it)")
    table = read_parquet(file, "embeddings")
    meta = table.schema.metadata or {}
    try:
        embedder = meta.get(b"embedder", b"").decode()
        declared = meta.get(b"dim", b"").decode()
    except UnicodeDecodeError:
        raise InputError(f"{file}: schema metadata 'embedder' or 'dim' is not UTF-8") from None
    if not embedder:
        raise InputError(f"{file}: schema metadata 'embedder' is missing (which model made these vectors?)")
    for name in ("prompt_sha1", "vector"):
        if name not in table.column_names:
            raise InputError(f"{file}: missing column '{name}'")
    vtype = table.schema.field("vector").type
    if not pa.types.is_fixed_size_list(vtype) or vtype.value_type != pa.float32():
        raise InputError(f"{file}: column 'vector': expected fixed_size_list<float32>, got {vtype}")
    dim = vtype.list_size
    if dim < 1:
        raise InputError(f"{file}: column 'vector': expected at least one value per row, got {dim}")
    if declared != str(dim):
        raise InputError(f"{file}: schema metadata 'dim' is {declared or 'missing'!r} but column 'vector' "
                         f"holds {dim} values per row (were the vectors rewritten by another embedder?)")
    if table.column("vector").null_count:
        raise InputError(f"{file}: column 'vector': row {_first_null(table.column('vector'))} is null")
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    mat = np.asarray(flat, dtype=np.float32).reshape(-1, dim)
    sha_col = table.column("prompt_sha1")
    if not pa.types.is_string(sha_col.type) and not pa.types.is_large_string(sha_col.type):
        raise InputError(f"{file}: column 'prompt_sha1': expected string, got {sha_col.type}")
    row_of = {h: i for i, h in enumerate(utf8_strings(sha_col, "prompt_sha1", file))}
    rows = np.empty(len(prompts), dtype=np.int64)
    for j, p in enumerate(prompts):
        r = row_of.get(prompt_sha1(p))
        if r is None:
            raise InputError(f"{file}: no embedding for prompt {p[:60]!r} (sha1 {prompt_sha1(p)})")
        rows[j] = r
    vectors = mat[rows]
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad):
        raise InputError(f"{file}: column 'vector': the embedding of prompt {prompts[bad[0]][:60]!r} has NaN or inf")
    norms = np.linalg.norm(vectors, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > 1e-3)
    if len(bad):
        raise InputError(
            f"{file}: column 'vector': expected unit-norm vectors, the embedding of prompt "
            f"{prompts[bad[0]][:60]!r} has norm {norms[bad[0]]:.4f}"
        )
    return np.ascontiguousarray(vectors), embedder


def write_trace(table: pa.Table, path: Path) -> None:
    """Write a trace table in the canonical schema (columns missing from ``table`` become nulls)."""
    cols = []
    for field in TRACE_SCHEMA:
        if field.name in table.column_names:
            cols.append(table.column(field.name).cast(field.type))
        else:
            cols.append(pa.nulls(table.num_rows, field.type))
    pq.write_table(pa.Table.from_arrays(cols, schema=TRACE_SCHEMA), path)


def write_embeddings(prompts: list[str], vectors: np.ndarray, embedder: str, path: Path) -> None:
    vectors = np.asarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    arr = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
    schema = pa.schema([("prompt_sha1", pa.string()), ("vector", pa.list_(pa.float32(), dim))],
                       metadata={"embedder": embedder, "dim": str(dim)})
    table = pa.Table.from_arrays([pa.array([prompt_sha1(p) for p in prompts]), arr], schema=schema)
    pq.write_table(table, path)
