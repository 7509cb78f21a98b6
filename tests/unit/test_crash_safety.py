"""Crash safety: `kill -9` a training run anywhere (mid-step, mid-checkpoint-save); `--resume` always reaches the
same final step, a checkpoint cut short is detected and dropped, and a killed run never looks complete."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

import alignkit
from alignkit import runs
from tests.conftest import TINY_TRAINER, run_cli
from tests.unit.test_bad_inputs import assert_one_line_error

MAX_STEPS = 40

# Runs the real CLI with one change: the checkpoint save at step >= 20 stops half way (weights and optimizer written,
# RNG state and trainer_state.json not yet) and says so in a marker file, so the test can kill -9 it right there.
SLOW_SAVE = """
import faulthandler, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)  # where every thread is, for a test that waits in vain
# Ctrl-C as in a terminal: a test runner started in the background (`pytest &`, nohup, CI) ignores SIGINT, and so
# would this process, which inherits that
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
import transformers.trainer as hf
marker = Path(sys.argv[1])
original = hf.Trainer._save_rng_state
def stalled(self, output_dir):
    if self.state.global_step >= 20:
        marker.write_text(output_dir)
        time.sleep(600)
    original(self, output_dir)
hf.Trainer._save_rng_state = stalled
from alignkit import cli
sys.argv = ["alignkit", *sys.argv[2:]]
cli.main()
"""


def train_args(data: Path, model: str, out: Path) -> list[str]:
    return [
        "sft",
        "--data",
        str(data),
        "--model",
        model,
        "--out",
        str(out),
        "--max-steps",
        str(MAX_STEPS),
        "--set",
        "trainer.save_steps=5",
        "--set",
        "trainer.eval_steps=5",
        "--set",
        "trainer.save_total_limit=2",
        "--set",
        "early_stopping_patience=null",
        *TINY_TRAINER,
    ]


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@contextmanager
def training(command: list[str], said: Path) -> Iterator[subprocess.Popen]:
    """A training subprocess (its stderr in `said`) that is killed however the test ends (a failed assertion must
    not leave it running)."""
    with said.open("wb") as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        yield proc
    finally:
        kill(proc)


def wait_for_end(proc: subprocess.Popen, said: Path, timeout: float) -> None:
    """`proc.wait(timeout)`; a process still running then fails the test with what it said and where each of its
    threads is (SLOW_SAVE dumps them on SIGUSR1), its signal masks and the machine's load."""
    try:
        proc.wait(timeout=timeout)
        return
    except subprocess.TimeoutExpired:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(3)
    masks = [line for line in status.splitlines() if line.startswith(("State", "Threads", "Sig", "Shd"))]
    pytest.fail(
        f"process {proc.pid} still runs {timeout} s on; load {Path('/proc/loadavg').read_text().strip()}; "
        + "; ".join(masks)
        + "\n"
        + said.read_text(errors="replace")[-12000:]
    )


def logged_loss_steps(out: Path) -> list[int]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


