"""The one figure saver: every plot the tool writes goes through here (same resolution, written atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sim.fileio import atomic_path

#: dots per inch of every PNG the tool writes
DPI = 120


def save_figure(fig: Any, stem: Path | str, formats: tuple[str, ...] = ("png",)) -> None:
    """Write matplotlib figure ``fig`` as ``stem.FORMAT`` for each format (a reader never sees a torn image),
    then close it. ``stem``: the path without its suffix (a path ending in one of ``formats`` is accepted)."""
    import matplotlib.pyplot as plt

    stem = Path(stem)
    if stem.suffix.lstrip(".") in formats:
        stem = stem.with_suffix("")
    try:
        for fmt in formats:
            with atomic_path(stem.with_name(f"{stem.name}.{fmt}")) as tmp:
                fig.savefig(tmp, dpi=DPI, format=fmt)
    finally:
        plt.close(fig)
