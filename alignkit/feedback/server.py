"""Start, inspect and stop a real local Argilla server: alignkit's embedded default feedback store.

The server runs in its own virtualenv (argilla-server pins fastapi, pydantic and typer versions that must not
constrain alignkit's environment), created on first use. One `start()` runs three managed processes, all bound
to 127.0.0.1 and each in its own process group: an in-memory Redis (fakeredis, unless a real `redis_url` is
given), the Argilla API + web UI (uvicorn), and one RQ worker for Argilla's background jobs. Data lives in
`data_dir`: Argilla's SQLite database, the SQLite search index (search_engine.py), logs, and a state file that
lets `status()`/`stop()` work from another process.

    with server.start(data_dir=tmp) as argilla:
        client = rg.Argilla(api_url=argilla.url, api_key=argilla.api_key)
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from alignkit import processes
from alignkit.errors import AlignkitError
from alignkit.paths import cache_dir, file_lock
from alignkit.processes import LOOPBACK

log = logging.getLogger(__name__)

# Demo-only credentials for the embedded server: fine on a laptop bound to 127.0.0.1, never on a shared one.
DEMO_OWNER_USERNAME = "admin"
DEMO_OWNER_PASSWORD = "alignkit-demo-password"
DEMO_OWNER_API_KEY = "alignkit.demo.owner.apikey"

SERVER_REQUIREMENTS = ["argilla-server==2.8.0", "fakeredis[lua]"]
CONSTRAINTS_FILE = Path(__file__).with_name("server-constraints.txt")
LAUNCHER = Path(__file__).with_name("launch_server.py")
STATE_FILE = "server.json"
DATA_DIR_ENV = "ALIGNKIT_ARGILLA_DATA_DIR"  # another default data dir, for every command
COMPLETE_MARKER = ".alignkit-complete"
START_TIMEOUT_S = 60.0
_NOT_INHERITED = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")  # the server venv must see only itself

_running: list[LocalArgilla] = []
_exit_hooks_installed = False


def default_venv_dir() -> Path:
    return cache_dir() / "argilla-server-venv"


def default_data_dir() -> Path:
    """`$ALIGNKIT_ARGILLA_DATA_DIR`, else the cache's `argilla-data`: where every command looks for the local server."""
    chosen = os.environ.get(DATA_DIR_ENV)
    return Path(chosen).expanduser() if chosen else cache_dir() / "argilla-data"


def other_shells_hint(data_dir: Path | None) -> str | None:
    """How other shells reach a server of another data dir than the default, or None for the default one.

    Feedback commands find the local server (and its owner key) through the default data dir's state file: one
    started with `--data-dir` was "not running" for every other command, and nothing said what to set."""
    data_dir = Path(data_dir or default_data_dir()).expanduser().resolve()
    if data_dir == default_data_dir().expanduser().resolve():
        return None
    return f"other shells reach it with: export {DATA_DIR_ENV}={data_dir}"


# -- the server's virtualenv ---------------------------------------------------------------------------------


def ensure_server_env(venv_dir: Path | None = None) -> Path:
    """Create the Argilla server's virtualenv if it is missing or incomplete; return its python.

    Creation is marked complete by a file written last (holding a fingerprint of the pinned versions), so an
    interrupted install, or a change of `server-constraints.txt`, is rebuilt from scratch on the next call.
    """
    venv_dir = Path(venv_dir or default_venv_dir()).expanduser().resolve()
    python = venv_dir / "bin" / "python"
    fingerprint = _env_fingerprint()
    if _env_complete(venv_dir, fingerprint):
        return python
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(venv_dir.with_name(venv_dir.name + ".lock")):
        if not _env_complete(venv_dir, fingerprint):  # another process may have built it while we waited
            _build_env(venv_dir, fingerprint)
    return python


def _env_fingerprint() -> str:
    pins = "\n".join([*SERVER_REQUIREMENTS, CONSTRAINTS_FILE.read_text(), sys.version])
    return hashlib.sha256(pins.encode()).hexdigest()


def _env_complete(venv_dir: Path, fingerprint: str) -> bool:
    marker = venv_dir / COMPLETE_MARKER
    return marker.is_file() and marker.read_text().strip() == fingerprint


