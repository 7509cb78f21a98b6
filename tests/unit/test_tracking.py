"""`trainer.report_to`: TensorBoard event files in the run directory and trackio's local store, written by real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignkit import runs
from tests.conftest import CHAT_ROWS, run_cli, write_jsonl

PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
        "chosen": [{"role": "assistant", "content": f"It is {2 * i}."}],
        "rejected": [{"role": "assistant", "content": f"It is {2 * i + 1}, I think."}],
    }
    for i in range(8)
]


def tensorboard_scalars(run: runs.Run) -> dict[str, list[float]]:
    """Every scalar series in the run's tensorboard/ event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, list[float]] = {}
    for events in sorted((run.path / "tensorboard").glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            series.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
    return series


def trackio_logs(store: Path, project: str, run_name: str) -> list[dict]:
    """The run's logged rows read back through trackio's own storage (its store dir is fixed at import)."""
    code = (
        "import json, sys; from trackio.sqlite_storage import SQLiteStorage; "
        "print(json.dumps(SQLiteStorage.get_logs(sys.argv[1], sys.argv[2]), default=str))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, project, run_name],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TRACKIO_DIR": str(store)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def tracked_sft(tiny_model, tmp_path_factory) -> tuple[runs.Run, Path]:
    work = tmp_path_factory.mktemp("tracking")
    data = write_jsonl(work / "chat.jsonl", CHAT_ROWS)
    trackers = "[tensorboard,trackio]" if _installed("trackio") else "[tensorboard]"
    store = work / "trackio"
    result = run_cli(
        "sft", "--data", str(data), "--model", tiny_model, "--max-steps", "3", "--out", str(work / "sft"),
        "--set", "trainer.logging_steps=1", "--set", f"trainer.report_to={trackers}",
        env={"TRACKIO_DIR": str(store)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return runs.Run(work / "sft"), store


def _installed(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def test_tensorboard_curves_are_written_into_the_run_directory(tracked_sft):
    run, _ = tracked_sft
    scalars = tensorboard_scalars(run)
    assert len(scalars["train/loss"]) == 3, "one point per logged step"
    assert scalars["eval/loss"] and "train/learning_rate" in scalars
    logged = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert scalars["train/loss"] == pytest.approx([row["loss"] for row in logged if "loss" in row])


def test_trackio_logs_locally_under_the_run_name(tracked_sft):
    pytest.importorskip("trackio")
    run, store = tracked_sft
    assert (store / "alignkit.db").is_file(), "project `alignkit`, in the local store"
    rows = trackio_logs(store, "alignkit", run.path.name)
    losses = [row["train/loss"] for row in rows if "train/loss" in row]
    assert len(losses) == 3 and all(isinstance(x, float) for x in losses)


def test_dpo_reward_margin_and_win_rate_curves(tracked_sft, tmp_path):
    run, _ = tracked_sft
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    result = run_cli(
        "dpo", "--from", str(run.path), "--data", str(pairs), "--max-steps", "2", "--out", str(tmp_path / "dpo"),
        "--set", "trainer.logging_steps=1", "--set", "trainer.report_to=tensorboard",
        "--set", "data.validation_split=0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    scalars = tensorboard_scalars(runs.Run(tmp_path / "dpo"))
    # rewards/accuracies: how often the policy's implicit reward prefers the chosen reply (its win-rate on the pairs)
    for tag in ("train/loss", "train/rewards/accuracies", "train/rewards/margins"):
        assert len(scalars[tag]) == 2, tag


def test_unknown_tracker_name_is_one_clear_error(tiny_model, tmp_path, capsys):
    from tests.unit.test_bad_inputs import assert_one_line_error, invoke

    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    argv = ["sft", "--data", str(data), "--model", tiny_model, "--out", str(tmp_path / "run")]
    code, err = invoke([*argv, "--set", "trainer.report_to=tensorbored"], capsys)
    assert_one_line_error(code, err, ["tensorbored", "tensorboard"])
    assert not (tmp_path / "run").exists()


def test_rl_reward_and_kl_curves(tracked_sft, tmp_path):
    run, _ = tracked_sft
    result = run_cli(
        "rl", "--from", str(run.path), "--max-steps", "2", "--out", str(tmp_path / "rl"),
        "--set", "rewards=[concise]", "--set", "trainer.max_completion_length=8",
        "--set", "trainer.report_to=tensorboard",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    scalars = tensorboard_scalars(runs.Run(tmp_path / "rl"))
    # Both steps' completions are sampled in one batch (rl.steps_per_generation): rewards are logged when they are
    # scored, once; the KL at every step.
    for tag in ("train/reward", "train/rewards/concise/mean"):
        assert len(scalars[tag]) == 1, tag
    assert len(scalars["train/kl"]) == 2
