"""The one error type for problems a user can fix (bad data, bad config, missing run, server down), and how its fix
names an option: as the command line spells it (`--overwrite`) or the Python API function called (`overwrite=True`)."""

from __future__ import annotations

import functools
import os
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class AlignkitError(Exception):
    """A user-fixable problem: printed as one line by the CLI, never with a traceback.

    `message` says what is wrong and where (file, row, field); `hint` says how to fix it.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def _render_traceback_(self) -> list[str]:
        """What IPython and Jupyter show for it in place of a traceback: the CLI's one line, not the frames of
        alignkit's internals (a cell calling `alignkit.sft(...)` would show a dozen)."""
        fix = f" \x1b[2m— fix: {self.hint}\x1b[0m" if self.hint else ""
        return [f"\x1b[1;31m{type(self).__name__}:\x1b[0m {self.message}{fix}"]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a library's error, quoted in one-line alignkit errors)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# Who is calling: `CLI` (the command line, also the default: apps, scripts and tests of alignkit's internals) or the
# `alignkit.*` function a notebook called. A fix an error names is spelled the way that caller takes it (`option`).
CLI = "cli"
_caller: ContextVar[Callable[..., Any] | str | None] = ContextVar("alignkit_caller", default=None)
# The flags of the command being run (None: not known), so a fix names only flags that command has.
_command_flags: ContextVar[frozenset[str] | None] = ContextVar("alignkit_command_flags", default=None)

# The config keys and keywords the command line has a flag for; any other config key, or one the running command has
# no flag for, is `--set key=value`.
FLAGS = {
    "config": "--config",
    "data.paths": "--data",
    "model.name": "--model",
    "from_run": "--from",
    "runs": "--runs",
    "baseline": "--baseline",
    "compare": "--compare",
    "reward_run": "--reward",
    "out": "--out",
    "resume": "--resume",
    "overwrite": "--overwrite",
    "trainer.max_steps": "--max-steps",
    "trainer.num_train_epochs": "--epochs",
    "overrides": "--set",
    "prompts": "--prompts",
    "general": "--general",
    "candidates_file": "--candidates",
    "answer_key": "--answer-key",
    "seeds": "--seeds",
    "dataset": "--dataset",
    "workspace": "--workspace",
    "append": "--append",
    "round_number": "--round",
    "n": "--n",
    "min_agreement": "--min-agreement",
    "min_annotators": "--min-annotators",
    "max_new_tokens": "--max-new-tokens",
    "temperature": "--temperature",
    "backend": "--backend",
    "greedy_first": "--greedy-first",
    "top_p": "--top-p",
    "batch_size": "--batch-size",
    "limit": "--limit",
    "shots": "--shots",
    "max_attempts": "--max-attempts",
    "dtype": "--dtype",
    "gguf": "--gguf",
    "gguf_type": "--gguf-type",
}
# A function without config sections (`candidates`, `chat`) takes the model's name as its `model` keyword.
KEYWORDS = {"model.name": "model"}


class Placeholder(str):
    """A value to fill in, shown bare in Python too (`trainer={'max_length': N}`, not `'N'`)."""

    def __repr__(self) -> str:
        return str(self)


@contextmanager
def calling(caller: Callable[..., Any] | str) -> Iterator[None]:
    """Errors raised inside are spelled for `caller` (`CLI`, or a Python API function), unless a caller is set
    already: the command line calls the Python API, and its errors stay in the command line's spelling."""
    token = _caller.set(_caller.get() or caller)
    try:
        yield
    finally:
        _caller.reset(token)


def running_command(flags: frozenset[str] | None) -> None:
    """Record the flags of the command line's command (its options' names; None: not known), for `accepts` and
    `option`."""
    _command_flags.set(flags)


def python_api(function: F) -> F:
    """Mark a function of the Python API (`alignkit.sft`, ...): its errors name fixes as its keywords."""

    @functools.wraps(function)
    def called(*args: Any, **kwargs: Any) -> Any:
        with calling(function):
            return function(*args, **kwargs)

    return typing.cast("F", called)


def from_python() -> bool:
    """Whether a Python API function (not the command line) is calling."""
    return callable(_caller.get())


def option(key: str, value: Any = None) -> str:
    """Option `key` (a config key, dotted in a section: `trainer.max_steps`; or a keyword) set to `value` as the
    caller writes it: `--max-steps 10` or `trainer={'max_steps': 10}`; `True` is a switch (`--overwrite`,
    `overwrite=True`), None the option alone (`--out`, `` `out` ``)."""
    caller = _caller.get()
    if callable(caller):
        return python_option(key, value, takes_sections(caller))
    flag = FLAGS.get(key)
    flags = _command_flags.get()
    if flag is None or (flags is not None and flag not in flags):  # the demo's `prompts` is a config key, no flag
        shown = "..." if value is None else f"[{', '.join(map(str, value))}]" if isinstance(value, list) else value
        return f"--set {key}={shown}"
    if value is None or value is True:
        return flag
    return " ".join(f"{flag} {item}" for item in (value if isinstance(value, list) else [value]))


def options(*given: tuple[str, Any]) -> str:
    """Several `option`s, (key, value) each, as the caller writes them together: `--resume --data X` or
    `resume=True, data={'paths': ['X']}`."""
    return (", " if from_python() else " ").join(option(key, value) for key, value in given)


def accepts(key: str) -> bool:
    """Whether the caller can be given option `key`: a command line that has its flag (`alignkit eval` has no
    `--model`), a Python function that takes it (`evaluate_runs` takes no `model`)."""
    import inspect

    caller = _caller.get()
    if not callable(caller):
        flags = _command_flags.get()
        return flags is None or FLAGS.get(key, "--set") in flags
    if takes_sections(caller):
        return True
    return KEYWORDS.get(key, key) in inspect.signature(caller).parameters


def command(stage: str, **given: Any) -> str:
    """A training command with `given` options as the caller writes it: `alignkit dpo --resume --out X` or
    `alignkit.dpo(resume=True, out='X')`."""
    if from_python():
        return f"alignkit.{stage}({', '.join(python_option(k, v, sections=True) for k, v in given.items())})"
    return f"alignkit {stage} {options(*given.items())}"


def takes_sections(function: Callable[..., Any]) -> bool:
    """Whether `function` is a stage's (`sft`, `dpo`, ...): its config's sections are keywords (`trainer={...}`)."""
    import inspect  # here: `import alignkit` stays light

    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(function).parameters.values())


def python_option(key: str, value: Any, sections: bool) -> str:
    keyword, _, field = key.partition(".")
    if not sections:
        keyword, field = KEYWORDS.get(key, key), ""
    if value is None:
        return f"`{keyword}`"
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return f"{keyword}={{{field!r}: {value!r}}}" if field else f"{keyword}={value!r}"
