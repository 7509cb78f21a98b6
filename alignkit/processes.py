"""The child processes alignkit starts and stops: the local Argilla's (Redis, server, worker), the apps, JupyterLab.

Each child runs in its own process group (a Ctrl-C in the terminal does not reach it; stopping it stops the whole
group), writes its output to a log file, and gets SIGTERM when its parent dies (Linux). Children listen on 127.0.0.1.

    child = processes.spawn("server", command, log=logs / "server.log", cwd=data_dir)
    if not processes.wait_until(lambda: processes.answers(url), [child], timeout_s=60, poll_s=0.2):
        ...
    child.stop()
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from alignkit.errors import AlignkitError

LOOPBACK = "127.0.0.1"
STOP_GRACE_S = 10.0  # after SIGTERM, before SIGKILL
# psutil's create_time is the kernel's boot time plus the ticks since boot, and the kernel's boot time moves by whole
# seconds as the clock is adjusted (NTP): a process seen hours apart can "start" a second later.
SAME_START_S = 2.0
LOG_TAIL_LINES = 15
_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    """A process started by `spawn`: its name (in messages), the process, and the log its output goes to."""

    name: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        """End this child's process group (SIGTERM, then SIGKILL after `STOP_GRACE_S`), unless it already exited."""
        if self.process.poll() is None:
            stop_groups([psutil.Process(self.process.pid)], own=[self.process])


class ChildExited(AlignkitError):
    """A child exited before it was ready; the hint holds the last lines of its log."""

    def __init__(self, child: Child) -> None:
        super().__init__(
            f"{child.name} exited while starting (code {child.process.returncode})",
            f"see {child.log}; last lines:\n{tail(child.log)}",
        )
        self.child = child


def spawn(
    name: str,
    command: Sequence[str | os.PathLike[str]],
    log: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    unset: Iterable[str] = (),
) -> Child:
    """Start `command` in its own process group, its stdout and stderr in `log` (overwritten), its environment this
    process's without the `unset` variables plus `env`; on Linux it gets SIGTERM when this process dies.

    (Linux sends that signal when the *thread* that called `spawn` ends: call it from one that outlives the child.)
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    hidden = set(unset)
    child_env = {key: value for key, value in os.environ.items() if key not in hidden} | dict(env or {})
    die_with_parent = _pdeathsig_setter() if sys.platform == "linux" else None
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [str(part) for part in command],
            cwd=cwd,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    return Child(name=name, process=process, log=log)


@functools.cache
def _pdeathsig_setter() -> Callable[[], None]:
    """The function run in the child before exec: SIGTERM when the parent dies. `prctl` is looked up here, in the
    parent, so the forked child runs no dynamic-loader code."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return die_with_parent


def free_port(prefer: int | None = None) -> int:
    """`prefer` when nothing listens there, else any free port on 127.0.0.1."""
    if prefer is not None and not is_listening(prefer):
        return prefer
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def is_listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as probe:
        return probe.connect_ex((LOOPBACK, port)) == 0


def answers(url: str, headers: Mapping[str, str] | None = None) -> bool:
    """Whether a GET of `url` returns 200 within 2 s."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_until(ready: Callable[[], bool], children: Iterable[Child], timeout_s: float, poll_s: float) -> bool:
    """Poll `ready()` every `poll_s` s: True once it holds, False after `timeout_s`; raises `ChildExited` as soon as
    one of `children` has exited."""
    children = list(children)
    deadline = time.monotonic() + timeout_s
    while True:
        for child in children:
            if child.process.poll() is not None:
                raise ChildExited(child)
        if ready():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)


def wait_for_exit(children: Sequence[Child], poll_s: float = 0.5) -> Child:
    """Block until one of `children` exits; return it."""
    while True:
        for child in children:
            if child.process.poll() is not None:
                return child
        time.sleep(poll_s)


def tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log, for error messages."""
    if not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def find_running(pid: int, create_time: float) -> psutil.Process | None:
    """The process `pid` if it still runs and started at `create_time`, give or take `SAME_START_S` (so a reused pid
    is not mistaken for it)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(pid)
        same = abs(process.create_time() - create_time) < SAME_START_S
        if same and process.status() != psutil.STATUS_ZOMBIE:
            return process
    return None


def stop_groups(leaders: Sequence[psutil.Process], own: Sequence[subprocess.Popen] = ()) -> bool:
    """SIGTERM each leader's process group and any descendant outside it (RQ's job process calls setsid), wait up to
    `STOP_GRACE_S`, then SIGKILL whatever is left; False when there was nothing to stop.

    `own` are this process's children among them: reaped as they exit, so none lingers as a zombie.
    """
    groups = {leader.pid for leader in leaders}
    targets = list(leaders)
    for leader in leaders:
        with contextlib.suppress(psutil.NoSuchProcess):
            targets += leader.children(recursive=True)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [process for process in targets if _is_alive(process, own)]
        if not alive:
            break
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                if os.getpgid(process.pid) not in groups:
                    process.send_signal(sig)
        deadline = time.monotonic() + STOP_GRACE_S
        while any(_is_alive(process, own) for process in alive) and time.monotonic() < deadline:
            time.sleep(0.05)
    return bool(targets)


def _is_alive(process: psutil.Process, own: Sequence[subprocess.Popen]) -> bool:
    for child in own:
        if child.pid == process.pid:
            child.poll()  # reap our own child, so it does not linger as a zombie
    with contextlib.suppress(psutil.NoSuchProcess):
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    return False
