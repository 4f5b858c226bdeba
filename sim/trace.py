"""Canonical trace format: a parquet of requests plus a parquet of prompt embeddings beside it.

``T.parquet`` columns (see traces/README.md): request_id (string, unique), arrival_s (float64,
non-decreasing), prompt (string, non-empty), user (string, null = unknown), and optional width,
height, steps (int, null = the experiment's model default) and sampler (string).
``T.embeddings.parquet``: prompt_sha1 (string) and vector (fixed-size list of float32, unit norm),
with the embedder's name and dimension in the schema metadata.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sim import vectors_cache
from sim.errors import InputError
from sim.fileio import os_reason
from sim.limits import MAX_ARRIVAL_S, MAX_SIDE_PX, MAX_STEPS
from sim.paths import resolve

REQUIRED = {
    "request_id": pa.string(),
    "arrival_s": pa.float64(),
    "prompt": pa.string(),
    "user": pa.string(),
}
OPTIONAL = {"width": pa.int32(), "height": pa.int32(), "steps": pa.int32(), "sampler": pa.string()}
#: a trace made by a generator that knows its content may add each request's topic (see PartitionGuarantee)
TOPIC_FIELD = pa.field("topic", pa.int64())
#: schema metadata key of a trace's partition guarantee (PartitionGuarantee, JSON)
GUARANTEE_KEY = b"partition_guarantee"
TRACE_SCHEMA = pa.schema([pa.field(n, t) for n, t in {**REQUIRED, **OPTIONAL}.items()])
#: largest value each optional integer column may hold (sim/limits.py)
INT_BOUNDS = {"width": MAX_SIDE_PX, "height": MAX_SIDE_PX, "steps": MAX_STEPS}
#: rows per Arrow batch when a file is read in pieces (``trace.limit``) or a column is turned into Python values
BATCH_ROWS = 65_536


def embeddings_path(trace_path: Path) -> Path:
    return trace_path.with_name(trace_path.name.removesuffix(".parquet") + ".embeddings.parquet")


def prompt_sha1(prompt: str) -> str:
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PartitionGuarantee:
    """What a trace's maker guarantees about its ``topic`` column: prompts of different topics are independent
    unit vectors, each uniformly distributed on the sphere of ``dim`` dimensions (kind ``independent_uniform``:
    the synthetic generator's vectors modes, whose topics grow from independent random directions). For such
    a pair P(cosine >= f) <= exp(-dim f^2 / 2) (the measure of a spherical cap: K. Ball, An Elementary
    Introduction to Modern Convex Geometry, 1997, Lemma 2.2), so no two prompts of different topics reach a
    similarity floor f, except with the probability ``violation_bound`` gives."""

    kind: str
    dim: int

    def violation_bound(self, num_prompts: int, floor: float) -> float:
        """An upper bound on the expected number of cross-topic pairs at cosine >= ``floor`` (a union bound)."""
        if floor <= 0:
            return float("inf")
        return num_prompts * (num_prompts - 1) / 2 * math.exp(-self.dim * floor * floor / 2)


#: a partition guarantee is relied on only where this bound on expected violating pairs holds
MAX_EXPECTED_VIOLATIONS = 1e-9


@dataclass(frozen=True)
class Trace:
    """A loaded trace: request columns as numpy arrays, prompts deduplicated, embeddings aligned."""

    path: Path
    request_id: Strings  # unique, never null
    arrival_s: np.ndarray  # float64
    prompt_index: np.ndarray  # int64 into ``prompts`` / ``vectors``
    user: np.ndarray  # object (str or None; equal names are one object)
    width: np.ndarray  # int64, -1 = model default
    height: np.ndarray
    steps: np.ndarray
    sampler: np.ndarray  # object (str or None; equal names are one object)
    prompts: Strings  # distinct, in order of first appearance
    vectors: np.ndarray  # float32 [num_prompts, dim], unit norm
    embedder: str
    #: int64 topic of each distinct prompt (the optional ``topic`` column), and what the trace guarantees
    #: about it (schema metadata); None when the trace has none
    topic: np.ndarray | None = None
    guarantee: PartitionGuarantee | None = None

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


def read_parquet(file: Path, what: str, shown: str | Path | None = None, columns: list[str] | None = None,
                 limit: int | None = None) -> pa.Table:
    """The table (or ``columns``) in one parquet file, or its first ``limit`` rows (only the row groups and
    pages holding them are read); every file-level problem is an InputError naming the file."""
    if str(file) in ("", "."):
        raise InputError(f"{what}: empty path")
    with parquet_errors(file, what, shown):
        pf = _open_parquet(file, what, shown if shown is not None else file, columns)
        if limit is None:
            pf.close()
            return pq.read_table(file, columns=columns)
        batches = []
        rows = 0
        for batch in pf.iter_batches(batch_size=min(max(limit, 1), BATCH_ROWS), columns=columns):
            batches.append(batch)
            rows += batch.num_rows
            if rows >= limit:
                break
        schema = pf.schema_arrow
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)
        return pa.Table.from_batches(batches, schema=schema if not batches else None).slice(0, limit)


def _open_parquet(file: Path, what: str, name: str | Path, columns: list[str] | None = None,
                  **options: Any) -> pq.ParquetFile:
    """A parquet file opened for reading, after the checks every reader makes (a directory, a column named
    twice, a requested column missing); call inside ``parquet_errors``."""
    if file.is_dir():
        raise InputError(f"{name}: is a directory, expected a {what} parquet file")
    pf = pq.ParquetFile(file, **options)
    names = pf.schema_arrow.names
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise InputError(f"{file}: column '{dup[0]}' appears more than once")
    missing = [c for c in columns or () if c not in names]
    if missing:
        raise InputError(f"{file}: missing column '{missing[0]}' (has {names})")
    return pf


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
    """Load and validate a trace; ``limit`` keeps the first N requests (N above the length keeps all).

    With a limit only the first N rows of the request file are read, and only the embeddings of the prompts
    those rows use (their vectors alone are validated)."""
    file = resolve(path)
    if not str(path).strip():
        raise InputError("trace.path: empty path")
    if not _exists(file):
        hint = " (build the default experiment's trace with `make traces`)" if "traces/synth/" in str(path) else ""
        raise InputError(f"{path}: trace file not found{hint}")
    table = read_parquet(file, "trace", shown=path, limit=limit)
    for name in REQUIRED:
        if name not in table.column_names:
            raise InputError(f"{file}: missing required column '{name}' (has {table.column_names})")
    n = table.num_rows
    if n == 0:
        raise InputError(f"{file}: the trace has no requests")

    request_id = _request_ids(table, file, n)
    arrival = _arrivals(table, file)
    prompt_index, prompts, sha1s = _prompts(_text(table, "prompt", file), file)
    topic = _topics(table, file, prompt_index, len(prompts))
    guarantee = _guarantee(table.schema.metadata or {}, file, topic is not None)
    user = _interned(_text(table, "user", file))
    ints = {name: _optional_ints(table, name, file) for name in ("width", "height", "steps")}
    if "sampler" in table.column_names:
        sampler_col = _text(table, "sampler", file)
        empty = pc.equal(pc.utf8_length(sampler_col), 0)
        if pc.any(empty).as_py():
            raise InputError(f"{file}: column 'sampler': row {_first_true(empty)} is an empty string (a sampler "
                             "name, or null for the run's model.sampler)")
        sampler = _interned(sampler_col)
    else:
        sampler = np.full(n, None, dtype=object)
    del table
    pa.default_memory_pool().release_unused()  # before the vectors: pyarrow's allocator keeps freed buffers

    emb = embeddings_path(file)
    if vectors_cache.enabled() and _exists(emb):
        vectors, embedder = vectors_cache.load_or_make(file, emb, limit, lambda: _load_embeddings(emb, prompts, sha1s))
    else:
        vectors, embedder = _load_embeddings(emb, prompts, sha1s)
    pa.default_memory_pool().release_unused()
    return Trace(file, Strings(request_id), arrival, prompt_index, user, ints["width"], ints["height"],
                 ints["steps"], sampler, Strings(prompts), vectors, embedder, topic, guarantee)


def _arrivals(table: pa.Table, file: Path) -> np.ndarray:
    """arrival_s: finite, >= 0, within the simulated clock's range, non-decreasing (errors name the row)."""
    col = _column(table, "arrival_s", pa.float64(), file)
    if col.null_count:
        raise InputError(f"{file}: column 'arrival_s': row {_first_null(col)} is null")
    arrival = col.to_numpy()
    bad = np.flatnonzero(~np.isfinite(arrival) | (arrival < 0) | (arrival > MAX_ARRIVAL_S))
    if len(bad):
        raise InputError(f"{file}: column 'arrival_s': row {bad[0]} is {arrival[bad[0]]}, expected a finite number "
                         f"in 0..{MAX_ARRIVAL_S:g} s (beyond it float64 seconds lose the microseconds a request's "
                         "stages take)")
    back = np.flatnonzero(np.diff(arrival) < 0)
    if len(back):
        i = back[0] + 1
        raise InputError(f"{file}: column 'arrival_s': row {i} ({arrival[i]}) is earlier than row {i - 1} "
                         f"({arrival[i - 1]}); sort the trace by arrival")
    return arrival


def _request_ids(table: pa.Table, file: Path, n: int) -> pa.ChunkedArray:
    """request_id: non-null, non-empty, unique (errors name the row)."""
    request_id = _text(table, "request_id", file)
    if request_id.null_count:
        raise InputError(f"{file}: column 'request_id': row {_first_null(request_id)} is null")
    empty = pc.equal(pc.utf8_length(request_id), 0)
    if pc.any(empty).as_py():
        raise InputError(f"{file}: column 'request_id': row {_first_true(empty)} is empty")
    if pc.count_distinct(request_id).as_py() != n:
        seen: set[str] = set()
        for i, rid in enumerate(Strings(request_id)):
            if rid in seen:
                raise InputError(f"{file}: column 'request_id': row {i} repeats id {rid!r}")
            seen.add(rid)
    return request_id


def _optional_ints(table: pa.Table, name: str, file: Path) -> np.ndarray:
    """An optional integer column (width, height, steps): -1 where null or absent, else within its bounds."""
    if name not in table.column_names:
        return np.full(table.num_rows, -1, dtype=np.int64)
    values = np.asarray(_column(table, name, pa.int32(), file).fill_null(-1).to_numpy(), dtype=np.int64)
    bad = np.flatnonzero(((values < 1) & (values != -1)) | (values > INT_BOUNDS[name]))
    if len(bad):
        raise InputError(f"{file}: column '{name}': row {bad[0]} is {values[bad[0]]}, "
                         f"expected an integer in 1..{INT_BOUNDS[name]} or null")
    return values


def _topics(table: pa.Table, file: Path, prompt_index: np.ndarray, num_prompts: int) -> np.ndarray | None:
    """The topic of each distinct prompt from the optional ``topic`` column (non-null, one per prompt)."""
    if "topic" not in table.column_names:
        return None
    col = _column(table, "topic", pa.int64(), file)
    if col.null_count:
        raise InputError(f"{file}: column 'topic': row {_first_null(col)} is null (a topic column names every row's)")
    values = np.asarray(col.to_numpy(), dtype=np.int64)
    topic = np.empty(num_prompts, dtype=np.int64)
    topic[prompt_index] = values
    bad = np.flatnonzero(topic[prompt_index] != values)
    if len(bad):
        i = int(bad[0])
        first = int(np.flatnonzero(prompt_index == prompt_index[i])[0])
        raise InputError(f"{file}: column 'topic': row {i} puts its prompt in topic {values[i]}, row {first} in "
                         f"topic {values[first]}; a prompt has one topic")
    return topic


def _guarantee(meta: dict[bytes, bytes], file: Path, has_topics: bool) -> PartitionGuarantee | None:
    """The trace's partition guarantee (schema metadata), checked."""
    raw = meta.get(GUARANTEE_KEY)
    if raw is None:
        return None
    where = f"{file}: schema metadata '{GUARANTEE_KEY.decode()}'"
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{where}: not JSON") from None
    if not isinstance(data, dict) or data.get("kind") != "independent_uniform" or set(data) != {"kind", "dim"} \
            or not isinstance(data.get("dim"), int) or isinstance(data["dim"], bool) or data["dim"] < 1:
        raise InputError(f"{where}: expected {{\"kind\": \"independent_uniform\", \"dim\": <positive integer>}}, "
                         f"got {raw.decode(errors='replace')[:120]!r}")
    if not has_topics:
        raise InputError(f"{where}: a guarantee about topics, but the trace has no 'topic' column")
    return PartitionGuarantee(data["kind"], data["dim"])


def _first_true(mask: pa.ChunkedArray) -> int:
    return int(np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))[0])