def assert_resumes_to_the_end(out: Path) -> runs.Run:
    result = run_cli("sft", "--resume", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    run = runs.Run(out)
    assert run.complete and run.metrics["global_step"] == MAX_STEPS
    steps = logged_loss_steps(out)
    assert steps == sorted(set(steps)), "no step logged twice after a resume"
    assert steps[-1] == MAX_STEPS
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    return run


def killed_in_the_step_20_save(out: Path, data: Path, model: str) -> Path:
    """Train into `out` and kill -9 it inside the checkpoint save of step 20 (`SLOW_SAVE`); the half-written dir."""
    marker, said = out.with_name(out.name + ".saving"), out.with_name(out.name + ".stderr")
    with training([sys.executable, "-c", SLOW_SAVE, str(marker), *train_args(data, model, out)], said) as proc:
        deadline = time.time() + 240
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the run never reached the stalled checkpoint save: " + said.read_text()[-4000:]
    return Path(marker.read_text())


def test_kill_during_checkpoint_save_is_detected_and_resume_reaches_the_same_step(tmp_path, tiny_model, chat_file):
    out = tmp_path / "run"
    half_written = killed_in_the_step_20_save(out, chat_file, tiny_model)
    assert (half_written / "optimizer.pt").is_file() and not (half_written / "trainer_state.json").exists()

    run = runs.Run(out)
    assert not run.complete
    assert run.last_checkpoint() != str(half_written), "a checkpoint whose save was cut short is never resumed from"
    resumed_from = run.last_checkpoint()
    assert resumed_from is not None

    run = assert_resumes_to_the_end(out)
    assert run.resolve(run.metrics["resumed_from"]) == Path(resumed_from).resolve()


def test_a_resumed_run_reports_whole_run_loss_tokens_and_runtime(tmp_path, tiny_model, chat_file):
    """transformers' `train_loss` and `train_runtime` cover one `train()` call: a resumed run reported the mean loss
    of the steps after its checkpoint only, and the seconds since the resume."""
    whole = run_cli(*train_args(chat_file, tiny_model, tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed_in_the_step_20_save(tmp_path / "resumed", chat_file, tiny_model)
    resumed = assert_resumes_to_the_end(tmp_path / "resumed")
    uninterrupted = runs.Run(tmp_path / "whole").metrics

    assert resumed.metrics["train_loss"] == pytest.approx(uninterrupted["train_loss"], rel=1e-6)
    assert resumed.metrics["train_tokens"] == uninterrupted["train_tokens"]
    logged = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in logged if "loss" in row]
    assert len(losses) == MAX_STEPS and resumed.metrics["train_loss"] == pytest.approx(sum(losses) / MAX_STEPS)
    parts = resumed.manifest["training_parts"]
    assert [(p["from_step"], p["to_step"]) for p in parts] == [(0, 15), (15, MAX_STEPS)]
    assert resumed.metrics["train_runtime"] == pytest.approx(sum(p["train_runtime"] for p in parts))
    assert parts[0]["train_runtime"] > 0 and resumed.metrics["train_runtime"] > parts[1]["train_runtime"]


def test_kill_at_random_points_then_resume_always_finishes(tmp_path, tiny_model, chat_file):
    """Three kill -9s at random moments (before the first checkpoint, mid-step, maybe mid-save), each followed by a
    resume that is itself killed, then a last resume to the end."""
    out = tmp_path / "run"
    rng = random.Random(int(os.environ.get("ALIGNKIT_KILL_SEED", "8")))
    command = [sys.executable, "-m", "alignkit.cli", *train_args(chat_file, tiny_model, out)]
    killed = 0
    for attempt in range(3):
        with training(command, tmp_path / f"training-{attempt}.stderr") as proc:
            # wait until training has started (a manifest and a first logged step), then a random moment more
            deadline = time.time() + 240
            while proc.poll() is None and time.time() < deadline:
                if (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().strip():
                    break
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.5))
            assert proc.poll() is None, "the run finished before it could be killed"
        killed += 1
        assert not runs.Run(out).complete, "a killed run never looks complete"
        command = [sys.executable, "-m", "alignkit.cli", "sft", "--resume", "--out", str(out)]
        if attempt == 0:
            # a kill before the first checkpoint still resumes (from the start)
            assert (out / "manifest.json").is_file()
    assert killed >= 1
    assert_resumes_to_the_end(out)  # a run that finished before its kill would fail here: `already complete`


def damaged_run(tmp_path: Path, steps: list[int]) -> runs.Run:
    """A run dir with complete checkpoints at `steps` (the files transformers writes, minimal contents)."""
    run = runs.Run(tmp_path / "run")
    for step in steps:
        checkpoint = run.checkpoints_dir / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
            (checkpoint / name).write_bytes(b"x")
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (run.path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, max(steps) + 1)) + '{"step": 3'
    )
    return run


@pytest.mark.parametrize(
    "damage",
    ["truncated_state", "state_of_another_step", "no_optimizer", "no_weights", "no_state"],
)
def test_a_damaged_newest_checkpoint_is_skipped_and_removed_on_resume(damage, tmp_path):
    run = damaged_run(tmp_path, [5, 10])
    newest = run.checkpoints_dir / "checkpoint-10"
    if damage == "truncated_state":
        (newest / "trainer_state.json").write_text('{"global_step": 1')
    elif damage == "state_of_another_step":
        (newest / "trainer_state.json").write_text('{"global_step": 5}')
    elif damage == "no_optimizer":
        (newest / "optimizer.pt").unlink()
    elif damage == "no_weights":
        (newest / "adapter_model.safetensors").unlink()
    else:
        (newest / "trainer_state.json").unlink()
    assert run.last_checkpoint() == str(run.checkpoints_dir / "checkpoint-5")
    assert run.discard_unfinished_checkpoints() == [newest]
    assert not newest.exists()
    assert logged_loss_steps(run.path) == [1, 2, 3, 4, 5], "rows after the checkpoint (and a cut-off row) dropped"


