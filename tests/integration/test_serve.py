"""`alignkit serve --jupyter` as users run it: one command prints a URL for Argilla, the annotate app, the playground
and JupyterLab; each answers; SIGTERM stops them all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.argilla


def test_serve_prints_and_serves_every_url(argilla_server, tmp_path):
    env = {**os.environ, "ARGILLA_API_URL": argilla_server.url, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "alignkit.cli", "serve", "--jupyter", "--data-dir", str(tmp_path)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while not any("Ctrl-C stops everything" in line for line in lines):
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
            lines.append(process.stdout.readline())
        urls = dict(re.findall(r"^(\w+)\s+(http://\S+)", "".join(lines), flags=re.M))
        assert set(urls) == {"argilla", "annotate", "playground", "jupyter"}, lines
        assert urls["argilla"] == argilla_server.url and "token=" in urls["jupyter"]
        for name in ("annotate", "playground"):
            with urllib.request.urlopen(f"{urls[name]}/_stcore/health", timeout=10) as response:
                assert response.status == 200, name
        with urllib.request.urlopen(urls["jupyter"].replace("/lab?", "/api/status?"), timeout=10) as response:
            assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    for url in (urls["annotate"], urls["playground"]):
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=5)
