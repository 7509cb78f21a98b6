"""Where output goes. The terminal shows alignkit's own lines: progress bars, summaries, its warnings and errors.
Libraries' log records (transformers' load reports, TRL, peft, datasets, the Argilla SDK), Python warnings
(FutureWarning, the DataLoader's pin_memory UserWarning, ...) and the trainer's per-step log dicts go to a log file:
the run's `log.txt` while a stage runs, else `<cache>/logs/alignkit.log`. `--verbose` (`ALIGNKIT_VERBOSE=1`) shows
them in the terminal as well.

The CLI calls `quiet_terminal()` once at start; used as a library (notebooks, scripts), nothing is silenced and only
`to_file` (a run's log.txt) applies. The trainer's quiet progress bar is `training.QuietProgressCallback`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from alignkit.paths import cache_dir

LIBRARIES = (
    *("transformers", "trl", "peft", "accelerate", "datasets", "argilla", "huggingface_hub", "httpx", "urllib3"),
    "py.warnings",
)
FORMAT = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
logger = logging.getLogger("alignkit")
_default_file: Path | None = None  # set by `quiet_terminal`: where records go between runs


def verbose() -> bool:
    return os.environ.get("ALIGNKIT_VERBOSE", "") not in ("", "0")


def default_log_file() -> Path:
    return cache_dir() / "logs" / "alignkit.log"


def quiet_terminal() -> None:
    """Library records and Python warnings go to the log file, not the terminal (all of them with `--verbose`);
    alignkit's own warnings stay on the terminal."""
    logging.captureWarnings(True)  # warnings.warn -> the `py.warnings` logger
    own = logging.getLogger("alignkit")
    # A library that calls `logging.basicConfig` (seen after the Argilla round of `alignkit demo`) would otherwise
    # print every record of alignkit's, the trainer's per-step dicts included, through the root logger.
    own.propagate = False
    if not any(getattr(h, "alignkit_terminal", False) for h in own.handlers):
        # once a log file is attached, Python's last-resort handler no longer prints alignkit's warnings: this does
        terminal = logging.StreamHandler(sys.stderr)
        terminal.setLevel(logging.WARNING)
        terminal.setFormatter(logging.Formatter("warning: %(message)s"))
        terminal.alignkit_terminal = True  # type: ignore[attr-defined]
        own.addHandler(terminal)
    if verbose():
        return
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # datasets' map/filter bars, one per step
    if "datasets" in sys.modules:  # it read the variable when imported: a process that imported it first
        sys.modules["datasets"].disable_progress_bars()
    from transformers.utils import logging as transformers_logging

    transformers_logging.get_logger("transformers")  # transformers adds its stderr handler now, so it can be quieted
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.get_logger("huggingface_hub")  # the same (its retries of an unreachable hub: ten lines otherwise)
    transformers_logging.disable_progress_bar()  # "Loading weights", "Writing model shards": instant on small models
    for name in LIBRARIES:
        library = logging.getLogger(name)
        library.propagate = False  # nothing reaches the root logger or Python's last-resort stderr handler
        for handler in library.handlers:
            if not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.ERROR)
    global _default_file
    _default_file = default_log_file()
    _default_file.parent.mkdir(parents=True, exist_ok=True)
    to_file(_default_file)


def to_file(path: Path) -> None:
    """Send alignkit's and the libraries' records to `path` (replacing the file they went to)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(FORMAT)
    for name in ("alignkit", *LIBRARIES):
        target = logging.getLogger(name)
        for old in [h for h in target.handlers if isinstance(h, logging.FileHandler)]:
            target.removeHandler(old)
            old.close()
        target.addHandler(handler)
        if name in ("alignkit", "transformers", "trl", "peft"):
            target.setLevel(logging.INFO)
        for console in target.handlers:  # the terminal: warnings of alignkit; only errors of libraries when quiet
            if not isinstance(console, logging.FileHandler):
                quiet = name != "alignkit" and not verbose() and target.propagate is False
                console.setLevel(max(console.level, logging.ERROR if quiet else logging.WARNING))


def stop_file(path: Path) -> None:
    """Stop writing to `path` (a run that ended, or is about to be removed); records go back to the default log file
    of `quiet_terminal`, or, used as a library, to no file: a finished run's log.txt gets nothing of what follows."""
    target_file = os.path.abspath(path)
    stopped = False
    for name in ("alignkit", *LIBRARIES):
        target = logging.getLogger(name)
        for handler in [h for h in target.handlers if isinstance(h, logging.FileHandler)]:
            if handler.baseFilename == target_file:
                target.removeHandler(handler)
                handler.close()
                stopped = True
    if stopped and _default_file is not None and os.path.abspath(_default_file) != target_file:
        to_file(_default_file)
