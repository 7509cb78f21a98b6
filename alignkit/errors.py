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
    """Mark a function of the Python API (`alignkit.sft`, ...): its errors name fixes as its keywords, and its
    arguments are checked against its annotations first (`check_arguments`)."""

    @functools.wraps(function)
    def called(*args: Any, **kwargs: Any) -> Any:
        with calling(function):
            check_arguments(function, args, kwargs)
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
        shown = str(shown).lower() if isinstance(shown, bool) else shown  # YAML's spelling: --set data.x=true
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


def check_arguments(function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse, in one line naming the keyword, an argument of a Python API call that its annotation rules out (an int
    for a path, a string for a list, rows in memory for a file) or a keyword it does not take: otherwise it fails deep
    in pathlib or the generation loop, or a string given for a list is read one character at a time."""
    import difflib
    import inspect

    name = function.__name__
    signature = inspect.signature(function)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        given = next((k for k in kwargs if k not in signature.parameters), None)
        close = difflib.get_close_matches(given or "", list(signature.parameters), n=1, cutoff=0.6)
        hint = f"did you mean `{close[0]}`?" if close else f"see help(alignkit.{name})"
        raise AlignkitError(f"alignkit.{name}(): {first_line(exc)}", hint) from None
    for key, value in bound.arguments.items():
        parameter = signature.parameters[key]
        if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue  # a stage's config sections: load_config checks them
        hint = annotation(function, parameter.annotation)
        if hint is None or conforms(value, hint):
            continue
        raise AlignkitError(
            f"alignkit.{name}(): `{key}` must be {described(hint)}, got {shown(value)}",
            table_hint(value, suggestion(function, key, value, hint), key),
        )


def annotation(function: Callable[..., Any], hint: Any) -> Any:
    """A parameter's annotation as a type, or None where it names what only exists for type checkers."""
    import collections.abc
    import inspect
    from pathlib import Path

    if hint is inspect.Parameter.empty:
        return None
    if not isinstance(hint, str):
        return hint
    names = {"Path": Path, "Any": Any, "Sequence": collections.abc.Sequence}
    try:
        return eval(hint, {**getattr(function, "__globals__", {}), **names})
    except (NameError, AttributeError, TypeError, SyntaxError):
        return None


def conforms(value: Any, hint: Any) -> bool:
    """Whether `value` passes for `hint`: paths as str or os.PathLike (a `Run` too), ints for floats, any sequence
    for a list (not a str), any mapping for a dict (its items are the function's to check)."""
    import collections.abc
    import numbers
    import types

    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, option) for option in arguments)
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str or (isinstance(hint, type) and issubclass(hint, os.PathLike)):
        return isinstance(value, str | os.PathLike)
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and arguments and arguments[-1] is not Ellipsis:
            return len(value) == len(arguments) and all(map(conforms, value, arguments))
        return not arguments or all(conforms(item, arguments[0]) for item in value)
    if origin is dict or hint is dict:
        return isinstance(value, collections.abc.Mapping)
    return not isinstance(hint, type) or isinstance(value, hint)


def described(hint: Any) -> str:
    """`hint` in words: `a path (str or Path) or None`, `an int`, `a list of paths (str or Path)`."""
    import types

    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        paths = {str, *(a for a in arguments if isinstance(a, type) and issubclass(a, os.PathLike))}
        rest = [a for a in arguments if a not in paths] if len(paths) > 1 else list(arguments)
        words = (["a path (str or Path)"] if len(paths) > 1 else []) + [described(a) for a in rest]
        return " or ".join(words)
    if hint is None or hint is type(None):
        return "None"
    if origin is tuple:
        return f"a tuple ({', '.join(getattr(a, '__name__', str(a)) for a in arguments)})"
    if origin is list or getattr(origin, "__name__", "") == "Sequence":
        inner = described(arguments[0]).removeprefix("a ").removeprefix("an ") if arguments else "item"
        return f"a list of {inner.replace(' ', 's ', 1) if ' ' in inner else inner + 's'}"
    kind = getattr(origin or hint, "__name__", str(hint))
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def suggestion(function: Callable[..., Any], key: str, value: Any, hint: Any) -> str:
    """The call spelled right where it can be guessed: one path in a list, a number given as text as the number, a
    stage's config mapping as its keywords; else the function's help."""
    import collections.abc

    if key == "config" and isinstance(value, collections.abc.Mapping) and takes_sections(function):
        return f"pass its sections as keywords: alignkit.{function.__name__}(**config)"
    if conforms([value], hint) and len(shown(value)) < 120:
        item = os.fspath(value) if isinstance(value, os.PathLike) else value
        return f"pass a list: {python_option(key, [item], sections=False)}"
    if isinstance(value, str):
        for number in (int, float):
            try:
                converted = number(value)
            except ValueError:
                continue
            if conforms(converted, hint):
                return f"pass the number: {python_option(key, converted, sections=False)}"
    return f"see help(alignkit.{function.__name__})"


def shown(value: Any) -> str:
    """`value` for a one-line error: its repr (cut at 200 characters), or its type where the repr spans lines (a
    DataFrame's is a table)."""
    text = repr(value)
    if "\n" not in text:
        return text if len(text) <= 200 else text[:200] + "..."
    kind = type(value)
    return f"a {kind.__module__.split('.')[0]} {kind.__name__}"


# The options that name files of rows: rows in memory given there (a list of dicts) are to be saved to one.
ROW_KEYS = frozenset({"data.paths", "prompts", "candidates_file", "answer_key", "general"})


def table_hint(value: Any, fix: str, key: str = "data.paths") -> str:
    """`fix`, or for rows in memory (a pandas DataFrame, a `datasets` Dataset, a list of dicts) how to save them as
    the file a run reads and records (its sha256 in the manifest; `resume` reads it again), passed as `key`."""
    library = type(value).__module__.split(".")[0]
    saved = {
        "pandas": "df.to_json('rows.jsonl', orient='records', lines=True)",
        "datasets": "dataset.to_json('rows.jsonl')",
        "polars": "df.write_ndjson('rows.jsonl')",
    }.get(library)
    rows = [value] if isinstance(value, dict) else value if isinstance(value, list | tuple) else None
    if saved is None and key in ROW_KEYS and from_python() and rows and all(isinstance(row, dict) for row in rows):
        saved = "datasets.Dataset.from_list(rows).to_json('rows.jsonl')"
    if saved is None and key == "prompts" and from_python() and rows and all(isinstance(row, str) for row in rows):
        saved = "datasets.Dataset.from_dict({'prompt': prompts}).to_json('rows.jsonl')"
    if saved is None:
        return fix
    path = Placeholder("'rows.jsonl'" if from_python() else "rows.jsonl")
    that = option(key, [path] if key == "data.paths" else path)
    return f"alignkit reads rows from files: save them first ({saved}) and pass {that}"
