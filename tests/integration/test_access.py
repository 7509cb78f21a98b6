"""Access: annotators see and answer only their workspaces' rounds (SDK, REST session and the app), API keys never
appear in CLI output, logs or run dirs, and the demo credentials are flagged whenever they are used."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import argilla as rg
import pytest
from argilla._exceptions import ForbiddenError, NotFoundError
from argilla._models._record._response import UserResponseModel
from streamlit.testing.v1 import AppTest

from alignkit import processes, runs
from alignkit.errors import AlignkitError
from alignkit.feedback import argilla_schema as schema
from alignkit.feedback import client, push, server
from alignkit.jsonl import write_jsonl
from tests.conftest import TINY_TRAINER

pytestmark = [pytest.mark.argilla, pytest.mark.filterwarnings("ignore:.* not found:UserWarning")]
APP = Path(__file__).resolve().parents[2] / "apps" / "annotate.py"
MEMBER, OUTSIDER = ("access-member", "access-member-password"), ("access-outsider", "access-outsider-password")


@pytest.fixture(scope="module")
def round_in_team(argilla_server, tmp_path_factory) -> rg.Dataset:
    owner = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    client.add_user(owner, *MEMBER, "annotator", ["access-team"])
    client.add_user(owner, *OUTSIDER, "annotator", ["access-elsewhere"])
    candidates = tmp_path_factory.mktemp("access") / "candidates.jsonl"
    write_jsonl(
        candidates,
        [
            {"prompt": f"Secret question {i}?", "candidates": [{"text": "Short."}, {"text": "A much longer answer."}]}
            for i in range(3)
        ],
    )
    push.push(str(candidates), "access-round", "access-team", client=owner)
    return owner.datasets("access-round", workspace="access-team")


def test_outsider_sdk_client_can_neither_see_nor_answer_the_round(argilla_server, round_in_team):
    session = client.annotator_session(*OUTSIDER, url=argilla_server.url)
    sdk = rg.Argilla(api_url=argilla_server.url, api_key=session.http.headers["X-Argilla-Api-Key"])
    assert "access-round" not in {d.name for d in sdk.datasets}
    with pytest.raises((ForbiddenError, NotFoundError)):
        sdk.api.datasets.get(round_in_team.id)
    record_id = next(iter(round_in_team.records))._model.id
    me = UUID(session.get("/api/v1/me")["id"])
    answer = UserResponseModel(values={schema.PREFERENCE: {"value": "1"}}, status="submitted", user_id=me)
    with pytest.raises(ForbiddenError):
        sdk.api.records.create_record_response(record_id, answer)
    with pytest.raises(AlignkitError, match="may not access"):  # the app's REST path: queue and answer
        session.queue(str(round_in_team.id))
    with pytest.raises(AlignkitError, match="may not access"):
        session.respond(str(record_id), {schema.PREFERENCE: "1"})
    assert not [r for r in round_in_team.records(with_responses=True) if r.responses], "nothing was stored"


def log_in(app: AppTest, username: str, password: str) -> AppTest:
    app.run()
    app.text_input[0].input(username)
    app.text_input[1].input(password)
    return app.button[0].click().run()


def test_the_app_shows_a_round_only_to_its_workspace_members(argilla_server, round_in_team, monkeypatch, tmp_path):
    monkeypatch.setenv("ARGILLA_API_URL", argilla_server.url)
    monkeypatch.setenv("ALIGNKIT_OUTBOX", str(tmp_path / "outbox.sqlite"))
    outsider = log_in(AppTest.from_file(str(APP), default_timeout=60), *OUTSIDER)
    assert not outsider.exception
    assert "No dataset to rate yet" in " ".join(i.value for i in outsider.info)
    page = " ".join(m.value for m in outsider.markdown)
    assert "Secret question" not in page and "access-round" not in page

    member = log_in(AppTest.from_file(str(APP), default_timeout=60), *MEMBER)
    assert not member.exception
    assert "access-round" in member.selectbox[0].options
    assert "Secret question" in " ".join(m.value for m in member.markdown)


def test_api_keys_never_reach_cli_output_logs_or_run_dirs(
    argilla_server, round_in_team, monkeypatch, tmp_path, capsys, chat_file, tiny_model
):
    annotator_key = client.annotator_session(*MEMBER, url=argilla_server.url).http.headers["X-Argilla-Api-Key"]
    keys = [argilla_server.api_key, annotator_key]
    monkeypatch.setenv("ARGILLA_API_URL", argilla_server.url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.api_key)
    pairs, run_dir = tmp_path / "pairs.jsonl", tmp_path / "run"
    password_file = tmp_path / "password.txt"
    password_file.write_text("access-new-password\n")
    commands = [
        ["feedback", "users", "list"],
        ["feedback", "users", "add", "access-new", "--password-file", str(password_file), "--workspace", "access-team"],
        ["feedback", "simulate", "--dataset", "access-round", "--annotator", ":".join(MEMBER)],
        ["feedback", "pull", "--dataset", "access-round", "--workspace", "access-team", "--out", str(pairs)],
        [
            "sft",
            "--data",
            str(chat_file),
            "--model",
            tiny_model,
            "--max-steps",
            "1",
            "--out",
            str(run_dir),
            *TINY_TRAINER,
        ],
    ]
    output = []
    for argv in commands:
        output.append(invoke_ok(argv, capsys))
    assert pairs.read_text().strip() and runs.Run(run_dir).complete
    written = [
        p for p in [pairs, *run_dir.rglob("*"), *(argilla_server.data_dir / "logs").glob("*.log")] if p.is_file()
    ]
    for key in keys:
        assert not any(key in text for text in output), "an API key was printed"
        leaked = [str(p) for p in written if key.encode() in p.read_bytes()]
        assert not leaked, f"an API key was written to {leaked}"


def invoke_ok(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run a CLI command in-process that must succeed; returns its stdout + stderr."""
    import sys

    from alignkit import cli

    old, sys.argv = sys.argv, ["alignkit", *argv]
    try:
        cli.main()
    except SystemExit as exit_info:
        assert not exit_info.code, capsys.readouterr()
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_demo_credentials_are_flagged_when_used(argilla_server, tmp_path, caplog):
    busy_port = int(argilla_server.url.rsplit(":", 1)[-1])
    with caplog.at_level(logging.WARNING, logger="alignkit.feedback.server"), pytest.raises(AlignkitError):
        server.start(data_dir=tmp_path, port=busy_port)  # refused (port busy) right after the credential check
    assert "DEMO owner credentials" in caplog.text and "never expose it" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="alignkit.feedback.server"), pytest.raises(AlignkitError):
        server.start(data_dir=tmp_path, port=busy_port, owner_password="a-real-password", owner_api_key="a-real-key")
    assert "DEMO" not in caplog.text
    assert processes.LOOPBACK == "127.0.0.1"