def _text(table: pa.Table, name: str, file: Path) -> pa.ChunkedArray:
    """A string column, its bytes checked to be UTF-8 (an error names the row); no Python objects made."""
    col = _column(table, name, pa.string(), file)
    try:
        for chunk in col.chunks:
            chunk.validate(full=True)
    except pa.ArrowInvalid as exc:
        utf8_strings(col, name, file)  # names the row of bad UTF-8
        raise InputError(f"{file}: column '{name}': {_short(exc)}") from None
    return col


def _interned(col: pa.ChunkedArray) -> np.ndarray:
    """An object array of a column's values in which equal strings are one Python object (8 bytes per row)."""
    distinct = pc.unique(col)
    values = np.empty(len(distinct), dtype=object)
    values[:] = distinct.to_pylist()
    codes = pc.index_in(col, value_set=distinct, skip_nulls=False)
    return values[np.asarray(codes.to_numpy(), dtype=np.int64)]


def _prompts(col: pa.ChunkedArray, file: Path) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """(prompt_index per row, distinct prompts in order of first appearance, their SHA-1s); an empty or
    null prompt is an error naming its first row."""
    distinct = pc.unique(col).drop_null()
    codes = np.asarray(pc.index_in(col, value_set=distinct).fill_null(-1).to_numpy(), dtype=np.int64)
    codes, order = first_appearance(codes)
    if order is not None:
        distinct = distinct.take(pa.array(order))
    empty = -1
    digests: list[pa.Array] = []  # per batch, so that no list of a str per prompt is ever held
    for lo in range(0, len(distinct), BATCH_ROWS):
        batch = distinct.slice(lo, BATCH_ROWS).to_pylist()
        for k, p in enumerate(batch):
            if not p.strip() and empty < 0:
                empty = lo + k
        digests.append(pa.array([prompt_sha1(p) for p in batch], pa.string()))
    if empty >= 0 or col.null_count:
        rows = ([int(np.argmax(codes == -1))] if col.null_count else []) + \
               ([int(np.argmax(codes == empty))] if empty >= 0 else [])
        raise InputError(f"{file}: column 'prompt': row {min(rows)} is empty or null")
    return codes, distinct, pa.concat_arrays(digests) if digests else pa.array([], pa.string())


