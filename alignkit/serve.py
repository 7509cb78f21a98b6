"""`alignkit serve`: the local Argilla (unless `ARGILLA_API_URL` points elsewhere) plus the Streamlit apps.

Every process is bound to 127.0.0.1 and started in its own process group; Ctrl-C or SIGTERM stops them all, and a
child whose parent dies gets SIGTERM (Linux). Apps get the Argilla URL in `ARGILLA_API_URL` and never the owner's
API key: annotators log in with their own credentials. App output goes to `<argilla data dir>/logs/app-<name>.log`.

    with serve.start_app("annotate", env={"ARGILLA_API_URL": url}) as app:   # what the tests use
        page.goto(app.url)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from alignkit.errors import AlignkitError
from alignkit.feedback import server
from alignkit.feedback.client import check_reachable

REPO = Path(__file__).resolve().parent.parent
APPS = {"annotate": REPO / "apps" / "annotate.py", "playground": REPO / "apps" / "playground.py"}
LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8501  # Streamlit's own default; a free port is used when it is taken
JUPYTER_PORT = 8888
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1
_HIDDEN_FROM_APPS = ("ARGILLA_API_KEY",)


@dataclass
class AppProcess:
    """A running child (a Streamlit app or Jupyter); `stop()` or leaving the `with` block ends its process group."""

    name: str
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT_S)
                return

    def __enter__(self) -> AppProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run(
    apps: Iterable[str] = ("annotate", "playground"),
    port: int | None = None,
    argilla_port: int | None = None,
    data_dir: Path | None = None,
    jupyter: bool = False,
) -> None:
    """Start Argilla, the apps and optionally JupyterLab; print their URLs; block until Ctrl-C/SIGTERM or a child
    dies, then stop everything this call started.

    Argilla: `ARGILLA_API_URL` when set, else the local server already running for `data_dir`, else a new one on
    `argilla_port` (default: a free port). Apps: the first on `port` (default 8501, or a free port when taken), the
    others on the next ports.
    """
    apps = list(apps)
    for name in apps:
        app_file(name)  # an unknown name fails before anything starts
    console = Console()
    data_dir = Path(data_dir or server.default_data_dir()).expanduser().resolve()
    ports = app_ports(len(apps), port)
    children: list[AppProcess] = []
    argilla: server.LocalArgilla | None = None
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt) if in_main_thread else None
    try:
        argilla_url = os.environ.get("ARGILLA_API_URL") or (server.status(data_dir) or {}).get("url")
        if argilla_url:
            check_reachable(argilla_url)
        else:
            console.print("Starting the local Argilla…")
            argilla = server.start(data_dir=data_dir, port=argilla_port)
            argilla_url = argilla.url
        console.print(f"{'argilla':<10} {argilla_url}")
        env = {"ARGILLA_API_URL": argilla_url, **workdir_env()}
        for name, app_port in zip(apps, ports, strict=True):
            children.append(start_app(name, port=app_port, env=env, log_dir=data_dir / "logs"))
            console.print(f"{name:<10} {children[-1].url}")
        if jupyter:
            children.append(start_jupyter(free_port(prefer=JUPYTER_PORT), env=env, log_dir=data_dir / "logs"))
            console.print(f"{'jupyter':<10} {children[-1].url}")
        console.print("Ctrl-C stops everything.")
        _wait_for_exit(children)
    except KeyboardInterrupt:
        console.print("Stopping…")
    finally:
        for child in reversed(children):
            child.stop()
        if argilla is not None:
            argilla.stop()
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def workdir_env() -> dict[str, str]:
    """Where the playground and Runs page look for runs and eval results: the caller's `runs/` and `eval/` (apps run
    from the repository root), unless `ALIGNKIT_RUNS_DIR` / `ALIGNKIT_EVAL_DIR` say otherwise."""
    return {
        "ALIGNKIT_RUNS_DIR": str(Path(os.environ.get("ALIGNKIT_RUNS_DIR", "runs")).resolve()),
        "ALIGNKIT_EVAL_DIR": str(Path(os.environ.get("ALIGNKIT_EVAL_DIR", "eval")).resolve()),
    }


def app_ports(count: int, port: int | None = None) -> list[int]:
    """Ports for `count` apps: `port` (which must be free) or 8501 (or any free port when taken), then the next."""
    if port is not None and free_port(prefer=port) != port:
        raise AlignkitError(f"port {port} on {LOOPBACK} is already in use", "pass another --port, or none")
    first = port or DEFAULT_PORT
    ports: list[int] = []
    for i in range(count):
        candidate = free_port(prefer=first + i)
        ports.append(candidate if candidate not in ports else free_port())
    return ports


def app_file(name: str) -> Path:
    if name not in APPS:
        raise AlignkitError(f"unknown app {name!r}", f"one of: {', '.join(APPS)}")
    if not APPS[name].exists():
        raise AlignkitError(f"app {name!r} is not in this checkout ({APPS[name]})", "run from the alignkit repository")
    return APPS[name]


def start_app(
    name: str,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> AppProcess:
    """Start one Streamlit app on 127.0.0.1 (a free port by default) and return once `/_stcore/health` answers."""
    path = app_file(name)
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(path),
        "--server.address",
        LOOPBACK,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--global.developmentMode",
        "false",
    ]
    url = f"http://{LOOPBACK}:{port}"
    child = _spawn(name, command, url, env or {}, log_dir)
    _wait_until_answers(child, f"{url}/_stcore/health", timeout_s)
    return child


def start_jupyter(port: int, env: Mapping[str, str] | None = None, log_dir: Path | None = None) -> AppProcess:
    """JupyterLab on 127.0.0.1 in `notebooks/`, with a fresh token in the printed URL."""
    if shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is None:
        raise AlignkitError("JupyterLab is not installed in this environment", "pip install jupyterlab")
    token = secrets.token_urlsafe(24)
    notebooks = REPO / "notebooks"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--ServerApp.ip={LOOPBACK}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={notebooks if notebooks.is_dir() else REPO}",
        f"--IdentityProvider.token={token}",
    ]
    if os.geteuid() == 0:  # containers often run as root; Jupyter refuses that unless told
        command.append("--ServerApp.allow_root=True")
    child = _spawn("jupyter", command, f"http://{LOOPBACK}:{port}/lab?token={token}", env or {}, log_dir)
    _wait_until_answers(child, f"http://{LOOPBACK}:{port}/api/status?token={token}", START_TIMEOUT_S)
    return child


def free_port(prefer: int | None = None) -> int:
    """`prefer` when nothing listens there, else any free port on 127.0.0.1."""
    if prefer is not None:
        with socket.socket() as probe:
            if probe.connect_ex((LOOPBACK, prefer)) != 0:
                return prefer
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _spawn(name: str, command: list[str], url: str, env: Mapping[str, str], log_dir: Path | None) -> AppProcess:
    log_dir = Path(log_dir or server.default_data_dir() / "logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"app-{name}.log"
    child_env = {k: v for k, v in os.environ.items() if k not in _HIDDEN_FROM_APPS} | dict(env)
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    return AppProcess(name=name, url=url, process=process, log=log_path)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (so a killed `alignkit serve` leaves nothing)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_until_answers(child: AppProcess, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if child.process.poll() is not None:
            raise AlignkitError(
                f"{child.name} exited while starting (code {child.process.returncode})",
                f"see {child.log}; last lines:\n{_tail(child.log)}",
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            child.stop()
            raise AlignkitError(f"{child.name} did not answer at {url} within {timeout_s:.0f} s", f"see {child.log}")
        time.sleep(0.2)


def _wait_for_exit(children: list[AppProcess]) -> None:
    while True:
        for child in children:
            if child.process.poll() is not None:
                raise AlignkitError(
                    f"{child.name} stopped (code {child.process.returncode})", f"see {child.log}:\n{_tail(child.log)}"
                )
        time.sleep(0.5)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"
