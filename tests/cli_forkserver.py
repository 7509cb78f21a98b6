"""A Python process that has imported the libraries an `alignkit` command loads, and forks one child per command.

Started by `tests.conftest.run_cli_forked` (never imported by the tests): each `python -m alignkit.cli` spent
seconds importing torch, transformers, trl, peft and datasets before it did anything. A forked child is still a
process of its own, with its own exit code, stdout, stderr, environment, working directory and teardown, and nothing
of alignkit has run (or been imported) before it starts; only the third-party imports are done already.

Protocol, one JSON object a line: the parent sends {"argv", "cwd", "env", "stdout", "stderr"} (the last two: files
for the child's output); this process answers {"pid"} once the child runs and {"status"} (`os.waitpid`'s) once it
ended. End of input ends the server.
"""

from __future__ import annotations

import json
import os
import sys

# What every command's `import` of alignkit's stages and models pulls in; alignkit itself is not imported here.
PRELOAD = (
    "torch",
    "transformers",
    "transformers.modeling_utils",
    "transformers.trainer",
    "transformers.generation",
    "peft",
    "datasets",
    "accelerate",
    "trl",
    "trl.trainer.sft_trainer",
    "trl.trainer.dpo_trainer",
    "trl.trainer.reward_trainer",
    "trl.trainer.utils",
    "typer",
    "rich.console",
    "yaml",
)


def run_child(request: dict) -> None:
    """In the forked child: what `python -m alignkit.cli ARGV` does in a fresh interpreter, then exit."""
    import atexit
    import runpy
    import threading

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    stdin = os.open(os.devnull, os.O_RDONLY)
    stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    stderr = os.open(request["stderr"], os.O_WRONLY | os.O_APPEND)  # holds what the imports here printed
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - not the server's buffered protocol stream
    sys.path[0] = os.getcwd()  # as `python -m` sets it
    sys.argv = ["alignkit.cli", *request["argv"]]
    code = 0
    try:
        runpy.run_module("alignkit.cli", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    # the interpreter's own shutdown: wait for non-daemon threads, run the atexit callbacks, flush
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120
    os._exit(code)


def main() -> None:
    import importlib

    del sys.path[0]  # this file's folder (tests/): no module of the suite may shadow a library here
    for name in PRELOAD:
        importlib.import_module(name)
    protocol_in, protocol_out = sys.stdin.buffer, sys.stdout.fileno()
    os.write(protocol_out, b'{"ready": true}\n')
    for line in protocol_in:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                run_child(request)
            finally:
                os._exit(1)
        os.write(protocol_out, (json.dumps({"pid": pid}) + "\n").encode())
        _, status = os.waitpid(pid, 0)
        os.write(protocol_out, (json.dumps({"status": status}) + "\n").encode())


if __name__ == "__main__":
    main()