def first_appearance(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Relabel codes (-1 = none) so that ids number values in order of first appearance; returns the codes and
    ``order`` (new id -> old id), or None when they were already so numbered."""
    valid = codes >= 0
    seen = np.maximum.accumulate(np.where(valid, codes, -1))
    before = np.concatenate(([-1], seen[:-1]))
    if np.all(codes[valid] <= before[valid] + 1):
        return codes, None
    _, first = np.unique(codes[valid], return_index=True)
    old_ids = codes[valid][np.sort(first)]  # old ids by first appearance
    new_of = np.empty(int(codes.max()) + 1, dtype=np.int64)
    new_of[old_ids] = np.arange(len(old_ids))
    return np.where(valid, new_of[np.maximum(codes, 0)], -1), old_ids


class Strings(Sequence[str]):
    """A read-only string column kept as Arrow arrays (offsets and UTF-8 bytes: about 4 bytes per row plus the
    text) instead of one Python object per row; values become ``str`` only when read."""

    __slots__ = ("_col",)

    def __init__(self, col: pa.Array | pa.ChunkedArray) -> None:
        self._col = col if isinstance(col, pa.ChunkedArray) else pa.chunked_array([col], col.type)

    def __len__(self) -> int:
        return len(self._col)

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> Strings: ...

    def __getitem__(self, i: int | slice) -> str | Strings:
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self._col))
            if step != 1:
                return Strings(pa.array(self.tolist()[i], pa.string()))
            return Strings(self._col.slice(lo, max(0, hi - lo)))
        value: str = self._col[int(i)].as_py()
        return value

    def __iter__(self) -> Iterator[str]:
        for lo in range(0, len(self._col), BATCH_ROWS):
            yield from self._col.slice(lo, BATCH_ROWS).to_pylist()

    def __reduce__(self) -> tuple[type[Strings], tuple[pa.ChunkedArray]]:
        return Strings, (self._col,)

    def __repr__(self) -> str:
        return f"Strings({len(self)} values)"

    def tolist(self) -> list[str]:
        values: list[str] = self._col.to_pylist()
        return values

    def __arrow_array__(self, type: pa.DataType | None = None) -> pa.Array:
        arr = self._col.combine_chunks()
        return arr if type is None or type == arr.type else arr.cast(type)

    @property
    def nbytes(self) -> int:
        return int(self._col.nbytes)


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


def _first_null(col: pa.ChunkedArray | pa.Array) -> int:
    return int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])


#: rows of the embeddings file decoded at a time (16K x 384-d float32 = 25 MB)
EMBEDDING_BATCH_ROWS = 16_384


def _load_embeddings(file: Path, prompts: pa.Array, sha1s: pa.Array) -> tuple[np.ndarray, str]:
    """The vectors of ``prompts`` (float32 [len(prompts), dim], C order), read batch by batch straight into
    their rows: only the file's rows those prompts use are decoded, converted and validated."""
    if not _exists(file):
        raise InputError(f"{file}: embeddings file not found (every trace needs one beside it; "
                         "`python -m sim trace embed` writes it)")
    with parquet_errors(file, "embeddings"):
        pf = _open_parquet(file, "embeddings", file, pre_buffer=False, buffer_size=1 << 22)
        embedder, dim = _embeddings_schema(pf, file)
        row_of, repeats = _file_rows(pf, file, prompts, sha1s)
        vectors, check = _read_vectors(pf, file, row_of, dim)
        if len(repeats):
            _check_repeats(pf, file, repeats, dim)
    if check.nan_prompt < len(prompts):
        raise InputError(f"{file}: column 'vector': the embedding of prompt "
                         f"{prompts[check.nan_prompt].as_py()[:60]!r} has NaN or inf")
    if check.norm_prompt < len(prompts):
        raise InputError(
            f"{file}: column 'vector': expected unit-norm vectors, the embedding of prompt "
            f"{prompts[check.norm_prompt].as_py()[:60]!r} has norm {check.norm_value:.4f}"
        )
    return vectors, embedder


def _embeddings_schema(pf: pq.ParquetFile, file: Path) -> tuple[str, int]:
    """(embedder tag, dimension) from an embeddings file's schema, checked."""
    schema = pf.schema_arrow
    meta = schema.metadata or {}
    try:
        embedder = meta.get(b"embedder", b"").decode()
        declared = meta.get(b"dim", b"").decode()
    except UnicodeDecodeError:
        raise InputError(f"{file}: schema metadata 'embedder' or 'dim' is not UTF-8") from None
    if not embedder:
        raise InputError(f"{file}: schema metadata 'embedder' is missing (which model made these vectors?)")
    for name in ("prompt_sha1", "vector"):
        if name not in schema.names:
            raise InputError(f"{file}: missing column '{name}'")
    vtype = schema.field("vector").type
    if not pa.types.is_fixed_size_list(vtype) or vtype.value_type != pa.float32():
        raise InputError(f"{file}: column 'vector': expected fixed_size_list<float32>, got {vtype}")
    dim = vtype.list_size
    if dim < 1:
        raise InputError(f"{file}: column 'vector': expected at least one value per row, got {dim}")
    if declared != str(dim):
        raise InputError(f"{file}: schema metadata 'dim' is {declared or 'missing'!r} but column 'vector' "
                         f"holds {dim} values per row (were the vectors rewritten by another embedder?)")
    return embedder, dim


def _file_rows(pf: pq.ParquetFile, file: Path, prompts: pa.Array, sha1s: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(the file row of each prompt's embedding, the last where a digest repeats; the file rows of used digests
    that appear more than once, which must hold one vector)."""
    sha_col = pf.read(columns=["prompt_sha1"]).column(0)
    if not pa.types.is_string(sha_col.type) and not pa.types.is_large_string(sha_col.type):
        raise InputError(f"{file}: column 'prompt_sha1': expected string, got {sha_col.type}")
    try:
        for chunk in sha_col.chunks:
            chunk.validate(full=True)
    except pa.ArrowInvalid:
        utf8_strings(sha_col, "prompt_sha1", file)  # names the row
        raise
    code = np.asarray(pc.index_in(sha_col.cast(pa.string()), value_set=sha1s).fill_null(-1).to_numpy(),
                      dtype=np.int64)
    del sha_col
    used = np.flatnonzero(code >= 0)
    row_of = np.full(len(prompts), -1, dtype=np.int64)
    np.maximum.at(row_of, code[used], used)
    missing = np.flatnonzero(row_of < 0)
    if len(missing):
        j = int(missing[0])
        raise InputError(f"{file}: no embedding for prompt {prompts[j].as_py()[:60]!r} (sha1 {sha1s[j].as_py()})")
    counts = np.bincount(code[used], minlength=len(prompts))
    repeats = used[counts[code[used]] > 1]
    pa.default_memory_pool().release_unused()
    return row_of, repeats


@dataclass
class _VectorCheck:
    """The first prompt (in trace order) whose vector is not finite, and the first not of unit norm."""

    nan_prompt: int
    norm_prompt: int
    norm_value: float = 0.0

    def rows(self, rows: np.ndarray, targets: np.ndarray) -> None:
        bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
        if len(bad):
            self.nan_prompt = min(self.nan_prompt, int(targets[bad].min()))
        norms = np.linalg.norm(rows, axis=1)
        bad = np.flatnonzero(np.abs(norms - 1.0) > 1e-3)
        if len(bad):
            first = bad[np.argmin(targets[bad])]
            if targets[first] < self.norm_prompt:
                self.norm_prompt, self.norm_value = int(targets[first]), float(norms[first])


def _read_vectors(pf: pq.ParquetFile, file: Path, row_of: np.ndarray, dim: int) -> tuple[np.ndarray, _VectorCheck]:
    """Each prompt's vector from its file row; row groups and batches no prompt uses are never decoded."""
    by_row = np.argsort(row_of, kind="stable")  # prompts in file order
    file_rows = row_of[by_row]
    vectors = np.empty((len(row_of), dim), dtype=np.float32)
    check = _VectorCheck(len(row_of), len(row_of))
    start = 0
    for g in range(pf.metadata.num_row_groups):
        stop = start + pf.metadata.row_group(g).num_rows
        lo, hi = np.searchsorted(file_rows, (start, stop))
        pos = start
        for batch in pf.iter_batches(batch_size=EMBEDDING_BATCH_ROWS, row_groups=[g], columns=["vector"]) \
                if lo < hi else ():
            a, b = np.searchsorted(file_rows, (pos, pos + batch.num_rows))
            if a < b:
                rows = _rows(batch.column(0), file_rows[a:b] - pos, pos, dim, file)
                check.rows(rows, by_row[a:b])
                vectors[by_row[a:b]] = rows
            pos += batch.num_rows
        start = stop
    return vectors, check


def _rows(col: pa.FixedSizeListArray, local: np.ndarray, pos: int, dim: int, file: Path) -> np.ndarray:
    """Rows ``local`` of a vector column batch (starting at file row ``pos``) as float32 [len(local), dim]."""
    if col.null_count:
        nulls = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False)[local])
        if len(nulls):
            raise InputError(f"{file}: column 'vector': row {pos + local[nulls[0]]} is null")
    return _matrix(col, dim)[local]