def test_runs_shows_the_step_and_eval_loss_of_an_unfinished_runs_last_complete_checkpoint(tmp_path):
    run = damaged_run(tmp_path, [5, 10])
    runs.write_json(run.path / "manifest.json", {"stage": "sft", "status": "interrupted", "lineage": []})
    for step, eval_loss in ((5, 0.75), (10, 0.5)):
        history = [{"step": 1, "eval_loss": 2.0}, {"step": step, "loss": 1.0}, {"step": step, "eval_loss": eval_loss}]
        state = {"global_step": step, "log_history": history}
        runs.write_json(run.checkpoints_dir / f"checkpoint-{step}" / "trainer_state.json", state)
    (run.checkpoints_dir / "checkpoint-10" / "optimizer.pt").unlink()  # its save was cut short

    listing = run_cli("runs", "--dir", str(tmp_path), "--json")
    assert listing.returncode == 0, listing.stderr
    [row] = json.loads(listing.stdout)
    assert (row["status"], row["global_step"], row["eval_loss"]) == ("interrupted", 5, 0.75)
    table = run_cli("runs", "--dir", str(tmp_path))
    assert "0.7500" in table.stdout


def test_a_killed_run_cannot_be_used_as_a_parent(tmp_path, chat_file, capsys):
    from tests.unit.test_bad_inputs import invoke

    run = damaged_run(tmp_path, [5])
    runs.write_json(run.path / "manifest.json", {"stage": "sft", "status": "running", "lineage": []})
    code, err = invoke(["dpo", "--from", str(run.path), "--data", str(chat_file)], capsys)
    assert_one_line_error(code, err, ["run did not finish", "--resume"])


def test_a_run_being_trained_is_not_resumed_twice_and_says_how_it_ended(tmp_path, tiny_model, chat_file):
    """A second `--resume` once trained alongside the live process in the same directory; a Ctrl-C'd run stayed
    `running` for ever, and so did a killed one."""
    from alignkit import dashboard

    out, marker = tmp_path / "runs" / "sft", tmp_path / "saving"
    said = tmp_path / "training.stderr"
    command = [sys.executable, "-c", SLOW_SAVE, str(marker), *train_args(chat_file, tiny_model, out)]
    with training(command, said) as proc:
        deadline = time.time() + 240
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the run never reached the stalled checkpoint save"
        assert [row["status"] for row in dashboard.run_rows(tmp_path / "runs")] == ["running"]
        second = run_cli("sft", "--resume", "--out", str(out))
        assert_one_line_error(second.returncode, second.stderr, [f"process {proc.pid} is training this run now"])
        unnamed = run_cli("sft", "--resume", cwd=tmp_path)
        assert_one_line_error(unnamed.returncode, unnamed.stderr, ["no unfinished sft run in runs/ to resume"])

        os.kill(proc.pid, signal.SIGINT)
        wait_for_end(proc, said, timeout=60)
    assert runs.Run(out).manifest["status"] == "interrupted"
    assert [row["status"] for row in dashboard.run_rows(tmp_path / "runs")] == ["interrupted"]

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    runs.Run(out).update_manifest(status="running", process={**runs.this_process(), "pid": int(gone.stdout)})
    assert runs.Run(out).status == "stopped", "killed: nothing trains it, and --resume may take it"
    runs.Run(out).update_manifest(process={**runs.this_process(), "started": 1})  # the pid now names another process
    assert runs.Run(out).status == "stopped"
    assert_resumes_to_the_end(out)


def test_a_run_recorded_without_each_parts_processes_resumes_on_one_with_its_rows_per_step(
    tmp_path, tiny_model, chat_file
):
    """A run recorded before each training part had its world size (the manifest's `distributed` is the launch it
    started on), launched on 2 processes and resumed on 1: it trained on with half the rows per step, and skipped
    half the rows it had trained. It accumulates twice as many now."""
    out = tmp_path / "run"
    first = ["sft", "--data", str(chat_file), "--model", tiny_model, "--out", str(out), "--max-steps", "2"]
    assert run_cli(*first, "--set", "trainer.save_steps=1", "--set", "trainer.eval_steps=1").returncode == 0
    run = runs.Run(out)
    layout = ("world_size", "per_device_train_batch_size", "gradient_accumulation_steps")
    parts = [{k: v for k, v in part.items() if k not in layout} for part in run.manifest["training_parts"]]
    run.update_manifest(status="interrupted", distributed={"world_size": 2, "engine": "ddp"}, training_parts=parts)
    resumed = run_cli("sft", "--resume", "--out", str(out), "--max-steps", "3")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "on 2 process(es): on 1, trainer.gradient_accumulation_steps=2 keeps them" in " ".join(
        resumed.stderr.split()
    )
    assert run.metrics["global_step"] == 3
    last = run.manifest["training_parts"][-1]
    assert (last["from_step"], last["world_size"], last["gradient_accumulation_steps"]) == (2, 1, 2)
    assert run.manifest["distributed"] == {"world_size": 1, "engine": None}


