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

# Starts a grandchild in a session of its own (as RQ's job process does), prints its pid, then waits.
ESCAPING_GRANDCHILD = (
    "import subprocess, sys, time; "
    "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True); "
    "print(grandchild.pid, flush=True); time.sleep(600)"
)


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
