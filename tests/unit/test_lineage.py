"""Runs can be moved: manifests store their parents relative to the run dir, so moving runs/ (or copying a run with
its parents elsewhere) keeps `runs`, `generate --from`, `dpo --from`, `eval`, `export` and the playground working;
the base model is recorded by name and by the sha256 of its weights."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

import alignkit
from alignkit import lineage, runs
from alignkit import playground as pg
from alignkit.paths import file_sha256
from tests.conftest import CHAT_ROWS, TINY_TRAINER, run_cli, train_sft_and_dpo, write_jsonl


def test_moved_runs_keep_their_lineage_everywhere(tiny_model, tmp_path):
    (tmp_path / "first-home").mkdir()
    original = train_sft_and_dpo(tmp_path / "first-home", tiny_model, sft_steps=2)
    dpo_before = runs.Run(original / "dpo")
    model, tokenizer = lineage.load_run_model(dpo_before.path)
    messages = CHAT_ROWS[0]["messages"][:1]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    with torch.no_grad():
        logits_before = model(prompt if isinstance(prompt, torch.Tensor) else prompt["input_ids"]).logits

    moved = tmp_path / "colleague" / "runs"
    moved.parent.mkdir()
    shutil.move(str(original.parent), str(moved.parent / "project"))  # the whole project folder, runs/ inside it
    moved = moved.parent / "project" / "runs"
    assert not original.exists()

    dpo = runs.open_run(moved / "dpo")
    assert dpo.manifest["parent"] == "../sft" and dpo.parent_path == (moved / "sft").resolve()
    assert [step["run"] for step in dpo.lineage] == [str((moved / "sft").resolve()), str((moved / "dpo").resolve())]
    base = dpo.manifest["base"]
    assert base["name"] == tiny_model and base["sha256"] == file_sha256(Path(tiny_model) / "model.safetensors")

    # base + the SFT adapter + the DPO adapter, found from the new place
    model, tokenizer = lineage.load_run_model(dpo.path)
    with torch.no_grad():
        logits_after = model(prompt if isinstance(prompt, torch.Tensor) else prompt["input_ids"]).logits
    assert torch.equal(logits_before, logits_after)

    listing = run_cli("runs", "--dir", str(moved), "--json")
    assert listing.returncode == 0, listing.stderr
    assert {row["run"]: row["parent"] for row in json.loads(listing.stdout)} == {"sft": None, "dpo": "sft"}
    choices = {c.label: c for c in pg.model_choices(moved, tiny_model)}
    assert choices["dpo · dpo"].usable and choices["sft · sft"].usable

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "How do I start composting?"}])
    generated = run_cli("generate", "--from", str(moved / "dpo"), "--prompts", str(prompts), "--out",
                        str(tmp_path / "candidates.jsonl"), "--n", "1", "--max-new-tokens", "4")  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    exported = run_cli("export", str(moved / "dpo"), "--out", str(tmp_path / "merged"))
    assert exported.returncode == 0, exported.stderr
    evaluated = run_cli("eval", "--runs", str(moved / "sft"), "--runs", str(moved / "dpo"), "--prompts", str(prompts),
                        "--out", str(tmp_path / "eval"), "--max-new-tokens", "4")  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    again = alignkit.dpo(
        data={"paths": [str(moved.parent / "pairs.jsonl")]},
        from_run=str(moved / "sft"),
        out=str(moved / "dpo-again"),
        trainer={"max_steps": 1, "per_device_train_batch_size": 4},
    )
    assert [step["stage"] for step in again.lineage] == ["sft", "dpo"] and again.manifest["parent"] == "../sft"
    assert Path(again.lineage[0]["run"]) == (moved / "sft").resolve()
    assert lineage.load_run_model(again.path)[0] is not None


def test_an_interrupted_generate_resumes_after_its_run_moved(tiny_model, tmp_path):
    """Candidates named their run by its absolute path only: `generate --resume` after runs/ was renamed was refused
    (`its rows were made with run=/old/runs/sft, not /new/runs/sft`)."""
    runs_dir = tmp_path / "home" / "runs"
    alignkit.sft(data={"paths": [str(write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS))]}, model={"name": tiny_model},
                 out=str(runs_dir / "sft"), trainer={"max_steps": 1, "per_device_train_batch_size": 4})  # fmt: skip
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Question {i}?"} for i in range(3)])
    out = tmp_path / "candidates.jsonl"
    alignkit.candidates(prompts, out, n=2, from_run=runs_dir / "sft", max_new_tokens=3, temperature=1.5)
    rows = out.read_text().splitlines()
    out.unlink()
    Path(f"{out}.partial").write_text(rows[0] + "\n")  # interrupted after its first prompt
    shutil.move(runs_dir, tmp_path / "home" / "runs-moved")
    moved = tmp_path / "home" / "runs-moved" / "sft"
    alignkit.candidates(prompts, out, n=2, from_run=moved, max_new_tokens=3, temperature=1.5, resume=True)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["candidates"][0]["run"] for row in written] == [str(runs_dir / "sft")] + 2 * [str(moved)]
    assert {c["run_id"] for row in written for c in row["candidates"]} == {runs.Run(moved).manifest["id"]}


def test_a_run_copied_with_its_parents_loads_in_the_copy(tiny_model, tmp_path):
    (tmp_path / "home").mkdir()
    original = train_sft_and_dpo(tmp_path / "home", tiny_model, sft_steps=2)
    copy = tmp_path / "shared"
    shutil.copytree(original, copy)
    shutil.rmtree(original / "sft")  # the copy must not lean on the original
    dpo = runs.open_run(copy / "dpo")
    assert all(Path(step["run"]).is_relative_to(copy.resolve()) for step in dpo.lineage)
    model, _ = lineage.load_run_model(dpo.path)
    assert model.active_adapters == ["default"]


def test_a_base_with_other_weights_than_the_run_was_trained_on_is_said(tiny_model, tmp_path):
    """The manifest records the base's sha256; it was never compared, so a replaced base took the adapters silently."""
    from tests.conftest import TINY_TRAINER, build_tiny_model

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    chat = str(tmp_path / "chat.jsonl")
    sft = tmp_path / "runs" / "sft"
    trained = run_cli("sft", "--data", chat, "--model", str(base), "--out", str(sft), "--max-steps", "1", *TINY_TRAINER)
    assert trained.returncode == 0, trained.stderr
    prompts = str(Path(__file__).resolve().parents[2] / "datasets" / "prompts.jsonl")
    generate = [
        "generate",
        "--from",
        str(sft),
        "--prompts",
        prompts,
        "--n",
        "1",
        "--limit",
        "1",
        "--max-new-tokens",
        "2",
    ]
    same = run_cli(*generate, "--out", str(tmp_path / "same.jsonl"))
    assert same.returncode == 0 and "other weights" not in same.stderr, same.stderr

    shutil.rmtree(base)
    build_tiny_model(base, initializer_range=0.5)  # same architecture and tokenizer, other weights
    other = run_cli(*generate, "--out", str(tmp_path / "other.jsonl"))
    assert other.returncode == 0, other.stderr
    assert f"warning: {sft}: its base {base} now has other weights" in " ".join(other.stderr.split())
    further = run_cli(
        "sft", "--from", str(sft), "--data", chat, "--out", str(tmp_path / "runs" / "more"), "--max-steps", "1"
    )
    assert further.returncode == 0, further.stderr
    assert further.stderr.count("now has other weights") == 1, further.stderr
    rejected = [{"role": "assistant", "content": "No idea."}]
    pairs = [{"prompt": r["messages"][:1], "chosen": r["messages"][1:], "rejected": rejected} for r in CHAT_ROWS]
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    dpo_args = ["--data", str(tmp_path / "pairs.jsonl"), "--out", str(tmp_path / "runs" / "dpo"), "--max-steps", "1"]
    continued = run_cli("dpo", "--from", str(sft), *dpo_args)  # continues the parent's adapter
    assert continued.returncode == 0, continued.stderr
    assert continued.stderr.count("now has other weights") == 1, continued.stderr


