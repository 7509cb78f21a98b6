"""`alignkit sft` and `alignkit dpo` unchanged under `accelerate launch` with 2 processes (gloo on this CPU machine).

The launch uses configs/accelerate/ddp.yaml, the file GPU users use, with `--num_processes 2`: on a machine without GPUs
accelerate starts the two processes and alignkit runs them on CPUs (torch.distributed, gloo). What is checked: both
processes trained one model together (each step consumed 2 x the per-device batch), and only the main process wrote the
run directory, which records the world size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from alignkit import lineage, runs
from tests.conftest import CHAT_ROWS, REPO, run_cli, write_jsonl

CONFIGS = REPO / "configs" / "accelerate"
PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
        "chosen": [{"role": "assistant", "content": f"It is {2 * i}."}],
        "rejected": [{"role": "assistant", "content": f"It is {2 * i + 1}, I think."}],
    }
    for i in range(16)
]


def accelerate_launch(
    cwd: Path, *args: str, config: str = "ddp.yaml", check: bool = True, processes: int = 2
) -> subprocess.CompletedProcess[str]:
    """`accelerate launch -q --config_file CONFIG --num_processes PROCESSES -m alignkit.cli ARGS` with this checkout
    (`-q`: a failed process's exit without the launcher's own traceback); `check`: it must succeed."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    command = [accelerate, "launch", "-q", "--config_file", str(CONFIGS / config), "--num_processes", str(processes)]
    command += ["--main_process_port", "0", "-m", "alignkit.cli", *args]  # port 0: a free one
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=240, env=env)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def only_run(runs_dir: Path) -> runs.Run:
    """The single run directory under runs_dir: the processes agreed on one path and no other one wrote its own."""
    made = [p for p in runs_dir.iterdir()]
    assert len(made) == 1, f"expected one run directory, found {made}"
    return runs.Run(made[0])


def assert_written_by_main_only(run: runs.Run, steps: int, engine: str = "ddp") -> None:
    manifest = run.manifest
    assert manifest["status"] == "complete"
    assert manifest["distributed"] == {"world_size": 2, "engine": engine}
    logged = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    train_steps = [row["step"] for row in logged if "loss" in row]
    assert train_steps == list(range(1, steps + 1)), "each step logged once (main process only), not twice"
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()


