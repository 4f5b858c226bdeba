"""File helpers shared by loaders and writers: strict YAML mapping reads, output-path checks and atomic writes."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from sim.errors import InputError, SimError

#: nesting deeper than this is not a config: reject it before the YAML parser recurses
MAX_YAML_DEPTH = 64
#: YAML files larger than this are not configs or profiles (a trace given as YAML, say)
MAX_YAML_BYTES = 64 * 1024 * 1024


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key repeated in one mapping (PyYAML silently keeps the last)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {key!r}", key_node.start_mark) from None
        if key in seen:
            raise _DuplicateKey(key, key_node.start_mark.line + 1, seen[key])
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key!r} on line {line} (first on line {first_line})")
        self.key, self.line, self.first_line = key, line, first_line


def _depth(text: str) -> int:
    """An upper bound on flow/block nesting (brackets and indentation), cheap and recursion-free."""
    deepest = depth = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(depth - 1, 0)
    indent = max((len(line) - len(line.lstrip(" ")) for line in text.splitlines()), default=0)
    return max(deepest, indent // 2)


def parse_yaml(text: str) -> Any:
    """Parse YAML strictly: duplicate keys and absurd nesting raise ``yaml.YAMLError``."""
    if _depth(text) > MAX_YAML_DEPTH:
        raise yaml.YAMLError(f"nested deeper than {MAX_YAML_DEPTH} levels")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except RecursionError:
        raise yaml.YAMLError(f"nested deeper than {MAX_YAML_DEPTH} levels") from None


def os_reason(exc: OSError) -> str:
    """A short, stable reason for an OSError (no errno numbers, no repeated path)."""
    return {
        errno.ENOENT: "not found",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EISDIR: "is a directory",
        errno.ENOTDIR: "a component of the path is a file, not a folder",
        errno.ENAMETOOLONG: "name too long",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.ELOOP: "too many symbolic links",
    }.get(exc.errno or 0, exc.strerror or type(exc).__name__)


def read_text_file(file: Path, what: str, error: type[SimError], shown: str | Path | None = None) -> str:
    """The UTF-8 text of ``file``; every file-level problem raises ``error`` naming the file."""
    name = shown if shown is not None else file
    if str(file) in ("", "."):
        raise error(f"{what}: empty path")
    try:
        if file.is_dir():
            raise error(f"{name}: is a directory, expected a {what} file")
        size = file.stat().st_size
        if size > MAX_YAML_BYTES:
            raise error(f"{name}: {size} bytes, too large for a {what} file")
        raw = file.read_bytes()
    except FileNotFoundError:
        raise error(f"{name}: {what} not found") from None
    except OSError as exc:
        raise error(f"{name}: cannot read the {what} ({os_reason(exc)})") from None
    if b"\0" in raw[:8192] or raw.startswith(b"PAR1"):
        raise error(f"{name}: a binary file, expected a YAML {what}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{name}: not UTF-8 text (byte {exc.start}), expected a YAML {what}") from None


def read_yaml_mapping(file: Path, what: str, error: type[SimError], shown: str | Path | None = None) -> dict[str, Any]:
    """The YAML mapping in ``file``; a missing, unreadable or binary file, bad YAML, a duplicate key or
    another top-level type raise ``error`` naming the file (``shown``: how to name it when not found,
    e.g. the path as the user wrote it)."""
    text = read_text_file(file, what, error, shown)
    try:
        data = parse_yaml(text)
    except _DuplicateKey as exc:
        raise error(f"{file}: line {exc.line}: duplicate key {exc.key!r} (first on line {exc.first_line})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{file}: not valid YAML ({where}{problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{file}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def check_output_dir(path: Path | str) -> None:
    """Check, without creating anything, that folder ``path`` could be created or written: not empty
    (pass the user's string: ``Path("")`` is "."), no file on the way, a writable existing ancestor,
    no name too long. Raises InputError naming it."""
    if not str(path).strip():
        raise InputError("--out: empty path (name an output folder)")
    path = Path(path)
    limit = os.pathconf("/", "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    for part in path.parts:
        if len(part.encode("utf-8", "surrogateescape")) > limit:
            raise InputError(f"{path}: name too long ({part[:40]}...: over {limit} bytes)")
    try:
        if path.exists() and not path.is_dir():
            raise InputError(f"{path}: is a file, not a folder")
        ancestor = path.absolute()
        while not os.path.lexists(ancestor):
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise InputError(f"{path}: {ancestor} is a file, not a folder")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise InputError(f"{path}: cannot write in {ancestor} (permission denied)")
    except OSError as exc:
        raise InputError(f"{path}: cannot create this folder ({os_reason(exc)})") from None


def check_output_file(out: Path, inputs: Sequence[Path] = (), flag: str = "--out") -> None:
    """Check that file ``out`` could be written without touching an input: not empty, not a folder,
    not one of ``inputs`` (or a file written beside them), in a folder that could be created."""
    if str(out).strip() in ("", "."):
        raise InputError(f"{flag}: empty path (name the file to write)")
    try:
        if out.is_dir():
            raise InputError(f"{out}: is a folder, expected a file path to write ({flag})")
    except OSError as exc:
        raise InputError(f"{out}: cannot write ({os_reason(exc)})") from None
    for src in inputs:
        if same_file(src, out):
            raise InputError(f"{flag} {out}: is one of the command's inputs ({src}); choose another path")
    check_output_dir(out.parent if str(out.parent) not in ("", ".") else Path.cwd())


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Turn an OSError raised while writing ``path`` (disk full, permission denied, a name too long,
    a file where a folder should be) into an InputError naming the file."""
    try:
        yield
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({os_reason(exc)})") from None


def partial_name(path: Path, folder: bool = False) -> Path:
    """The temporary name ``path`` is written under before it is renamed into place: hidden, beside it (same
    file system, so the rename is atomic): ``.NAME-partial`` for a folder, ``.STEM-partial.SUFFIX`` for a file
    (writers infer formats from the suffix: a .png, a .parquet)."""
    if folder:
        return path.with_name(f".{path.name}-partial")
    return path.with_name(f".{path.stem}-partial{path.suffix}")


@contextmanager
def atomic_path(path: Path | str, *, folder: bool = False, concurrent: bool = False) -> Iterator[Path]:
    """The one atomic writer: yields a temporary path to write ``path`` at (a file, or with ``folder`` a folder
    to fill); on success it is renamed over ``path`` (a folder there is removed first), on any failure it is
    removed, so readers see the old ``path`` or the whole new one and a crash leaves no torn file. Nothing is
    renamed when the writer wrote nothing at the temporary path. A stale temporary of an earlier, killed
    write is removed first. ``concurrent``: other processes may write the same ``path`` at once: each gets
    its own temporary name, and a finished copy already in place is kept. An OSError raises InputError naming
    ``path``."""
    path = Path(path)
    with writing(path):
        if concurrent:  # a unique name (an empty folder made for it, then handed over empty)
            stem, suffix = (path.name, "") if folder else (path.stem, path.suffix)
            tmp = Path(tempfile.mkdtemp(prefix=f".{stem}-partial-", suffix=suffix, dir=path.parent))
            if not folder:
                tmp.rmdir()
        else:
            tmp = partial_name(path, folder)
            _remove(tmp)
        try:
            yield tmp
            if os.path.lexists(tmp):
                if concurrent and os.path.lexists(path):
                    return  # another process finished the same content first
                if folder and path.is_dir():
                    shutil.rmtree(path)
                os.replace(tmp, path)
        finally:
            _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (``atomic_path``); failures raise InputError naming it."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def check_replaceable(out: Path, inputs: Sequence[Path], foreign: Callable[[Path], str | None], what: str,
                      flag: str = "--out") -> None:
    """Refuse to delete folder ``out`` (for ``--overwrite``) unless it is a folder this tool made for the same
    kind of output: ``foreign(out)`` names what in it is not such output (None: all of it is), and no input
    of the command (``inputs``) may lie in it or be it. Raises InputError naming the entry or the input."""
    if not out.is_dir():
        return
    for src in inputs:
        if _within(src, out):
            raise InputError(f"{flag} {out}: refusing to replace it: it holds an input of this command ({src})")
    why = foreign(out)
    if why is not None:
        raise InputError(f"{flag} {out}: refusing to replace it: not a folder of {what} ({why})")


def _within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (symbolic links resolved)."""
    try:
        path, folder = path.resolve(), folder.resolve()
    except OSError:
        path, folder = path.absolute(), folder.absolute()
    return path == folder or folder in path.parents


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (an existing file, or the same absolute path)."""
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
    except OSError:
        pass
    return a.absolute() == b.absolute()
