"""The marker that says "infodecomp wrote this directory", and whether one can be made.

Every directory a command of infodecomp creates (a training run's log directory, an analysis's
output directory) holds :data:`MARKER`, a small JSON naming the tool, its version and the time.
Commands that replace or reuse a directory (``analyze.py ... --overwrite``) do so only when it
carries the marker, so a user's own files are never removed.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

MARKER = ".infodecomp-output"


def write_marker(directory: str | Path, tool: str, **fields: Any) -> Path:
    """Write :data:`MARKER` into ``directory`` (which exists): ``{"tool", "version", "time", **fields}``."""
    from infodecomp import __version__

    info = {"tool": tool, "version": __version__, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **fields}
    path = Path(directory) / MARKER
    path.write_text(json.dumps(info) + "\n")
    return path


def file_in_the_way(path: str | Path) -> Path | None:
    """The regular file at ``path`` or above it, which keeps a directory from being made there
    (``None`` when there is none)."""
    path = Path(path)
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def read_marker(directory: str | Path) -> dict[str, Any] | None:
    """The marker of ``directory`` (``None`` when it has none; a link or unreadable file is none)."""
    path = Path(directory) / MARKER
    if not path.is_file() or path.is_symlink():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def marked_by(directory: str | Path, tool: str) -> bool:
    """Whether ``directory`` carries the marker of ``tool`` (``infodecomp-train``, ``infodecomp-analyze``)."""
    info = read_marker(directory)
    return info is not None and info.get("tool") == tool


__all__ = ["MARKER", "file_in_the_way", "marked_by", "read_marker", "write_marker"]