@pytest.fixture(scope="module")
def sft_run(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> runs.Run:
    work = tmp_path_factory.mktemp("ddp-sft")
    data = write_jsonl(work / "chat.jsonl", CHAT_ROWS)  # 24 rows: 21 train, 3 validation
    accelerate_launch(
        work, "sft", "--data", str(data), "--model", tiny_model, "--max-steps", "3",
        "--set", "trainer.per_device_train_batch_size=2", "--set", "trainer.logging_steps=1",
    )  # fmt: skip
    return only_run(work / "runs")


def test_sft_two_processes_train_one_model_and_only_main_writes(sft_run):
    assert_written_by_main_only(sft_run, steps=3)
    # 21 train rows, 2 per process per step: 2 processes make an epoch 6 steps (one alone would need 11).
    assert sft_run.metrics["global_step"] == 3
    last = [json.loads(line) for line in (sft_run.path / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["epoch"] == pytest.approx(3 / 6)
    assert sft_run.metrics["train_tokens"] > 0 and sft_run.metrics["eval_loss"] is not None


def test_dpo_two_processes_from_the_sft_run(sft_run, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    accelerate_launch(
        tmp_path, "dpo", "--from", str(sft_run.path), "--data", str(pairs), "--max-steps", "2",
        "--set", "trainer.per_device_train_batch_size=2", "--set", "trainer.logging_steps=1",
        "--set", "data.validation_split=0",
    )  # fmt: skip
    run = only_run(tmp_path / "runs")
    assert_written_by_main_only(run, steps=2)
    assert run.resolve(run.manifest["adapter_continues"]) == sft_run.path.resolve()
    assert "train_rewards/accuracies" in run.metrics
    # 16 pairs, 2 per process per step: an epoch is 4 steps with 2 processes.
    last = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["epoch"] == pytest.approx(2 / 4)
    model, _ = lineage.load_run_model(run.path)  # the saved adapter reloads as the DPO policy
    assert model is not None


def test_reward_two_processes_score_validation_with_one_progress_bar(sft_run, tmp_path):
    """Every process scores the validation pairs (the model's forward is collective under FSDP/ZeRO-3); the main
    process alone draws the bar and writes the run."""
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    result = accelerate_launch(
        tmp_path, "reward", "--from", str(sft_run.path), "--data", str(pairs), "--max-steps", "2",
        "--set", "trainer.per_device_train_batch_size=2", "--set", "trainer.logging_steps=1",
    )  # fmt: skip
    run = only_run(tmp_path / "runs")
    assert_written_by_main_only(run, steps=2)
    assert run.metrics["pairwise_accuracy"] is not None
    assert result.stderr.count("scoring validation pairs:   0%") == 1, "one bar, not one per process"


def test_fsdp_shards_on_cpu_and_saves_the_whole_adapter(sft_run, tiny_model, tmp_path):
    """FSDP2 runs on CPUs (gloo) too: the adapter is gathered from the shards and saved whole by the main process."""
    from safetensors import safe_open

    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    accelerate_launch(
        tmp_path, "sft", "--data", str(data), "--model", tiny_model, "--max-steps", "2",
        "--set", "trainer.per_device_train_batch_size=2", "--set", "trainer.logging_steps=1",
        config="fsdp.yaml",
    )  # fmt: skip
    run = only_run(tmp_path / "runs")
    assert_written_by_main_only(run, steps=2, engine="fsdp")

    def tensors(r: runs.Run) -> dict[str, Any]:
        with safe_open(r.adapter_dir / "adapter_model.safetensors", "pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 — safe_open is not a mapping

    sharded, replicated = tensors(run), tensors(sft_run)
    assert {k: v.shape for k, v in sharded.items()} == {k: v.shape for k, v in replicated.items()}
    assert all(v.abs().sum() > 0 for k, v in sharded.items() if "lora_B" in k), "trained, not zero-initialised"
    model, _ = lineage.load_run_model(run.path)
    assert model is not None


def test_bad_data_is_one_error_line_not_one_per_process(tiny_model, tmp_path):
    """Both processes find the same bad row: the user reads it once, as the one line a single process prints."""
    bad = write_jsonl(tmp_path / "chat.jsonl", [*CHAT_ROWS[:3], {"instruction": "Add 2 and 2."}])
    result = accelerate_launch(tmp_path, "sft", "--data", str(bad), "--model", tiny_model, check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "chat.jsonl:line 4" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_generate_splits_the_prompts_between_processes(sft_run, tmp_path):
    """Each process samples its share of the prompts (its own seed: the seed plus its rank); the main process alone
    writes every row, in prompt order."""
    import torch

    import alignkit

    questions = [f"What is {i} times {i}?" for i in range(5)]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": q} for q in questions])
    sampling = ["--n", "2", "--max-new-tokens", "6", "--batch-size", "1", "--seed", "3"]
    result = accelerate_launch(
        tmp_path, "generate", "--from", str(sft_run.path), "--prompts", str(prompts), "--out", "out.jsonl", *sampling
    )
    assert result.stderr.count("candidates written") == 1
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["prompt"][-1]["content"] for row in rows] == questions
    assert not (tmp_path / "out.jsonl.partial").exists()
    # each process drew from seed + rank, its share of each batch x processes prompts: the rows say how many processes
    # and what batch size, or the seed alone repeats none
    made_with = {(c["sampling"]["seed"], c["sampling"]["processes"], c["sampling"]["batch_size"]) for row in rows
                 for c in row["candidates"]}  # fmt: skip
    assert made_with == {(3, 2, 1)}

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the launched processes (OMP_NUM_THREADS=1): the same arithmetic, the same draws
    try:
        for rank in (0, 1):  # prompts 0, 2, 4 were rank 0's with seed 3; 1, 3 rank 1's with seed 4
            share = write_jsonl(tmp_path / f"share-{rank}.jsonl", [{"prompt": q} for q in questions[rank::2]])
            out = alignkit.candidates(
                share, tmp_path / f"alone-{rank}.jsonl", n=2, from_run=sft_run.path, max_new_tokens=6,
                seed=3 + rank, batch_size=1,
            )  # fmt: skip
            made = [json.loads(line)["candidates"] for line in out.read_text().splitlines()]
            alone = [[c["text"] for c in candidates] for candidates in made]
            assert "processes" not in made[0][0]["sampling"], "one process's rows are as they were"
            assert [[c["text"] for c in row["candidates"]] for row in rows[rank::2]] == alone
    finally:
        torch.set_num_threads(threads)


def test_commands_that_run_in_one_process_refuse_accelerate_launch(tmp_path):
    """`alignkit eval` under accelerate would evaluate everything once per process, each writing the same files."""
    launched = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}  # what the launcher sets in each process
    result = run_cli("eval", "--runs", str(tmp_path), "--out", str(tmp_path / "eval"), cwd=tmp_path, env=launched)
    assert result.returncode == 2
    assert result.stderr.startswith("error: alignkit eval runs in one process, not under accelerate launch")
    assert not (tmp_path / "eval").exists()


# Rows of distinct lengths: the tokens a step trained tell which rows it took.
COUNTING_ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"Count to {i}."},
            {"role": "assistant", "content": " ".join(str(k) for k in range(i + 1))},
        ]
    }
    for i in range(24)
]
RESUMABLE = ["--set", "trainer.save_steps=2", "--set", "trainer.logging_steps=1", "--set", "data.validation_split=0"]


def tokens_by_step(run: runs.Run) -> dict[int, int]:
    """The training tokens seen by the end of each step (every process's rows), from metrics.jsonl."""
    logged = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["num_input_tokens_seen"] for row in logged if "loss" in row}


