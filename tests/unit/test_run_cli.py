"""`run_cli` forks each command from a process that imported the libraries already (ALIGNKIT_TEST_FORK=0: fresh)
(`tests/cli_forkserver.py`): what a command prints and exits with there must be what the same command gives in a
fresh interpreter, as users run it."""

from __future__ import annotations

import re

from tests.conftest import TINY_TRAINER, run_cli_forked, run_cli_fresh

PROGRESS = re.compile(r"\d+%\|")  # tqdm's bars: how many redraws depends on the speed
SPEED = re.compile(r"│ (train_runtime|run directory) ")
BOX = re.compile(r"[─┌┐└┘┬┴├┤┼│\s]+")  # a table's width follows its widest value: the runtime's digits


def seen(done) -> tuple[int, list[str], list[str]]:
    """What a user reads of a command: its exit code and its lines, less progress bars, timings and the run's path."""
    stdout = [BOX.sub(" ", line).strip() for line in done.stdout.splitlines() if not SPEED.search(line)]
    stderr = [line for line in done.stderr.splitlines() if not PROGRESS.search(line)]
    return done.returncode, stdout, stderr


def test_a_forked_command_prints_and_exits_as_a_fresh_one(tmp_path, tiny_model, chat_file):
    commands = [
        ["--help"],
        ["sft", "--data", str(tmp_path / "missing.jsonl"), "--model", tiny_model, "--out", str(tmp_path / "none")],
        ["sft", "--data", str(chat_file), "--learning_rate", "1e-4"],
        ["sft", "--data", str(chat_file), "--model", tiny_model, "--max-steps", "2", "--out", "run", *TINY_TRAINER],
    ]
    for argv in commands:
        (tmp_path / "fresh").mkdir(exist_ok=True), (tmp_path / "forked").mkdir(exist_ok=True)
        fresh, forked = run_cli_fresh(*argv, cwd=tmp_path / "fresh"), run_cli_forked(*argv, cwd=tmp_path / "forked")
        assert seen(forked) == seen(fresh), argv
    assert seen(fresh)[0] == 0 and (tmp_path / "forked" / "run" / "adapter" / "adapter_model.safetensors").is_file()