def _check_repeats(pf: pq.ParquetFile, file: Path, repeats: np.ndarray, dim: int) -> None:
    """Rows that repeat a used prompt's digest must hold the same vector (else which one the run used would
    depend on the row order)."""
    table = pf.read(columns=["prompt_sha1", "vector"])
    sha = table.column(0).take(pa.array(repeats)).to_pylist()
    col = table.column(1).take(pa.array(repeats)).combine_chunks()
    vecs = _matrix(col, dim) if not col.null_count else None
    first: dict[str, int] = {}
    for k, digest in enumerate(sha):
        j = first.setdefault(digest, k)
        if vecs is None or not np.array_equal(vecs[j], vecs[k]):
            raise InputError(f"{file}: rows {int(repeats[j])} and {int(repeats[k])} embed the same prompt (sha1 "
                             f"{digest}) with different vectors; keep one")


def _matrix(col: pa.FixedSizeListArray, dim: int) -> np.ndarray:
    """A fixed-size-list<float32> array as a float32 [rows, dim] view of its buffer (a copy, with NaN for
    null values, only when some value is null)."""
    values = col.values.slice(col.offset * dim, len(col) * dim)
    flat = values.to_numpy(zero_copy_only=not values.null_count)
    return np.asarray(flat, dtype=np.float32).reshape(len(col), dim)


