"""Where alignkit keeps things it builds once (converted models, the Argilla server's venv and data), where data paths
point, and whether the hub can be reached."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from alignkit.errors import AlignkitError, option

# Where base models moved since runs were trained on them are looked for (`models.base_now`): paths joined by
# `os.pathsep`, each a model dir (or .gguf file) or a folder holding one under its old name.
MODEL_PATH_ENV = "ALIGNKIT_MODEL_PATH"


def cache_dir() -> Path:
    """`$ALIGNKIT_CACHE`, else `$XDG_CACHE_HOME/alignkit`, else `~/.cache/alignkit`."""
    if os.environ.get("ALIGNKIT_CACHE"):
        return Path(os.environ["ALIGNKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "alignkit"


def saved_split(source: str) -> tuple[Path, str | None]:
    """`DIR:SPLIT` (one split of a `datasets` save dir) as (DIR, SPLIT); any other source as (its path, None)."""
    directory, sep, split = source.rpartition(":")
    if sep and split and not Path(source).expanduser().exists() and Path(directory).expanduser().is_dir():
        return Path(directory).expanduser(), split
    return Path(source).expanduser(), None


def bundled_data(name: str) -> Path:
    """A file of the project's own `datasets/` (installed editable from the repository)."""
    return Path(__file__).resolve().parent.parent / "datasets" / name


def file_sha256(path: Path) -> str:
    """sha256 of a file, or of every file under a directory (sorted by relative path)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


_known: dict[str, str] = {}  # `known_sha256`'s digests of this process, by `stat_key`


def stat_key(path: Path) -> str:
    """What tells a file (or every file of a directory) from the one hashed before: resolved path, size and
    modification time (a moved, copied or edited file has another)."""
    resolved = path.resolve()
    if not resolved.is_dir():
        stat = resolved.stat()
        return f"{resolved}:{stat.st_size}:{stat.st_mtime_ns}"
    files = sorted(p for p in resolved.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(resolved)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return f"{resolved}:{hashlib.sha256(json.dumps(stats).encode()).hexdigest()}:dir"


def known_sha256(path: Path) -> str:
    """`file_sha256` of `path`, remembered by `stat_key` in `<cache>/digests.json`: a file is hashed again only
    where its path, size or modification time changed (moved, copied, edited), so a resume or a model built again
    does not read a large corpus or base model through once more. As with make or rsync, an edit that keeps both the
    size and the modification time is not seen."""
    key = stat_key(path)
    if key in _known:
        return _known[key]
    cache_file = cache_dir() / "digests.json"
    cached = read_digests(cache_file)
    if key in cached:
        _known[key] = cached[key]
        return cached[key]
    _known[key] = file_sha256(path)
    remember_digest(cache_file, key, _known[key])
    return _known[key]


def read_digests(cache_file: Path) -> dict[str, str]:
    """The entries of the digest cache; a missing, torn or foreign file (not a JSON object) reads as empty: it is a
    cache, hashing again is the cost."""
    try:
        cached = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in cached.items() if isinstance(v, str)} if isinstance(cached, dict) else {}


def remember_digest(cache_file: Path, key: str, digest: str) -> None:
    """Add one entry to the digest cache. Other processes hash at the same time (`accelerate launch` ranks, two
    shells): under a lock, the file is read again and merged (not the copy read before hashing, which would drop
    what they added meanwhile), and replaced whole (a reader never sees half a file)."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(cache_file.with_name(cache_file.name + ".lock")):
            cached = read_digests(cache_file)
            kept = {k: v for k, v in cached.items() if Path(k.rsplit(":", 2)[0]).exists()}  # drop removed files'
            tmp = cache_file.with_name(f".{cache_file.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(kept | {key: digest}), encoding="utf-8")
            os.replace(tmp, cache_file)
    except OSError:
        pass  # a read-only cache: hashed once per process


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created) while the block runs: alignkit processes that share a file take
    turns (the Argilla server's venv, the digest cache)."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_replaceable(path: Path, marker: str, what: str) -> None:
    """Refuse `--overwrite` of a non-empty directory unless alignkit wrote it (`marker` is there, e.g. a run's
    `manifest.json`): replacing `runs/` itself, a data folder or a model dir would delete what the user keeps there."""
    if path.is_dir() and any(path.iterdir()) and not (path / marker).is_file():
        raise AlignkitError(
            f"{path}: is not {what} (no {marker}), so {option('overwrite', True)} will not replace it",
            f"choose another {option('out')}, e.g. a new folder inside it",
        )


def check_output_dir(path: Path, overwrite: bool, marker: str, what: str) -> None:
    """Before any work: `path` may be written as a directory: missing or empty, or (`overwrite`) one alignkit wrote
    as `what` (`check_replaceable`)."""
    if path.exists() and not path.is_dir():
        raise AlignkitError(f"{path}: is a file, not an output directory", f"pass a directory path to {option('out')}")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise AlignkitError(
            f"{path}: exists and is not empty", f"pass {option('overwrite', True)} or choose another {option('out')}"
        )
    check_replaceable(path, marker, what)


def offline_without_network() -> None:
    """Put the hub libraries in offline mode (cached files only) when the hub's host name does not resolve: otherwise a
    hub id, cached or not, waits out huggingface_hub's retries. Processes started from here inherit it."""
    import socket
    import sys
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return
    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
    except OSError:
        os.environ["HF_HUB_OFFLINE"] = "1"
        constants.HF_HUB_OFFLINE = True
        if "datasets.config" in sys.modules:  # it copies the setting when imported
            sys.modules["datasets.config"].HF_HUB_OFFLINE = True