def interrupted_at(run: runs.Run, step: int, copy: Path) -> runs.Run:
    """A copy of finished `run` as a run killed after its checkpoint at `step` leaves it."""
    shutil.copytree(run.path, copy)
    stopped = runs.Run(copy)
    for checkpoint in stopped.checkpoints():
        if runs.checkpoint_step(checkpoint) > step:
            shutil.rmtree(checkpoint)
    shutil.rmtree(stopped.adapter_dir)
    (copy / "metrics.json").unlink()
    parts = [{**part, "to_step": step} for part in run.manifest["training_parts"]]
    stopped.update_manifest(status="failed", training_parts=parts)
    return stopped


@pytest.fixture(scope="module")
def counting_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("counting") / "count.jsonl", COUNTING_ROWS)


@pytest.fixture(scope="module")
def two_process_run(tiny_model: str, counting_data: Path, tmp_path_factory: pytest.TempPathFactory) -> runs.Run:
    """4 uninterrupted steps on 2 processes, 2 rows each per step, a checkpoint every 2."""
    work = tmp_path_factory.mktemp("ddp-4-steps")
    accelerate_launch(
        work, "sft", "--data", str(counting_data), "--model", tiny_model, "--out", "run", "--max-steps", "4",
        "--set", "trainer.per_device_train_batch_size=2", *RESUMABLE,
    )  # fmt: skip
    return runs.Run(work / "run")


def test_a_run_resumed_on_one_process_trains_the_rows_of_an_uninterrupted_two_process_run(two_process_run, tmp_path):
    """transformers skips `steps x accumulation` batches per process on resume: on 1 process with the 2-process
    accumulation it skipped half the rows trained and trained the other half again. The accumulation is doubled, so
    each resumed step takes the 4 rows the uninterrupted run took."""
    stopped = interrupted_at(two_process_run, 2, tmp_path / "run")
    result = run_cli("sft", "--resume", "--out", str(stopped.path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert tokens_by_step(stopped) == tokens_by_step(two_process_run)
    assert "on 1, trainer.gradient_accumulation_steps=2 keeps them" in " ".join(result.stderr.split())
    assert stopped.metrics["train_tokens"] == two_process_run.metrics["train_tokens"]
    parts = stopped.manifest["training_parts"]
    layouts = [(p["from_step"], p["to_step"], p["world_size"], p["gradient_accumulation_steps"]) for p in parts]
    assert layouts == [(0, 2, 2, 1), (2, 4, 1, 2)]
    assert stopped.manifest["distributed"] == {"world_size": 1, "engine": None}  # the last launch's
    config = [(r.path / "config.yaml").read_text() for r in (stopped, two_process_run)]
    assert config[0] == config[1], "config.yaml keeps the run's own settings: `--config` on 2 processes reproduces it"


def test_a_one_process_run_resumed_on_two_trains_the_rows_it_would_have(tiny_model, counting_data, tmp_path):
    """The other way: 2 rows x 2 accumulation on 1 process is 2 rows x 1 on each of 2."""
    accumulating = ["--set", "trainer.per_device_train_batch_size=2", "--set", "trainer.gradient_accumulation_steps=2"]
    args = ["sft", "--data", str(counting_data), "--model", tiny_model, "--max-steps", "4", *accumulating, *RESUMABLE]
    whole = run_cli(*args, "--out", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    alone = runs.Run(tmp_path / "whole")
    stopped = interrupted_at(alone, 2, tmp_path / "stopped")
    accelerate_launch(tmp_path, "sft", "--resume", "--out", str(stopped.path))
    assert tokens_by_step(stopped) == tokens_by_step(alone)
    layouts = [(p["world_size"], p["gradient_accumulation_steps"]) for p in stopped.manifest["training_parts"]]
    assert layouts == [(1, 2), (2, 1)]
    assert stopped.manifest["distributed"] == {"world_size": 2, "engine": "ddp"}


def test_a_resume_on_processes_that_cannot_keep_the_rows_per_step_is_refused_and_writes_nothing(
    two_process_run, tmp_path
):
    """4 rows per step (2 processes x 2 rows) cannot be split over 3 processes taking 2 rows each. The new length
    given with the refused resume is not written either (config.yaml said `max_steps: 6` after the refusal)."""
    stopped = interrupted_at(two_process_run, 2, tmp_path / "run")
    before = {p: p.read_bytes() for p in stopped.path.rglob("*") if p.is_file()}
    resume = ("sft", "--resume", "--out", str(stopped.path), "--max-steps", "6")
    result = accelerate_launch(tmp_path, *resume, processes=3, check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "trained on 2 process(es) (2 x 2 rows x 1 accumulation per step) and resumes on 3" in errors[0]
    assert "launch it with 1 or 2 process(es)" in result.stderr
    assert "Traceback" not in result.stderr
    assert {p: p.read_bytes() for p in stopped.path.rglob("*") if p.is_file()} == before