def test_passwords_come_from_a_prompt_a_file_or_the_environment_never_the_command_line(argilla_server, tmp_path):
    env = {
        **os.environ,
        "ARGILLA_API_URL": argilla_server.url,
        "ARGILLA_API_KEY": argilla_server.api_key,
        "PYTHONWARNINGS": "ignore",
    }
    add = [sys.executable, "-m", "alignkit.cli", "feedback", "users", "add"]
    (tmp_path / "pw.txt").write_text("filed-password\n")
    ways = {  # name: (password, environment, flags, what is typed at the hidden prompt)
        "prompted": ("prompted-password", {}, [], "prompted-password\nprompted-password\n"),  # typed twice
        "filed": ("filed-password", {}, ["--password-file", str(tmp_path / "pw.txt")], None),
        "from-env": ("env-password", {"ALIGNKIT_PASSWORD": "env-password"}, [], None),
    }
    for name, (password, extra_env, flags, typed) in ways.items():
        done = subprocess.run(
            [*add, f"secret-{name}", *flags, "--workspace", "secret-team"],
            input=typed, capture_output=True, text=True, env={**env, **extra_env}, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert password not in done.stdout + done.stderr  # hidden input is never echoed
        client.annotator_session(f"secret-{name}", password, url=argilla_server.url)  # logs in with it
    refused = subprocess.run(
        [*add, "secret-visible", "--password", "visible-password"], capture_output=True, text=True, env=env, timeout=60
    )
    assert refused.returncode == 2 and "No such option" in refused.stderr

    (tmp_path / "annotators.txt").write_text("secret-filed:filed-password\nsecret-from-env:env-password\n")
    rows = [{"prompt": "Secret round?", "candidates": [{"text": "Short."}, {"text": "A much longer reply here."}]}]
    write_jsonl(tmp_path / "candidates.jsonl", rows)
    owner = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    push.push(str(tmp_path / "candidates.jsonl"), "secret-round", "secret-team", min_submitted=2, client=owner)
    simulated = subprocess.run(
        [sys.executable, "-m", "alignkit.cli", "feedback", "simulate", "--dataset", "secret-round",
         "--annotators-file", str(tmp_path / "annotators.txt")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr
    said = simulated.stdout + simulated.stderr
    assert "secret-filed: 1 responses" in said and "secret-from-env: 1 responses" in said
