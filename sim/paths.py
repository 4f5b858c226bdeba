"""Where relative paths in configs point: the current directory first, then the nirvana-sim checkout."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def resolve(path: str | Path) -> Path:
    p = Path(path)
    if str(path) == "" or p.is_absolute() or _exists(p):
        return p
    shipped = PROJECT_ROOT / p
    return shipped if _exists(shipped) else p


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError:  # a name too long, a permission problem: the loader reports it, naming the path
        return False
