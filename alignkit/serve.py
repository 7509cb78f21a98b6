"""`alignkit serve`: the local Argilla (unless `ARGILLA_API_URL` points elsewhere) plus the Streamlit apps.

Every process is bound to 127.0.0.1 and started in its own process group; Ctrl-C or SIGTERM stops them all, and a
child whose parent dies gets SIGTERM (Linux). Apps get the Argilla URL in `ARGILLA_API_URL` and never the owner's
API key: annotators log in with their own credentials. App output goes to `<argilla data dir>/logs/app-<name>.log`.

    with serve.start_app("annotate", env={"ARGILLA_API_URL": url}) as app:   # what the tests use
        page.goto(app.url)
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from alignkit import processes
from alignkit.errors import AlignkitError
from alignkit.feedback import server
from alignkit.feedback.client import check_reachable
from alignkit.paths import MODEL_PATH_ENV
from alignkit.processes import LOOPBACK

REPO = Path(__file__).resolve().parent.parent
APPS = {"annotate": REPO / "apps" / "annotate.py", "playground": REPO / "apps" / "playground.py"}
DEFAULT_PORT = 8501  # Streamlit's own default; a free port is used when it is taken
JUPYTER_PORT = 8888
START_TIMEOUT_S = 60.0
_HIDDEN_FROM_APPS = ("ARGILLA_API_KEY",)


@dataclass
class AppProcess:
    """A running Streamlit app or JupyterLab at `url`; `stop()` or leaving the `with` block ends its process group."""

    url: str
    child: processes.Child

    def stop(self) -> None:
        self.child.stop()

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
        if argilla and (hint := server.other_shells_hint(data_dir)):
            console.print(hint, soft_wrap=True)
        env = {"ARGILLA_API_URL": argilla_url, **workdir_env()}
        for name, app_port in zip(apps, ports, strict=True):
            children.append(start_app(name, port=app_port, env=env, log_dir=data_dir / "logs"))
            console.print(f"{name:<10} {children[-1].url}")
        if jupyter:
            children.append(start_jupyter(processes.free_port(prefer=JUPYTER_PORT), env=env, log_dir=data_dir / "logs"))
            console.print(f"{'jupyter':<10} {children[-1].url}")
        console.print("Ctrl-C stops everything.")
        stopped = processes.wait_for_exit([app.child for app in children] + (argilla.children if argilla else []))
        raise AlignkitError(
            f"{stopped.name} stopped (code {stopped.process.returncode})",
            f"see {stopped.log}:\n{processes.tail(stopped.log)}",
        )
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
    from the repository root), unless `ALIGNKIT_RUNS_DIR` / `ALIGNKIT_EVAL_DIR` say otherwise; and where moved base
    models are (`ALIGNKIT_MODEL_PATH`, its relative entries made the caller's)."""
    env = {
        "ALIGNKIT_RUNS_DIR": str(Path(os.environ.get("ALIGNKIT_RUNS_DIR", "runs")).resolve()),
        "ALIGNKIT_EVAL_DIR": str(Path(os.environ.get("ALIGNKIT_EVAL_DIR", "eval")).resolve()),
    }
    if entries := [e for e in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep) if e]:
        env[MODEL_PATH_ENV] = os.pathsep.join(str(Path(e).expanduser().resolve()) for e in entries)
    return env


def app_ports(count: int, port: int | None = None) -> list[int]:
    """Ports for `count` apps: `port` (which must be free) or 8501 (or any free port when taken), then the next."""
    if port is not None and processes.is_listening(port):
        raise AlignkitError(f"port {port} on {LOOPBACK} is already in use", "pass another --port, or none")
    first = port or DEFAULT_PORT
    ports: list[int] = []
    for i in range(count):
        candidate = processes.free_port(prefer=first + i)
        ports.append(candidate if candidate not in ports else processes.free_port())
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
    port = port or processes.free_port()
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
    app = _spawn_app(name, command, url, env or {}, log_dir)
    _wait_until_answers(app, f"{url}/_stcore/health", timeout_s)
    return app


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
    app = _spawn_app("jupyter", command, f"http://{LOOPBACK}:{port}/lab?token={token}", env or {}, log_dir)
    _wait_until_answers(app, f"http://{LOOPBACK}:{port}/api/status?token={token}", START_TIMEOUT_S)
    return app


def _spawn_app(name: str, command: list[str], url: str, env: Mapping[str, str], log_dir: Path | None) -> AppProcess:
    """Start an app from the repository root, its output in `<log_dir>/app-<name>.log`, without the owner's key."""
    log = Path(log_dir or server.default_data_dir() / "logs") / f"app-{name}.log"
    child = processes.spawn(name, command, log=log, cwd=REPO, env=env, unset=_HIDDEN_FROM_APPS)
    return AppProcess(url=url, child=child)


def _wait_until_answers(app: AppProcess, url: str, timeout_s: float) -> None:
    if not processes.wait_until(lambda: processes.answers(url), [app.child], timeout_s, poll_s=0.2):
        app.stop()
        raise AlignkitError(
            f"{app.child.name} did not answer at {url} within {timeout_s:.0f} s", f"see {app.child.log}"
        )


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
