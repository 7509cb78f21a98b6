"""The one process supervisor (`alignkit.processes`): a child's whole process tree stops, an early exit is reported
with its log, a child dies with its parent, and a preferred port is used only when it is free."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from alignkit import processes
from alignkit.errors import AlignkitError

# Starts a grandchild in a session of its own (as RQ's job process does), prints its pid, then waits.
ESCAPING_GRANDCHILD = (
    "import subprocess, sys, time; "
    "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True); "
    "print(grandchild.pid, flush=True); time.sleep(600)"
)
SLEEP = "import time; time.sleep(600)"


def wait_for_line(log: Path, timeout_s: float = 10) -> str:
    deadline = time.monotonic() + timeout_s
    while not log.read_text().strip():
        assert time.monotonic() < deadline, f"{log} stayed empty"
        time.sleep(0.05)
    return log.read_text().split()[0]


def gone(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_stop_ends_the_child_and_a_grandchild_that_left_its_group(tmp_path):
    child = processes.spawn(
        "tree", [sys.executable, "-c", ESCAPING_GRANDCHILD], log=tmp_path / "tree.log", cwd=tmp_path
    )
    grandchild = int(wait_for_line(child.log))
    assert os.getpgid(child.process.pid) == child.process.pid != os.getpgid(grandchild)  # leads its own group
    child.stop()
    assert child.process.returncode is not None, "stop() reaps its own child"
    assert gone(grandchild)


def test_an_early_exit_is_reported_with_the_last_lines_of_its_log(tmp_path):
    script = "import sys; print('\\n'.join(f'line {i}' for i in range(30))); sys.exit(3)"
    child = processes.spawn(
        "broken", [sys.executable, "-c", script], log=tmp_path / "logs" / "broken.log", cwd=tmp_path
    )
    with pytest.raises(processes.ChildExited) as exited:
        processes.wait_until(lambda: False, [child], timeout_s=30, poll_s=0.05)
    assert exited.value.message == "broken exited while starting (code 3)"
    assert exited.value.hint.endswith("\n".join(f"line {i}" for i in range(15, 30)))
    assert processes.wait_until(lambda: False, [], timeout_s=0.1, poll_s=0.05) is False


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_child_gets_sigterm_when_its_parent_dies(tmp_path):
    parent_script = (
        "import sys; from pathlib import Path; from alignkit import processes; "
        f"child = processes.spawn('sleeper', [sys.executable, '-c', 'import time; time.sleep(600)'], "
        f"log=Path({str(tmp_path / 'sleeper.log')!r}), cwd=Path({str(tmp_path)!r})); "
        "print(child.process.pid, flush=True); sys.stdin.read()"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    sleeper = int(parent.stdout.readline())
    parent.kill()
    parent.wait(timeout=10)
    assert gone(sleeper)


def test_a_preferred_port_is_used_only_when_nothing_listens_there():
    with socket.socket() as listener:
        listener.bind((processes.LOOPBACK, 0))
        listener.listen()
        busy = listener.getsockname()[1]
        assert processes.is_listening(busy)
        assert processes.free_port(prefer=busy) != busy
    assert processes.free_port(prefer=busy) == busy


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's boot time is read from /proc/stat")
def test_a_process_is_found_after_the_clock_moved_the_boot_time_a_second(tmp_path, monkeypatch):
    child = processes.spawn("sleeper", [sys.executable, "-c", SLEEP], log=tmp_path / "sleeper.log", cwd=tmp_path)
    recorded = psutil.Process(child.process.pid).create_time()
    boot_time = psutil._pslinux.boot_time
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: boot_time() + 1.0)  # what NTP does to /proc/stat
    assert processes.find_running(child.process.pid, recorded) is not None
    assert processes.find_running(child.process.pid, recorded - 60) is None, "another process on a reused pid"
    child.stop()


def test_a_local_argilla_stops_its_own_processes_whatever_their_records_say(tmp_path):
    """The records' start times are for `feedback server stop` from another shell; the process that started the
    server stops its children by their handles (CI once waited on a Redis never signalled, its record a second off)."""
    from alignkit.feedback.server import LocalArgilla

    children = [
        processes.spawn(name, [sys.executable, "-c", SLEEP], log=tmp_path / f"{name}.log", cwd=tmp_path)
        for name in ("server", "redis")
    ]
    records = [
        {"name": child.name, "pid": child.process.pid, "create_time": psutil.Process(child.process.pid).create_time()}
        for child in children
    ]
    records[1]["create_time"] -= 5  # as if the clock had moved since
    argilla = LocalArgilla(url="http://unused", api_key="", data_dir=tmp_path, _state={"processes": records})
    argilla._children.extend(children)
    started = time.monotonic()
    argilla.stop()
    assert [child.process.returncode for child in children] == [-15, -15], "both got SIGTERM and were reaped"
    assert time.monotonic() - started < processes.STOP_GRACE_S


def test_a_server_stopped_from_another_shell_while_it_started_is_said_stopped_not_crashed(tmp_path):
    """`status` could call the server healthy before the starting shell's own readiness check passed: a `stop` from
    another shell then made `feedback server start` fail, "the server process exited early (code -15)", exit 2."""
    from alignkit.feedback import server

    def exited_child() -> server.LocalArgilla:
        child = processes.spawn("server", [sys.executable, "-c", "pass"], log=tmp_path / "server.log", cwd=tmp_path)
        child.process.wait()
        argilla = server.LocalArgilla(url="http://unused", api_key="", data_dir=tmp_path, _state={"processes": []})
        argilla._children.append(child)
        return argilla

    def waiting(stoppable: bool) -> None:
        server._wait_until(exited_child(), lambda: False, "here", timeout_s=30, poll_s=0.05, stoppable=stoppable)

    server._write_state(tmp_path, {"processes": [], "stopping": True})  # what `stop` writes before it signals
    with pytest.raises(server.StoppedWhileStarting):
        waiting(stoppable=True)
    (tmp_path / server.STATE_FILE).unlink()  # and what it leaves once the processes ended
    with pytest.raises(server.StoppedWhileStarting):
        waiting(stoppable=True)
    with pytest.raises(AlignkitError, match="server process exited early"):  # before the state is written: a crash
        waiting(stoppable=False)
    server._write_state(tmp_path, {"processes": []})  # written, not stopping: a crash
    with pytest.raises(AlignkitError, match="server process exited early"):
        waiting(stoppable=True)
