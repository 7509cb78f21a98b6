"""The one error type for problems a user can fix (bad data, bad config, missing run, server down)."""

from __future__ import annotations


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