def test_a_run_resumed_with_a_new_length_records_it_in_its_config_and_manifest(tmp_path, tiny_model, chat_file):
    """`--resume --max-steps N` trained to N while config.yaml still said the old length: `--config RUN/config.yaml`
    did not reproduce the run."""
    out = tmp_path / "run"
    killed_in_the_step_20_save(out, chat_file, tiny_model)
    before = yaml.safe_load((out / "config.yaml").read_text())
    # a length the run has trained past: it was recorded `complete` at its checkpoint's step, past the length given
    last = runs.checkpoint_step(Path(runs.Run(out).last_checkpoint()))
    shorter = run_cli("sft", "--resume", "--out", str(out), "--max-steps", str(last - 5))
    assert_one_line_error(
        shorter.returncode,
        shorter.stderr,
        [f"its last checkpoint is at step {last}, past --max-steps {last - 5}", f"with --max-steps {last} or more"],
    )
    assert yaml.safe_load((out / "config.yaml").read_text()) == before and not runs.Run(out).complete
    result = run_cli("sft", "--resume", "--out", str(out), "--max-steps", "25")
    assert result.returncode == 0, result.stderr[-2000:]
    run = runs.Run(out)
    assert run.complete and run.metrics["global_step"] == 25
    after = yaml.safe_load((out / "config.yaml").read_text())
    assert after["trainer"].pop("max_steps") == 25 and before["trainer"].pop("max_steps") == MAX_STEPS
    assert after == before  # nothing else changed
    assert run.manifest["trainer_args"]["max_steps"] == 25


def test_resuming_without_a_length_keeps_the_runs_own_epochs(tmp_path, tiny_model, chat_file):
    """The stage's default `num_train_epochs: 1` was taken for a new length given with `--resume`: a run started with
    `--epochs 2` was cut to one epoch by a plain `--resume`."""
    from alignkit import training
    from alignkit.config import SFTStageConfig, load_config

    run = alignkit.sft(
        data={"paths": [str(chat_file)], "validation_split": 0},
        model={"name": tiny_model},
        out=str(tmp_path / "run"),
        trainer={"num_train_epochs": 2, "per_device_train_batch_size": 8},
    )
    run.update_manifest(status="interrupted")  # as a Ctrl-C leaves it
    before = (run.path / "config.yaml").read_text()

    def resumed(**trainer: object) -> dict[str, object]:
        values = {"resume": True, "out": str(run.path), "trainer": trainer}
        resumed, changes = training.resolve_resume("sft", load_config(SFTStageConfig, values=values))
        changes.record()
        return resumed.trainer

    assert resumed()["num_train_epochs"] == 2 and (run.path / "config.yaml").read_text() == before
    assert resumed(num_train_epochs=3)["num_train_epochs"] == 3  # a length given is the new one
    assert yaml.safe_load((run.path / "config.yaml").read_text())["trainer"]["num_train_epochs"] == 3


# Another alignkit process (an `accelerate launch` rank, a second shell) caching the digest of argv[1].
CACHE_A_DIGEST = (
    "import sys; from pathlib import Path; from alignkit.paths import known_sha256; known_sha256(Path(sys.argv[1]))"
)