def _build_env(venv_dir: Path, fingerprint: str) -> None:
    install_log = venv_dir.with_name(venv_dir.name + "-install.log")
    console = Console(stderr=True)
    console.print(f"Creating the Argilla server environment in {venv_dir} (first use only, about a minute)")
    started = time.monotonic()
    if venv_dir.exists():
        shutil.rmtree(venv_dir)
    python = venv_dir / "bin" / "python"
    pinned = sum(1 for line in CONSTRAINTS_FILE.read_text().splitlines() if "==" in line)
    steps = [
        ("Creating virtualenv", [sys.executable, "-m", "venv", str(venv_dir)], None),
        (
            "Installing argilla-server",
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--progress-bar",
                "off",
                "--disable-pip-version-check",
                "-c",
                str(CONSTRAINTS_FILE),
                *SERVER_REQUIREMENTS,
            ],
            pinned,
        ),
        ("Checking the install", [str(python), "-c", "import argilla_server, fakeredis, rq, uvicorn"], None),
    ]
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    with (
        install_log.open("w") as log_file,
        Progress(*columns, TimeElapsedColumn(), console=console) as progress,
    ):
        for description, command, total in steps:
            task = progress.add_task(description, total=total)
            returncode = _run_install_step(command, log_file, progress, task)
            if returncode != 0:
                raise AlignkitError(
                    f"Could not create the Argilla server environment in {venv_dir} "
                    f"({description.lower()} failed with exit code {returncode})",
                    hint=f"see {install_log}; last lines:\n{processes.tail(install_log)}\n"
                    "check that the package index is reachable, then run again (the install starts over)",
                )
            progress.update(task, completed=total or 1, total=total or 1)
    (venv_dir / COMPLETE_MARKER).write_text(fingerprint)
    console.print(f"Argilla server environment ready ({time.monotonic() - started:.0f} s)")


def _run_install_step(command: list[str], log_file: IO[str], progress: Progress, task: TaskID) -> int:
    """Run one step with its output in the install log; pip's per-package lines advance the progress bar."""
    log_file.write(f"$ {' '.join(command)}\n")
    log_file.flush()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in process.stdout:
            log_file.write(line)
            if line.startswith(("Collecting ", "Processing ")):
                progress.advance(task)
            elif line.startswith("Installing collected packages"):
                progress.update(task, description="Installing packages")
    finally:  # on Ctrl-C, do not leave pip writing into a venv that the next call deletes
        if process.poll() is None:
            process.kill()
        process.wait()
    log_file.flush()
    return process.returncode


# -- start / status / stop -----------------------------------------------------------------------------------


