"""Every feedback command and the annotate app against an Argilla reached only through `ARGILLA_API_URL` /
`ARGILLA_API_KEY`, as a production deployment is.

The server is the session's local one on a free (non-default) port, used as if it were remote: the commands run with
an empty alignkit cache, so there is no local server state for them to discover; only the environment says where
Argilla is.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from urllib.parse import urlparse

import pytest
from streamlit.testing.v1 import AppTest

from alignkit.feedback import server
from alignkit.processes import free_port
from tests.conftest import REPO, run_cli, write_jsonl

pytestmark = pytest.mark.argilla

ANNOTATOR = ("remote-rater", "remote-rater-password")
WORKSPACE = "remote-team"
PROMPTS = [f"Explain idea number {i}." for i in range(4)]


@pytest.fixture(scope="module")
def remote_env(argilla_server, tmp_path_factory) -> dict[str, str]:
    """Only the two variables point at the server; the cache (where local-server state lives) is empty."""
    assert urlparse(argilla_server.url).port != 6900, "not Argilla's default port"
    cache = tmp_path_factory.mktemp("empty-cache")
    return {
        "ARGILLA_API_URL": argilla_server.url,
        "ARGILLA_API_KEY": argilla_server.api_key,
        "ALIGNKIT_CACHE": str(cache),
        "XDG_CACHE_HOME": str(cache),
    }


def cli(env: dict[str, str], *args: str) -> str:
    result = run_cli(*args, env=env, timeout=180)
    assert result.returncode == 0, f"alignkit {' '.join(args)}:\n{result.stderr[-2000:]}"
    return result.stdout + result.stderr


def test_no_local_server_is_discoverable_with_that_cache(remote_env, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_CACHE", remote_env["ALIGNKIT_CACHE"])
    assert server.status() is None


def test_feedback_round_through_the_environment_only(remote_env, tmp_path):
    username, password = ANNOTATOR
    cli({**remote_env, "ALIGNKIT_PASSWORD": password}, "feedback", "users", "add", username, "--workspace", WORKSPACE)
    listed = cli(remote_env, "feedback", "users", "list")
    assert username in listed and WORKSPACE in listed and "annotator" in listed

    rows = [
        {
            "prompt": [{"role": "user", "content": prompt}],
            "candidates": [{"text": "short."}, {"text": "a much longer and wordier answer to this."}],
        }
        for prompt in PROMPTS
    ]
    candidates = write_jsonl(tmp_path / "candidates.jsonl", rows)
    cli(remote_env, "feedback", "push", "--candidates", str(candidates), "--dataset", "remote-1",
        "--workspace", WORKSPACE)  # fmt: skip
    cli(remote_env, "feedback", "simulate", "--dataset", "remote-1", "--annotator", f"{username}:{password}",
        "--rule", "concise", "--noise", "0")  # fmt: skip
    pairs = tmp_path / "pairs.jsonl"
    cli(remote_env, "feedback", "pull", "--dataset", "remote-1", "--workspace", WORKSPACE, "--out", str(pairs))
    pulled = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert len(pulled) == len(PROMPTS)
    assert all(p["chosen"][0]["content"] == "short." for p in pulled)

    sft_rows = [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "ok."}]} for p in PROMPTS
    ]
    review_data = write_jsonl(tmp_path / "synth.jsonl", sft_rows)
    out = cli(remote_env, "feedback", "review", "push", "--data", str(review_data), "--dataset", "remote-review",
              "--workspace", WORKSPACE)  # fmt: skip
    assert f"pushed {len(PROMPTS)} records" in out
    accepted = tmp_path / "accepted.jsonl"
    cli(remote_env, "feedback", "review", "pull", "--dataset", "remote-review", "--workspace", WORKSPACE,
        "--out", str(accepted))  # fmt: skip
    assert accepted.read_text() == ""  # nobody has reviewed yet: nothing accepted, and no error


def test_wrong_api_key_is_one_clear_error(remote_env):
    result = run_cli("feedback", "users", "list", env={**remote_env, "ARGILLA_API_KEY": "not-a-key"})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "refused the API key" in lines[0]


def test_without_the_url_and_no_local_server_the_error_says_what_to_set(remote_env):
    env = {k: v for k, v in remote_env.items() if not k.startswith("ARGILLA_")}
    result = run_cli("feedback", "users", "list", env={**env, "ARGILLA_API_URL": "", "ARGILLA_API_KEY": ""})
    assert result.returncode == 2 and "ARGILLA_API_URL" in result.stderr and "Traceback" not in result.stderr


def test_annotate_app_logs_in_and_shows_a_record_from_the_remote_server(remote_env, tmp_path, monkeypatch):
    username, password = "app-rater", "app-rater-password"
    rows = [{"prompt": [{"role": "user", "content": "Remote prompt?"}], "candidates": [{"text": "A."}, {"text": "B!"}]}]
    candidates = write_jsonl(tmp_path / "candidates.jsonl", rows)
    cli({**remote_env, "ALIGNKIT_PASSWORD": password}, "feedback", "users", "add", username, "--workspace", "app-team")
    cli(remote_env, "feedback", "push", "--candidates", str(candidates), "--dataset", "remote-app",
        "--workspace", "app-team")  # fmt: skip
    for key, value in remote_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ARGILLA_API_KEY")  # the app never gets the owner's key (alignkit serve hides it too)
    app = AppTest.from_file(str(REPO / "apps" / "annotate.py"), default_timeout=60)
    app.run()
    assert remote_env["ARGILLA_API_URL"] in app.caption[0].value
    app.text_input[0].input(username)
    app.text_input[1].input(password)
    app.button[0].click().run()
    assert not app.exception and not app.error
    shown = "\n".join(m.value for m in app.markdown)
    assert "Remote prompt?" in shown and "B!" in shown


def test_serve_starts_the_app_on_the_remote_argilla_and_no_local_server(remote_env, tmp_path):
    """`alignkit serve` with ARGILLA_API_URL set: the annotate app answers, on that URL; nothing local starts."""
    data_dir = tmp_path / "argilla-data"
    command = [sys.executable, "-m", "alignkit.cli", "serve", "--app", "annotate", "--data-dir", str(data_dir)]
    command += ["--port", str(free_port())]
    process = subprocess.Popen(
        command,
        env={**os.environ, **remote_env, "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not any(line.startswith("annotate") for line in seen) and time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=1.0))
            except queue.Empty:
                assert process.poll() is None, "".join(seen)
        output = "".join(seen)
        app_url = next(line.split()[1] for line in seen if line.startswith("annotate"))
        assert remote_env["ARGILLA_API_URL"] in output and "Starting the local Argilla" not in output
        with urllib.request.urlopen(app_url, timeout=30) as page:
            assert page.status == 200
        assert server.status(data_dir) is None, "no local Argilla was started"
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # alignkit serve stops its app on SIGTERM
        process.wait(timeout=60)
