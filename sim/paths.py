"""Where relative paths in configs point: the current directory first, then the nirvana-sim checkout."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def resolve(path: str | Path) -> Path:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    shipped = PROJECT_ROOT / p
    return shipped if shipped.exists() else p
