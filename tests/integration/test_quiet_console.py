"""The terminal of each stage and of `feedback push` / `pull` shows alignkit's own lines only: no library warning, no
trainer log dict, no load report (they go to the run's log.txt); `--verbose` shows them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignkit import runs
from alignkit.jsonl import write_jsonl
from tests.conftest import CHAT_ROWS

NOISE = ("Warning", "warnings.warn", "{'loss'", "LOAD REPORT", "MISSING", "not found", "normalized")


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    """The real entry point with Python's default warning filters (no PYTHONWARNINGS=ignore); its whole output."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"} | (env or {})
    done = subprocess.run(
        [sys.executable, "-m", "alignkit.cli", *args], capture_output=True, text=True, env=environment, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def noise_in(output: str) -> list[str]:
    return [line for line in output.splitlines() if any(word in line for word in NOISE)]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("quiet")
    write_jsonl(work / "chat.jsonl", CHAT_ROWS)
    rejected = [{"role": "assistant", "content": "No idea."}]
    pairs = [{"prompt": r["messages"][:1], "chosen": r["messages"][1:], "rejected": rejected} for r in CHAT_ROWS]
    write_jsonl(work / "pairs.jsonl", pairs)
    return work


TINY = ["--max-steps", "2", "--set", "trainer.per_device_train_batch_size=4", "--set", "trainer.logging_steps=1"]


def test_sft_reward_and_dpo_print_no_library_noise_and_log_it_to_the_run(work, tiny_model):
    sft = cli("sft", "--data", str(work / "chat.jsonl"), "--model", tiny_model, "--out", str(work / "sft"), *TINY)
    reward = cli("reward", "--from", str(work / "sft"), "--data", str(work / "pairs.jsonl"), "--out",
                 str(work / "reward"), *TINY)  # fmt: skip
    dpo = cli("dpo", "--from", str(work / "sft"), "--data", str(work / "pairs.jsonl"), "--out", str(work / "dpo"),
              *TINY)  # fmt: skip
    for output in (sft, reward, dpo):
        assert noise_in(output) == []
    log = (work / "sft" / "log.txt").read_text()
    assert "step 1: {'loss'" in log  # the trainer's log dicts are in the run's log, not on the terminal
    assert runs.Run(work / "dpo").complete and "MISSING" in (work / "reward" / "log.txt").read_text()


def test_verbose_shows_what_the_quiet_console_hides(work, tiny_model):
    output = cli("sft", "--data", str(work / "chat.jsonl"), "--model", tiny_model, "--out", str(work / "loud"),
                 "--verbose", *TINY)  # fmt: skip
    assert any("{'loss'" in line for line in noise_in(output))


@pytest.mark.argilla
def test_feedback_push_and_pull_print_no_sdk_warnings(argilla_server, tmp_path):
    rows = [
        {"prompt": f"Quiet question {i}?", "candidates": [{"text": "Short."}, {"text": "A longer answer here."}]}
        for i in range(3)
    ]
    write_jsonl(tmp_path / "candidates.jsonl", rows)
    env = {"ARGILLA_API_URL": argilla_server.url, "ARGILLA_API_KEY": argilla_server.api_key}
    pushed = cli("feedback", "push", "--candidates", str(tmp_path / "candidates.jsonl"), "--dataset", "quiet-round",
                 "--workspace", "quiet-team", env=env)  # fmt: skip
    added = cli("feedback", "users", "add", "quiet-rater", "--workspace", "quiet-team",
                env=env | {"ALIGNKIT_PASSWORD": "quiet-rater-pw"})  # fmt: skip
    rated = cli("feedback", "simulate", "--dataset", "quiet-round", "--annotator", "quiet-rater:quiet-rater-pw",
                "--rule", "concise", "--noise", "0", env=env)  # fmt: skip
    pulled = cli("feedback", "pull", "--dataset", "quiet-round", "--workspace", "quiet-team", "--out",
                 str(tmp_path / "pairs.jsonl"), "--min-agreement", "0", env=env)  # fmt: skip
    assert [noise_in(output) for output in (pushed, added, rated, pulled)] == [[], [], [], []]
    assert "pushed 3 records to quiet-team/quiet-round (round 1," in pushed
    assert "then: alignkit feedback pull --dataset quiet-round --workspace quiet-team" in pushed
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert [pair["chosen"][-1]["content"] for pair in pairs] == ["Short."] * 3
    assert f"pairs written to {tmp_path / 'pairs.jsonl'}" in pulled  # where the next stage's --data is


@pytest.mark.argilla
def test_connecting_to_argilla_from_python_leaves_the_root_logger_unconfigured(argilla_server):
    """The README's Python API in a notebook: after `alignkit.push(...)` the SDK's "Logged in as ..." record had
    called `logging.basicConfig`, and the next stage printed every trainer dict as "INFO:alignkit:step 1: ..."."""
    script = (
        "import logging; from alignkit.feedback import client; "
        f"client.connect({argilla_server.url!r}, {argilla_server.api_key!r}); "
        "own = logging.getLogger('alignkit'); own.setLevel(logging.INFO); "  # as a run's log.txt sets it
        "own.info(\"step 1: {'loss': 1.0}\"); own.warning('disk almost full'); print(logging.getLogger().handlers)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n" and done.stderr.splitlines() == ["disk almost full"]  # warnings still show


def test_a_library_configuring_the_root_logger_does_not_bring_the_log_dicts_back():
    """`alignkit demo` printed "INFO:alignkit:step 1: {'loss': ...}" once something in its Argilla round had called
    `logging.basicConfig`: alignkit's records must not reach the root logger's handlers."""
    script = (
        "import logging; from alignkit import logs; logs.quiet_terminal(); logging.basicConfig(level=logging.INFO); "
        "own = logging.getLogger('alignkit'); own.info(\"step 1: {'loss': 1.0}\"); own.warning('disk almost full')"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["warning: disk almost full"]


def test_datasets_bars_are_off_in_a_process_that_imported_datasets_first():
    """datasets reads HF_DATASETS_DISABLE_PROGRESS_BARS once, when imported: in a process that imported it before
    alignkit quieted the terminal (the suite's CLI fork server, `tests/cli_forkserver.py`), setting the variable
    alone left its map/filter bars on."""
    script = (
        "import datasets; from alignkit import logs; logs.quiet_terminal(); "
        "from datasets.utils.tqdm import are_progress_bars_disabled; print(are_progress_bars_disabled())"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_DATASETS_DISABLE_PROGRESS_BARS"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout == "True\n", done.stderr


def test_the_hubs_retries_go_to_the_log_not_the_terminal(tmp_path):
    """An unknown model name offline printed ten lines of "... thrown while requesting HEAD ... Retrying in 8s" before
    alignkit's one-line error: huggingface_hub's records go where the other libraries' go."""
    script = (
        "from alignkit import logs; logs.quiet_terminal(); "
        "from huggingface_hub.utils import logging as hub; "
        "hub.get_logger('huggingface_hub.utils._http').warning('Retrying in 8s [Retry 5/5].')"
    )
    env = {**os.environ, "ALIGNKIT_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "Retrying in 8s" in (tmp_path / "logs" / "alignkit.log").read_text()