def test_the_digest_cache_keeps_what_another_process_added_meanwhile_and_a_torn_one_reads_as_empty(
    tmp_path, monkeypatch
):
    """`<cache>/digests.json` was written from the copy read before hashing: an entry another process added while
    this one hashed was lost; a file that parses but is no JSON object (cut short at `null`, another content) was a
    traceback in every command that hashes its data or base model."""
    from alignkit import paths

    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(paths, "_known", {})
    cache_file = tmp_path / "cache" / "digests.json"
    ours, theirs = tmp_path / "ours.bin", tmp_path / "theirs.bin"
    ours.write_bytes(b"ours" * 1000)
    theirs.write_bytes(b"theirs" * 1000)
    file_sha256 = paths.file_sha256

    def hashed_while_another_process_caches(path: Path) -> str:
        if path == ours:
            subprocess.run([sys.executable, "-c", CACHE_A_DIGEST, str(theirs)], check=True)
        return file_sha256(path)

    monkeypatch.setattr(paths, "file_sha256", hashed_while_another_process_caches)
    assert paths.known_sha256(ours) == file_sha256(ours)
    cached = json.loads(cache_file.read_text())
    assert cached == {paths.stat_key(theirs): file_sha256(theirs), paths.stat_key(ours): file_sha256(ours)}

    monkeypatch.setattr(paths, "file_sha256", file_sha256)
    for damaged in ('{"' + str(ours)[:5], "null", "[]", '"digests"'):
        cache_file.write_text(damaged)
        monkeypatch.setattr(paths, "_known", {})
        assert paths.known_sha256(ours) == file_sha256(ours)
        assert json.loads(cache_file.read_text()) == {paths.stat_key(ours): file_sha256(ours)}


def run_files(out: Path) -> dict[str, bytes]:
    """Every file of a run dir by its path in it: what a refused resume must leave as it was."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_resume_that_would_read_other_rows_is_refused_naming_them_and_writes_nothing(tmp_path, tiny_model):
    """`--resume` read the run's data again as the code and its config.yaml read it then: a data file edited without
    its size or modification time changing (its sha256 is not computed again), a `data:` key its config.yaml lacks
    whose default differs, or a new way of reading or splitting rows trained and validated the resumed steps on
    other rows without a word. The manifest records the rows' count and digest (`rows`); a resume that reads others
    is one line naming the split and both counts, with nothing written; a file whose sha256 changed is said once, by
    its own check."""
    from tests.conftest import CHAT_ROWS, write_jsonl

    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    out = tmp_path / "run"
    started = run_cli("sft", "--data", str(chat), "--model", tiny_model, "--out", str(out), "--max-steps", "1",
                      "--set", "data.validation_split=0.25", "--set", "trainer.save_steps=1",
                      "--set", "trainer.eval_steps=1", *TINY_TRAINER)  # fmt: skip
    assert started.returncode == 0, started.stderr[-2000:]
    run = runs.Run(out)
    rows = run.manifest["rows"]
    assert (rows["train"]["count"], rows["validation"]["count"]) == (18, 6)
    assert all(len(rows[split]["sha256"]) == 64 for split in rows)
    run.update_manifest(status="interrupted")
    before = run_files(out)

    def resume() -> subprocess.CompletedProcess[str]:
        return run_cli("sft", "--resume", "--out", str(out), "--max-steps", "2")

    # one answer edited in place, the file's size and modification time kept: its cached sha256 still matches
    stat = chat.stat()
    edited = [dict(row) for row in CHAT_ROWS]
    edited[0] = {"messages": [CHAT_ROWS[0]["messages"][0], {"role": "assistant", "content": "It is 1."}]}
    write_jsonl(chat, edited)
    os.utime(chat, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert chat.stat().st_size == stat.st_size
    refused = resume()
    assert_one_line_error(refused.returncode, refused.stderr, ["rows (", "then,", "now, other rows)", "--out"])
    assert "differ from those it started with" in refused.stderr
    assert run_files(out) == before

    # edited with another size: its sha256 check says so, and only that
    write_jsonl(chat, edited[:-1])
    changed = resume()
    assert_one_line_error(changed.returncode, changed.stderr, [f"{chat}: data file changed since {out} started"])
    assert "rows (" not in changed.stderr and run_files(out) == before
    write_jsonl(chat, CHAT_ROWS)

    # a config.yaml without the `data:` key the run was split by (one written before the key): its default now
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["data"].pop("validation_split") == 0.25
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    before = run_files(out)
    split_otherwise = resume()
    assert_one_line_error(
        split_otherwise.returncode,
        split_otherwise.stderr,
        ["train rows (18 then, 22 now) and validation rows (6 then, 2 now) differ", "6 of 24 rows", "2 of 24 rows"],
    )
    assert run_files(out) == before

    config["data"]["validation_split"] = 0.25
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    resumed = resume()
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run = runs.Run(out)
    assert run.complete and run.metrics["global_step"] == 2 and run.manifest["rows"] == rows
    assert (run.metrics["train_rows"], run.metrics["eval_rows"]) == (18, 6)