@dataclass
class LocalArgilla:
    """A running local Argilla server; `stop()` (or leaving the `with` block) ends all of its processes."""

    url: str
    api_key: str
    data_dir: Path
    _state: dict = field(default_factory=dict, repr=False)
    _children: list[processes.Child] = field(default_factory=list, repr=False)

    def stop(self) -> None:
        if not self._children:  # never started, or already stopped
            return
        _stop_processes(self._state["processes"], own=[child.process for child in self._children])
        self._children.clear()
        _remove_state(self.data_dir, self._state["processes"])
        if self in _running:
            _running.remove(self)

    def wait(self) -> processes.Child | None:
        """Block until one of the server's processes exits: None when `stop` ended them from another shell, else
        the process that exited on its own (a crash)."""
        ended = processes.wait_for_exit(self._children)
        return None if self.stopped_elsewhere() else ended

    def stopped_elsewhere(self) -> bool:
        """Whether `stop` from another process is ending (or ended) this server, once its state was written: `stop`
        marks the state `stopping` before it signals the processes and removes it once they ended."""
        state = _read_state(self.data_dir)
        return state is None or bool(state.get("stopping"))

    @property
    def children(self) -> list[processes.Child]:
        return list(self._children)

    def __enter__(self) -> LocalArgilla:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start(
    data_dir: Path | None = None,
    port: int | None = None,
    owner_username: str = DEMO_OWNER_USERNAME,
    owner_password: str = DEMO_OWNER_PASSWORD,
    owner_api_key: str = DEMO_OWNER_API_KEY,
    redis_url: str | None = None,
    venv_dir: Path | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> LocalArgilla:
    """Start a local Argilla (API + web UI at the returned url) on 127.0.0.1, creating its venv if needed.

    `port=None` picks a free port. The owner user is created (or reset to these credentials) before the server
    answers. Processes are stopped by `LocalArgilla.stop()`, by `stop(data_dir)` from any process, and when
    this process exits (normally, on Ctrl-C or SIGTERM; if it is killed, each child notices and exits).
    """
    data_dir = Path(data_dir or default_data_dir()).expanduser().resolve()
    if owner_password == DEMO_OWNER_PASSWORD or owner_api_key == DEMO_OWNER_API_KEY:
        log.warning("Local Argilla uses the DEMO owner credentials: fine on 127.0.0.1, never expose it")
    if len(owner_password) < 8 or len(owner_api_key) < 8:
        raise AlignkitError("The Argilla owner password and API key must each be at least 8 characters")
    running = status(data_dir)
    if running is not None:
        raise AlignkitError(
            f"An Argilla server is already running for {data_dir} at {running['url']}",
            hint="use it, or stop it first (alignkit.feedback.server.stop)",
        )
    if port is not None and processes.is_listening(port):  # checked before a possibly minute-long first install
        raise AlignkitError(
            f"Port {port} on {LOOPBACK} is already in use",
            hint="pass another port (or none, to pick a free one), or stop what is listening there",
        )
    python = ensure_server_env(venv_dir)
    port = port or processes.free_port()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    _clear_tmp(data_dir)

    url = f"http://{LOOPBACK}:{port}"
    state = {"url": url, "port": port, "api_key": owner_api_key, "owner_username": owner_username}
    argilla = LocalArgilla(url=url, api_key=owner_api_key, data_dir=data_dir, _state=state | {"processes": []})
    try:
        if redis_url is None:
            redis_port = processes.free_port()
            redis_url = f"redis://{LOOPBACK}:{redis_port}/0"
            _launch(argilla, "redis", [python, LAUNCHER, "redis", "--port", str(redis_port)], env={})
            where = f"{LOOPBACK}:{redis_port}"
            _wait_until(argilla, lambda: processes.is_listening(redis_port), where, timeout_s, poll_s=0.1)
        argilla._state["redis_url"] = redis_url
        env = _server_env(data_dir, redis_url)
        owner_env = {
            "ALIGNKIT_ARGILLA_OWNER_USERNAME": owner_username,
            "ALIGNKIT_ARGILLA_OWNER_PASSWORD": owner_password,
            "ALIGNKIT_ARGILLA_OWNER_API_KEY": owner_api_key,
        }
        _launch(argilla, "server", [python, LAUNCHER, "server", "--port", str(port)], env=env | owner_env)
        _launch(argilla, "worker", [python, LAUNCHER, "worker"], env=env)
        _write_state(data_dir, argilla._state)  # from here on, `stop` from another shell may end it

        def ready() -> bool:  # the API answers an authenticated request as the owner (so migrations are done too)
            return processes.answers(url + "/api/v1/me", {"X-Argilla-Api-Key": owner_api_key})

        _wait_until(argilla, ready, url, timeout_s, poll_s=0.25, stoppable=True)
    except BaseException:
        argilla.stop()
        raise
    _running.append(argilla)
    _install_exit_hooks()
    return argilla


def status(data_dir: Path | None = None) -> dict | None:
    """The running server's state (url, port, api_key, processes, `healthy`), or None if none runs there."""
    data_dir = Path(data_dir or default_data_dir()).expanduser().resolve()
    state = _read_state(data_dir)
    if state is None:
        return None
    for process in state["processes"]:
        process["alive"] = processes.find_running(process["pid"], process["create_time"]) is not None
    if not any(process["alive"] for process in state["processes"]):
        return None
    state["healthy"] = processes.answers(state["url"] + "/api/v1/status")
    return state


def stop(data_dir: Path | None = None) -> bool:
    """Stop the server recorded in `data_dir` (from any process); False when none was running."""
    data_dir = Path(data_dir or default_data_dir()).expanduser().resolve()
    state = _read_state(data_dir)
    if state is None:
        return False
    _write_state(data_dir, state | {"stopping": True})  # the shell that started it tells this from a crash
    stopped = _stop_processes(state["processes"], own=[])
    _remove_state(data_dir, state["processes"])
    return stopped


# -- processes -----------------------------------------------------------------------------------------------


def _server_env(data_dir: Path, redis_url: str) -> dict[str, str]:
    return {
        "ARGILLA_HOME_PATH": str(data_dir),
        "ARGILLA_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 'argilla.db'}?check_same_thread=False",
        "ARGILLA_SEARCH_ENGINE": "sqlite",
        # Many annotators at once: wait for SQLite's write lock instead of failing after Argilla's default 5 s.
        "ARGILLA_DATABASE_SQLITE_TIMEOUT": "60",
        "ARGILLA_REDIS_URL": redis_url,
        "ARGILLA_AUTH_SECRET_KEY": _secret_key(data_dir),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TMPDIR": str(data_dir / "tmp"),  # argilla_server copies its web UI to a new temp dir at each import
        "COLUMNS": "160",  # its rich log handler wraps at 80 columns when writing to a file
    }


def _secret_key(data_dir: Path) -> str:
    """The JWT signing key, kept in data_dir so annotators' login tokens survive a restart."""
    path = data_dir / ".secret_key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


def _clear_tmp(data_dir: Path) -> None:
    tmp_dir = data_dir / "tmp"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir()


def _launch(argilla: LocalArgilla, name: str, command: list, env: dict[str, str]) -> None:
    """Start one of the server's processes, logging to `logs/<name>.log`, and record it in the state."""
    log_path = argilla.data_dir / "logs" / f"{name}.log"
    child = processes.spawn(name, command, log=log_path, cwd=argilla.data_dir, env=env, unset=_NOT_INHERITED)
    argilla._children.append(child)
    create_time = psutil.Process(child.process.pid).create_time()
    record = {"name": name, "pid": child.process.pid, "create_time": create_time, "log": str(log_path)}
    argilla._state["processes"].append(record)


class StoppedWhileStarting(Exception):
    """`stop` from another shell ended the server before it was ready (`status` may call it healthy sooner)."""


def _wait_until(
    argilla: LocalArgilla,
    ready: Callable[[], bool],
    where: str,
    timeout_s: float,
    poll_s: float,
    stoppable: bool = False,
) -> None:
    """Poll `ready` until it holds; a process that exits first, or the timeout, is an error showing the logs.
    `stoppable`: the state is written, so a process ended by `stop` from another shell is `StoppedWhileStarting`."""
    try:
        if processes.wait_until(ready, argilla._children, timeout_s, poll_s):
            return
    except processes.ChildExited as exited:
        if stoppable and argilla.stopped_elsewhere():
            raise StoppedWhileStarting from None
        child = exited.child
        raise AlignkitError(
            f"The local Argilla {child.name} process exited early (code {child.process.returncode})", exited.hint
        ) from None
    logs = "\n".join(f"--- {child.log}\n{processes.tail(child.log)}" for child in argilla._children)
    raise AlignkitError(
        f"The local Argilla did not answer at {where} within {timeout_s:.0f} s",
        hint=f"the machine may be busy (retry with a longer timeout_s) or a process is stuck; logs:\n{logs}",
    )


def _stop_processes(records: list[dict], own: list[subprocess.Popen]) -> bool:
    """Stop the server and worker first, then Redis (so they do not log lost connections)."""
    first = [record for record in records if record["name"] != "redis"]
    last = [record for record in records if record["name"] == "redis"]
    stopped = [processes.stop_groups(_running_leaders(wave, own), own) for wave in (first, last)]
    for process in own:
        process.wait(timeout=processes.STOP_GRACE_S)
    return any(stopped)


def _running_leaders(records: list[dict], own: list[subprocess.Popen]) -> list[psutil.Process]:
    """The recorded processes still running: this process's own children by their handles (a pid is not reused
    before its parent reaps it), the others by pid and start time."""
    own_by_pid = {process.pid: process for process in own}
    leaders = []
    for record in records:
        mine = own_by_pid.get(record["pid"])
        if mine is None:
            leaders.append(processes.find_running(record["pid"], record["create_time"]))
        elif mine.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                leaders.append(psutil.Process(mine.pid))
    return [process for process in leaders if process is not None]


def _write_state(data_dir: Path, state: dict) -> None:
    path = data_dir / STATE_FILE
    path.touch(mode=0o600)  # holds the owner's API key
    path.write_text(json.dumps(state, indent=2))


def _read_state(data_dir: Path) -> dict | None:
    path = data_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _remove_state(data_dir: Path, records: list[dict]) -> None:
    """Remove the state file (and temp dir) if they still describe these processes, not a newer server's."""
    state = _read_state(data_dir)
    if state is None or [r["pid"] for r in state["processes"]] != [r["pid"] for r in records]:
        return
    (data_dir / STATE_FILE).unlink()
    if (data_dir / "tmp").exists():
        shutil.rmtree(data_dir / "tmp")


def _install_exit_hooks() -> None:
    """Stop this process's servers at exit; turn SIGTERM into a normal exit so that happens on SIGTERM too."""
    global _exit_hooks_installed
    if _exit_hooks_installed:
        return
    _exit_hooks_installed = True
    atexit.register(_stop_all)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _stop_all() -> None:
    for argilla in list(_running):
        argilla.stop()