def write_trace(table: pa.Table, path: Path, guarantee: PartitionGuarantee | None = None) -> None:
    """Write a trace table in the canonical schema (optional columns missing from ``table`` become nulls; a
    ``topic`` column only when the table has one), with its partition guarantee, if any, in the metadata."""
    cols, fields = [], list(TRACE_SCHEMA)
    for field in TRACE_SCHEMA:
        if field.name in table.column_names:
            cols.append(table.column(field.name).cast(field.type))
        else:
            cols.append(pa.nulls(table.num_rows, field.type))
    if TOPIC_FIELD.name in table.column_names:
        cols.append(table.column(TOPIC_FIELD.name).cast(TOPIC_FIELD.type))
        fields.append(TOPIC_FIELD)
    meta = {GUARANTEE_KEY: json.dumps({"kind": guarantee.kind, "dim": guarantee.dim})} if guarantee else None
    pq.write_table(pa.Table.from_arrays(cols, schema=pa.schema(fields, metadata=meta)), path)


def write_embeddings(prompts: list[str], vectors: np.ndarray, embedder: str, path: Path) -> None:
    vectors = np.asarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    arr = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
    schema = pa.schema([("prompt_sha1", pa.string()), ("vector", pa.list_(pa.float32(), dim))],
                       metadata={"embedder": embedder, "dim": str(dim)})
    table = pa.Table.from_arrays([pa.array([prompt_sha1(p) for p in prompts]), arr], schema=schema)
    pq.write_table(table, path)
