"""Where alignkit keeps things it builds once: converted models, the Argilla server's venv and data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$ALIGNKIT_CACHE`, else `$XDG_CACHE_HOME/alignkit`, else `~/.cache/alignkit`."""
    if os.environ.get("ALIGNKIT_CACHE"):
        return Path(os.environ["ALIGNKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "alignkit"


def bundled_data(name: str) -> Path:
    """A file of the project's own `datasets/` (installed editable from the repository)."""
    return Path(__file__).resolve().parent.parent / "datasets" / name