def test_run_files_record_paths_relative_to_the_run_so_a_moved_run_resumes_and_reruns(tiny_model, tmp_path):
    """metrics.json's checkpoints, config.yaml's `from_run` and the manifest's `output_dir` were recorded relative to
    the working directory (`runs/sft1/checkpoints/checkpoint-2`): stale once runs/ moved, or from another directory."""
    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    (tmp_path / "home").mkdir()
    steps = ["--set", "trainer.save_steps=1", "--set", "trainer.eval_steps=1", *TINY_TRAINER]
    first = ["sft", "--data", str(chat), "--model", tiny_model, "--out", "runs/sft1", *steps]
    assert run_cli(*first, "--max-steps", "2", cwd=tmp_path / "home").returncode == 0
    runs.Run(tmp_path / "home" / "runs" / "sft1").update_manifest(status="interrupted")  # stopped after step 2
    resumed = run_cli("sft", "--resume", "--out", "runs/sft1", "--max-steps", "3", cwd=tmp_path / "home")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    second = ["sft", "--from", "runs/sft1", "--data", str(chat), "--out", "runs/sft2", "--max-steps", "1", *steps]
    assert run_cli(*second, cwd=tmp_path / "home").returncode == 0

    moved = tmp_path / "elsewhere" / "runs"
    moved.parent.mkdir()
    shutil.move(str(tmp_path / "home" / "runs"), str(moved))
    sft1, sft2 = runs.Run(moved / "sft1"), runs.Run(moved / "sft2")
    assert sft1.metrics["resumed_from"] == "checkpoints/checkpoint-2"
    assert sft1.resolve(sft1.metrics["best_checkpoint"]).parent == (moved / "sft1" / "checkpoints").resolve()
    assert sft1.resolve(sft1.metrics["best_checkpoint"]).is_dir()
    assert sft1.manifest["trainer_args"]["output_dir"] == "checkpoints"
    recorded = yaml.safe_load((sft2.path / "config.yaml").read_text())
    assert recorded["from_run"] == "../sft1" and recorded["out"] is None

    # read back from another working directory: a rerun of the recorded config, and a resume, find the parent
    rerun = run_cli("sft", "--config", str(sft2.path / "config.yaml"), "--out", str(tmp_path / "sft3"), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert runs.Run(tmp_path / "sft3").parent_path == sft1.path.resolve()
    sft2.update_manifest(status="interrupted")
    again = run_cli("sft", "--resume", "--out", str(sft2.path), "--max-steps", "2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert sft2.metrics["resumed_from"] == "checkpoints/checkpoint-1" and sft2.parent_path == sft1.path.resolve()


def test_a_run_whose_parent_was_trained_again_is_refused_until_the_parent_is_put_back(tiny_model, tmp_path):
    """A parent retrained in place (`--overwrite`, or another run copied over it) was taken as it was: the child's
    model was built on, and a resumed child trained against, other weights than it started from, without a word."""
    from alignkit import dashboard

    runs_dir = train_sft_and_dpo(tmp_path, tiny_model, sft_steps=2)
    dpo = runs_dir / "dpo"
    shutil.copytree(runs_dir / "sft", tmp_path / "sft-it-was-trained-on")
    alignkit.sft(
        data={"paths": [str(tmp_path / "chat.jsonl")]},
        model={"name": tiny_model},
        out=str(runs_dir / "sft"),
        overwrite=True,
        trainer={"max_steps": 1, "per_device_train_batch_size": 4},
    )

    exported = run_cli("export", str(dpo), "--out", str(tmp_path / "merged"))
    lines = [line for line in exported.stderr.splitlines() if line.strip()]
    assert exported.returncode == 2 and len(lines) == 1, exported.stderr
    assert f"error: parent run ../sft of {dpo} is another run than the one {dpo} was trained on" in lines[0]
    assert not (tmp_path / "merged").exists()
    statuses = {row["run"]: row["status"] for row in dashboard.run_rows(runs_dir)}
    assert statuses == {"sft": "complete", "dpo": "parent replaced"}
    runs.Run(dpo).update_manifest(status="interrupted")
    resumed = run_cli("dpo", "--resume", "--out", str(dpo), "--max-steps", "3")
    assert resumed.returncode == 2 and "is another run than the one" in resumed.stderr, resumed.stderr
    runs.Run(dpo).update_manifest(status="complete")

    shutil.rmtree(runs_dir / "sft")
    shutil.copytree(tmp_path / "sft-it-was-trained-on", runs_dir / "sft")  # a copy of the very run is that run
    assert {row["run"]: row["status"] for row in dashboard.run_rows(runs_dir)}["dpo"] == "complete"
    assert lineage.load_run_model(dpo)[0] is not None


def test_a_run_moved_with_its_data_resumes_from_the_data_at_its_new_place(tiny_model, tmp_path):
    """The data file is recorded by absolute path and `--resume` refused another `--data`: a project moved (or
    untarred on another machine) could not be resumed, with the hint `check the path passed to --data`."""
    home = tmp_path / "home"
    home.mkdir()
    chat = write_jsonl(home / "chat.jsonl", CHAT_ROWS)
    steps = ["--set", "trainer.save_steps=1", "--set", "trainer.eval_steps=1", *TINY_TRAINER]
    started = run_cli("sft", "--data", str(chat), "--model", tiny_model, "--out", "runs/sft", "--max-steps", "1",
                      *steps, cwd=home)  # fmt: skip
    assert started.returncode == 0, started.stderr[-2000:]
    runs.Run(home / "runs" / "sft").update_manifest(status="interrupted")
    write_jsonl(chat, CHAT_ROWS[:-1])  # edited in place: the resumed steps would train other rows
    changed = run_cli("sft", "--resume", "--out", "runs/sft", "--max-steps", "2", cwd=home)
    assert changed.returncode == 2 and f"{chat}: data file changed since runs/sft started" in changed.stderr
    write_jsonl(chat, CHAT_ROWS)

    moved = tmp_path / "elsewhere"
    shutil.move(str(home), str(moved))
    run_dir = moved / "runs" / "sft"
    gone = run_cli("sft", "--resume", "--out", str(run_dir), "--max-steps", "2")
    lines = [line for line in gone.stderr.splitlines() if line.strip()]
    assert gone.returncode == 2 and len(lines) == 1, gone.stderr
    assert f"error: {chat}: data file of {run_dir} not found (moved?)" in lines[0] and "--resume --data" in lines[0]
    other = write_jsonl(tmp_path / "other.jsonl", CHAT_ROWS[:3])
    wrong = run_cli("sft", "--resume", "--out", str(run_dir), "--max-steps", "2", "--data", str(other))
    assert wrong.returncode == 2 and f"{other} holds other data" in wrong.stderr, wrong.stderr

    resumed = run_cli("sft", "--resume", "--out", str(run_dir), "--max-steps", "2", "--data", str(moved / "chat.jsonl"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run = runs.Run(run_dir)
    assert run.complete and run.metrics["global_step"] == 2
    assert run.metrics["resumed_from"] == "checkpoints/checkpoint-1"
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["paths"] == [str(moved / "chat.jsonl")]
    assert run.manifest["data"] == {str(moved / "chat.jsonl"): file_sha256(moved / "chat.jsonl")}


def test_a_resume_hashes_its_data_only_where_the_file_moved_or_changed(tiny_model, tmp_path, monkeypatch):
    """`--resume` read every data file of the run through sha256 again (minutes for a large corpus on each resume),
    and a file given at a new place twice."""
    from alignkit import models, paths, training

    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    out = tmp_path / "runs" / "sft"
    tiny = {"per_device_train_batch_size": 4, "save_steps": 1, "max_steps": 1}
    run = alignkit.sft(data={"paths": [str(chat)]}, model={"name": tiny_model}, out=str(out), trainer=tiny)
    hashed: list[Path] = []
    real = paths.file_sha256

    def spy(path: Path) -> str:
        hashed.append(Path(path).resolve())
        return real(path)

    for module in (paths, training, runs, models):  # wherever a hash is taken from
        monkeypatch.setattr(module, "file_sha256", spy, raising=False)
    run.update_manifest(status="interrupted")
    alignkit.sft(resume=True, out=str(out), trainer={"max_steps": 2})
    assert run.complete and run.metrics["global_step"] == 2
    assert chat.resolve() not in hashed

    moved = Path(shutil.move(chat, tmp_path / "moved.jsonl"))
    os.utime(moved)  # copied to another disk: a new modification time
    run.update_manifest(status="interrupted")
    alignkit.sft(resume=True, out=str(out), data={"paths": [str(moved)]}, trainer={"max_steps": 3})
    assert run.complete and run.manifest["data"] == {str(moved): file_sha256(moved)}
    assert hashed.count(moved.resolve()) == 1


def one_line_error(result: Any) -> str:
    """The one line a refused CLI command printed (exit code 2, no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_a_run_whose_base_moved_is_used_with_the_same_base_at_its_new_place(tiny_model, tmp_path, monkeypatch):
    """A run trained on a local base dir was unusable once the base moved (another path or machine): every command
    failed with `model ...: not found — fix: pass embedded, ...`, `--model NEW_PATH` was refused as another base, and
    eval, export, the playground and the Python API had no way to say where the base is now."""
    from tests.conftest import build_tiny_model

    home = tmp_path / "models"
    shutil.copytree(tiny_model, home / "tiny")
    train_sft = (
        "sft", "--data", str(write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)), "--model", str(home / "tiny"),
        "--out", str(tmp_path / "runs" / "sft"), "--max-steps", "1", *TINY_TRAINER,
    )  # fmt: skip
    assert run_cli(*train_sft).returncode == 0
    sft = tmp_path / "runs" / "sft"
    moved = tmp_path / "models.moved"
    shutil.move(str(home), str(moved))
    build_tiny_model(tmp_path / "other" / "tiny", initializer_range=0.5)  # same name and shapes, other weights
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "How do I start composting?"}])
    generate = ["generate", "--from", str(sft), "--prompts", str(prompts), "--n", "1", "--max-new-tokens", "2"]

    gone = one_line_error(run_cli(*generate, "--out", str(tmp_path / "gone.jsonl")))
    assert f"error: base model {home / 'tiny'} of {sft}: not found (moved?)" in gone
    assert "--model NEW_PATH" in gone and "ALIGNKIT_MODEL_PATH=NEW_PATH" in gone
    no_flag = one_line_error(run_cli("export", str(sft), "--out", str(tmp_path / "merged")))
    assert "ALIGNKIT_MODEL_PATH=NEW_PATH" in no_flag and "--model" not in no_flag  # `export` has no --model
    other = one_line_error(run_cli(*generate, "--model", str(tmp_path / "other" / "tiny"), "--out", "x.jsonl"))
    assert f"--model {tmp_path / 'other' / 'tiny'} is another model than the base of {sft}" in other
    given = run_cli(*generate, "--model", str(moved / "tiny"), "--out", str(tmp_path / "given.jsonl"))
    assert given.returncode == 0, given.stderr[-2000:]

    # commands and apps without --model: the folder the base moved to (or the model dir) in ALIGNKIT_MODEL_PATH
    wrong = run_cli(
        "export", str(sft), "--out", str(tmp_path / "merged"), env={"ALIGNKIT_MODEL_PATH": str(tmp_path / "other")}
    )
    assert f"{tmp_path / 'other' / 'tiny'}: other weights" in one_line_error(wrong)
    assert not (tmp_path / "merged").exists()
    search = os.pathsep.join([str(tmp_path / "other"), str(moved)])
    exported = run_cli("export", str(sft), "--out", str(tmp_path / "merged"), env={"ALIGNKIT_MODEL_PATH": search})
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert json.loads((tmp_path / "merged" / "alignkit-export.json").read_text())["base_model"] == str(home / "tiny")

    monkeypatch.setenv("ALIGNKIT_MODEL_PATH", str(moved / "tiny"))  # a notebook: os.environ
    assert runs.open_run(sft).model_config.name == str(moved / "tiny")
    assert {c.label: c.usable for c in pg.model_choices(tmp_path / "runs", str(moved / "tiny"))}["sft · sft"]
    assert alignkit.chat("Hi", run=sft, max_new_tokens=2) is not None
    monkeypatch.delenv("ALIGNKIT_MODEL_PATH")

    # a stage from the moved run records the base's new place, so its own runs need nothing more
    dpo = alignkit.dpo(
        data={"paths": [str(write_jsonl(tmp_path / "pairs.jsonl", preference_pairs()))]},
        from_run=str(sft),
        model={"name": str(moved / "tiny")},
        out=str(tmp_path / "runs" / "dpo"),
        trainer={"max_steps": 1, "per_device_train_batch_size": 4},
    )
    assert dpo.manifest["model"]["name"] == str(moved / "tiny")
    assert dpo.manifest["base"]["sha256"] == runs.Run(sft).manifest["base"]["sha256"]
    assert lineage.load_run_model(dpo.path)[0] is not None


def test_a_run_that_records_no_sha256_of_its_base_takes_the_moved_base_its_tokenizer_matches(tiny_model, tmp_path):
    """A run from before the base's sha256 was recorded could not be pointed at its moved base at all: `--model
    NEW_PATH` was refused as `differs from the base model ... drop --model`, and without it the fix was `put it back
    there`. Its tokenizer (saved with its adapter) is what can be checked: a base whose vocabulary differs is
    refused, the same one is taken with a warning saying the weights were not checked."""
    from tests.conftest import build_tiny_model

    shutil.copytree(tiny_model, tmp_path / "models" / "tiny")
    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    tiny = {"max_steps": 1, "per_device_train_batch_size": 4}
    sft = alignkit.sft(data={"paths": [str(chat)]}, model={"name": str(tmp_path / "models" / "tiny")},
                       out=str(tmp_path / "runs" / "sft"), trainer=tiny)  # fmt: skip
    manifest = sft.manifest
    del manifest["base"]  # an older run
    runs.write_json(sft.path / "manifest.json", manifest)
    shutil.move(tmp_path / "models", tmp_path / "moved")
    build_tiny_model(tmp_path / "other" / "tiny", chat_template=False)  # same shapes, another vocabulary
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "How do I start composting?"}])
    generate = ["generate", "--from", str(sft), "--prompts", str(prompts), "--n", "1", "--max-new-tokens", "2"]

    other = one_line_error(run_cli(*generate, "--model", str(tmp_path / "other" / "tiny"), "--out", "x.jsonl"))
    assert f"--model {tmp_path / 'other' / 'tiny'} is another model than the base of {sft}" in other
    assert "tokenizer.json holds another vocabulary" in other
    gone = one_line_error(run_cli("export", str(sft), "--out", str(tmp_path / "merged")))
    assert "ALIGNKIT_MODEL_PATH=NEW_PATH" in gone and "its tokenizer is checked" in gone
    given = run_cli(*generate, "--model", str(tmp_path / "moved" / "tiny"), "--out", str(tmp_path / "given.jsonl"))
    assert given.returncode == 0, given.stderr[-2000:]
    assert "records no sha256 of its base, so the weights there are not checked" in " ".join(given.stderr.split())
    search = os.pathsep.join([str(tmp_path / "other"), str(tmp_path / "moved")])
    exported = run_cli("export", str(sft), "--out", str(tmp_path / "merged"), env={"ALIGNKIT_MODEL_PATH": search})
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert f"is taken at {tmp_path / 'moved' / 'tiny'}" in " ".join(exported.stderr.split())


def test_a_full_fine_tune_is_used_without_its_base_once_the_base_moved(tiny_model, tmp_path):
    """A full fine-tune carries its whole model in `model/`, yet `generate`, `export` and the playground refused it
    once its base had moved (`base model ... not found (moved?)`): a run copied alone to another machine was unusable.
    Only what needs the base itself (eval's base answers, a stage that records it) still asks where it is."""
    shutil.copytree(tiny_model, tmp_path / "models" / "tiny")
    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    full = alignkit.sft(data={"paths": [str(chat)]}, model={"name": str(tmp_path / "models" / "tiny")},
                        out=str(tmp_path / "runs" / "full"), peft={"method": "full"},
                        trainer={"max_steps": 1, "per_device_train_batch_size": 4})  # fmt: skip
    shutil.move(tmp_path / "models", tmp_path / "moved")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "How do I start composting?"}])

    generated = alignkit.candidates(prompts, tmp_path / "candidates.jsonl", n=1, from_run=full, max_new_tokens=2)
    assert Path(generated).is_file()
    exported = run_cli("export", str(full.path), "--out", str(tmp_path / "merged"))
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert {c.label: c.usable for c in pg.model_choices(tmp_path / "runs", "embedded")}["sft · full"]
    evaluated = run_cli("eval", "--runs", str(full.path), "--prompts", str(prompts), "--out", str(tmp_path / "eval"))
    assert f"base model {tmp_path / 'models' / 'tiny'} of {full.path}: not found (moved?)" in one_line_error(evaluated)


def preference_pairs() -> list[dict[str, Any]]:
    rejected = [{"role": "assistant", "content": "No idea."}]
    return [{"prompt": r["messages"][:1], "chosen": r["messages"][1:], "rejected": rejected} for r in CHAT_ROWS]


def test_a_run_whose_base_moved_resumes_with_the_base_at_its_new_place(tiny_model, tmp_path):
    """`--resume` took the base from config.yaml's path only, and refused `--model` as a changed setting."""
    shutil.copytree(tiny_model, tmp_path / "models" / "tiny")
    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    steps = ["--set", "trainer.save_steps=1", "--set", "trainer.eval_steps=1", *TINY_TRAINER]
    run_dir = tmp_path / "runs" / "sft"
    started = run_cli("sft", "--data", str(chat), "--model", str(tmp_path / "models" / "tiny"), "--out", str(run_dir),
                      "--max-steps", "1", *steps)  # fmt: skip
    assert started.returncode == 0, started.stderr[-2000:]
    runs.Run(run_dir).update_manifest(status="interrupted")
    shutil.move(str(tmp_path / "models"), str(tmp_path / "moved"))
    resume = ["sft", "--resume", "--out", str(run_dir), "--max-steps", "2"]

    assert "ALIGNKIT_MODEL_PATH=NEW_PATH" in one_line_error(run_cli(*resume))
    resumed = run_cli(*resume, "--model", str(tmp_path / "moved" / "tiny"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run = runs.Run(run_dir)
    assert run.complete and run.metrics["resumed_from"] == "checkpoints/checkpoint-1"
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["name"]
    assert recorded == run.manifest["model"]["name"] == str(tmp_path / "moved" / "tiny")
