"""The Python API as a researcher uses it in a notebook: what a cell shows when a call is refused, and which Python
objects the stage functions take."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

import alignkit
import datasets
from alignkit import AlignkitError
from alignkit.config import RLStageConfig, SFTStageConfig, load_config, to_yaml
from alignkit.lineage import load_run_model, load_scorer
from alignkit.runs import Run
from tests.conftest import CHAT_ROWS, write_jsonl


def run_cells(*sources: str, cwd: Path) -> list[nbformat.NotebookNode]:
    """Execute `sources` as the code cells of a notebook in a real Jupyter kernel; the executed cells."""
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    client = NotebookClient(
        book, timeout=120, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return book.cells


def test_a_refused_call_shows_one_line_in_a_notebook_not_a_traceback(tmp_path):
    (cell,) = run_cells("import alignkit\nalignkit.sft(data={'paths': ['chats.jsonl']})", cwd=tmp_path)
    (error,) = [output for output in cell.outputs if output.output_type == "error"]
    assert error.ename == "AlignkitError"
    (line,) = error.traceback  # what Jupyter prints for the error, each entry a line
    assert "chats.jsonl" in line and "fix:" in line and "File " not in line


def test_paths_given_as_pathlib_paths_make_the_same_run_config_as_strings(tiny_model, chat_file, tmp_path):
    as_text = {"model": {"name": tiny_model}, "data": {"paths": [str(chat_file)]}, "out": str(tmp_path / "run")}
    as_paths = {"model": {"name": Path(tiny_model)}, "data": {"paths": [chat_file]}, "out": tmp_path / "run"}
    from_text, from_paths = (load_config(SFTStageConfig, None, values) for values in (as_text, as_paths))
    assert from_paths == from_text and to_yaml(from_paths) == to_yaml(from_text)
    rl = load_config(RLStageConfig, None, {"from_run": tmp_path / "sft", "reward_run": tmp_path / "reward"})
    assert (rl.from_run, rl.reward_run) == (str(tmp_path / "sft"), str(tmp_path / "reward"))


@pytest.mark.parametrize("where", ["data", "paths", "item"])
@pytest.mark.parametrize("library", ["pandas", "datasets"])
def test_rows_in_memory_are_refused_in_one_line_saying_how_to_save_them(library, where, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"{i}?"}, {"role": "assistant", "content": f"{i}."}]}
            for i in range(30)]  # fmt: skip
    table = pd.DataFrame(rows) if library == "pandas" else datasets.Dataset.from_list(rows)
    data = {"data": table, "paths": {"paths": table}, "item": {"paths": [table]}}[where]
    with pytest.raises(AlignkitError) as refused:
        alignkit.sft(data=data, out=str(tmp_path / "run"))
    message = str(refused.value)
    assert "\n" not in message and f"a {library} " in message and "save" in message and "to_json(" in message
    assert not (tmp_path / "run").exists()


def test_a_data_file_passed_as_the_first_argument_is_named_as_data_not_as_bad_yaml(chat_file, tmp_path):
    with pytest.raises(AlignkitError) as refused:
        alignkit.sft(str(chat_file), out=str(tmp_path / "run"))
    assert "data file given as the config" in refused.value.message
    assert f"data={{'paths': ['{chat_file}']}}" in refused.value.hint


def test_an_unknown_keyword_argument_is_named_as_an_argument_not_as_the_command_line(chat_file, tmp_path):
    with pytest.raises(AlignkitError) as refused:
        alignkit.sft(data={"paths": [chat_file]}, out=tmp_path / "run", learning_rate=1e-4)
    assert refused.value.message.startswith("arguments: unknown config key `learning_rate`")
    assert "trainer={'learning_rate': ...}" in str(refused.value) and not (tmp_path / "run").exists()


# (a call with an argument its annotation rules out, what the one line must name: the keyword and the fix)
WRONG_TYPES = {
    "int-for-a-run": (lambda tmp, chats: alignkit.chat("Hi?", run=3), ["`run` must be a path (str or Path)", "got 3"]),
    "int-for-a-run-to-open": (lambda tmp, chats: alignkit.open_run(5), ["`path` must be a path", "got 5"]),
    "int-for-a-run-to-load": (
        lambda tmp, chats: load_run_model(5),
        ["5: not a run directory", "a str, a Path or a Run"],
    ),
    "number-as-text": (
        lambda tmp, chats: alignkit.candidates("p.jsonl", tmp / "c.jsonl", n="3"),
        ["`n` must be an int", "n=3"],
    ),
    "one-run-for-a-list": (
        lambda tmp, chats: alignkit.evaluate_runs("runs/sft", out=tmp / "eval"),
        ["`runs` must be a list of paths", "pass a list: runs=['runs/sft']"],
    ),
    "one-override-for-a-list": (
        lambda tmp, chats: alignkit.sft(overrides="trainer.max_steps=5", out=tmp / "run"),
        ["`overrides` must be a list", "overrides=['trainer.max_steps=5']"],
    ),
    "config-as-a-dict": (
        lambda tmp, chats: alignkit.sft({"trainer": {"max_steps": 5}}, out=tmp / "run"),
        ["`config` must be a path (str or Path) or None", "alignkit.sft(**config)"],
    ),
    "prompts-in-memory": (
        lambda tmp, chats: alignkit.candidates(["What is 2 plus 2?"], tmp / "c.jsonl"),
        ["`prompts` must be a path", "save them first", "prompts='rows.jsonl'"],
    ),
    "pairs-in-memory": (
        lambda tmp, chats: alignkit.dpo(
            data={"paths": [{"prompt": "Hi?", "chosen": "Hi.", "rejected": "No."}]}, out=tmp / "run"
        ),
        [
            "`data.paths[0]` must be str",
            "Dataset.from_list(rows).to_json('rows.jsonl')",
            "data={'paths': ['rows.jsonl']}",
        ],
    ),
    "data-as-one-path": (
        lambda tmp, chats: alignkit.sft(data="chats.jsonl", out=tmp / "run"),
        ["`data` must be a mapping", "pass it as data={'paths': ['chats.jsonl']}"],
    ),
    "model-as-its-name": (
        lambda tmp, chats: alignkit.sft(model="org/model", out=tmp / "run"),
        ["`model` must be a mapping", "pass it as model={'name': 'org/model'}"],
    ),
    "text-for-a-trainer-number": (
        lambda tmp, chats: alignkit.sft(data={"paths": [chats]}, trainer={"max_steps": "5"}, out=tmp / "run"),
        ["`trainer.max_steps` must be int", "pass trainer={'max_steps': 5}"],
    ),
    "misspelled-keyword": (
        lambda tmp, chats: alignkit.candidates("p.jsonl", tmp / "c.jsonl", tempreature=0.5),
        ["unexpected keyword argument 'tempreature'", "did you mean `temperature`?"],
    ),
}


@pytest.mark.parametrize(("call", "named"), WRONG_TYPES.values(), ids=WRONG_TYPES)
def test_an_argument_of_the_wrong_type_is_refused_in_one_line_naming_the_keyword(call, named, chat_file, tmp_path):
    """An int for a path failed in pathlib, a string for a list was read a character at a time ('n: does not
    exist'), text for a number failed mid-generation: each a TypeError's traceback from inside, or a wrong message."""
    with pytest.raises(AlignkitError) as refused:
        call(tmp_path, chat_file)
    line = str(refused.value)
    assert "\n" not in line and all(part in line for part in named), line
    assert [path.name for path in tmp_path.iterdir()] == [chat_file.name]


# (a misspelled or shorthand key in a stage's keywords, the fix as the call writes it)
MISSPELLED = {
    "section-key": ({"trainer": {"max_step": 5}}, "did you mean trainer={'max_steps': ...}?"),
    "top-level-key": ({"lerning_rate": 1e-4}, "did you mean trainer={'learning_rate': ...}?"),
    "lr": ({"trainer": {"lr": 1e-4}}, "did you mean trainer={'learning_rate': ...}?"),
    "epochs": ({"epochs": 2}, "did you mean trainer={'num_train_epochs': ...}?"),
    "batch-size": ({"trainer": {"batch_size": 2}}, "did you mean trainer={'per_device_train_batch_size': ...}?"),
    "lora-rank": ({"peft": {"rank": 8}}, "did you mean peft={'r': ...}?"),
    "no-near-key": ({"trainer": {"zzzz": 1}}, "`trainer` takes the fields of trl.SFTConfig"),
}


@pytest.mark.parametrize(("sections", "fix"), MISSPELLED.values(), ids=MISSPELLED)
def test_a_misspelled_key_is_corrected_in_the_calls_own_keywords(sections, fix, chat_file, tmp_path):
    """A notebook was told `did you mean trainer.max_steps`, `epochs` was sent to `data.paths`, `batch_size` to
    `auto_find_batch_size`, `rank` to `rank_pattern`, and a key near none listed all 150 fields of TRL's config."""
    with pytest.raises(AlignkitError) as refused:
        alignkit.sft(data={"paths": [chat_file]}, out=tmp_path / "run", **sections)
    assert refused.value.hint == fix and not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def sft_run(tiny_model, tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("api")
    write_jsonl(root / "chat.jsonl", CHAT_ROWS)
    trainer = {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1}
    chats = {"paths": [root / "chat.jsonl"]}
    return alignkit.sft(data=chats, model={"name": tiny_model}, trainer=trainer, out=root / "sft")


def test_a_returned_run_is_shown_by_stage_and_status_and_passed_on_as_its_directory(sft_run, tmp_path):
    assert repr(sft_run) == f"Run({str(sft_run.path)!r}, stage='sft', status='complete')"
    question = CHAT_ROWS[0]["messages"][:1]
    assert alignkit.chat(question, run=sft_run, max_new_tokens=6) == alignkit.chat(
        question, run=sft_run.path, max_new_tokens=6
    )
    rejected = [{"role": "assistant", "content": "No idea."}]
    pairs = [{"prompt": r["messages"][:1], "chosen": r["messages"][1:], "rejected": rejected} for r in CHAT_ROWS]
    dpo = alignkit.dpo(
        data={"paths": [write_jsonl(tmp_path / "pairs.jsonl", pairs)]},
        from_run=sft_run,
        out=tmp_path / "dpo",
        trainer={"max_steps": 1, "per_device_train_batch_size": 4},
    )
    assert [Path(step["run"]) for step in dpo.lineage] == [sft_run.path.resolve(), dpo.path.resolve()]


def test_a_progress_bar_in_a_notebook_is_a_widget_without_a_warning(sft_run, tmp_path):
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "What is 2 plus 2?"}, {"prompt": "What is 3 plus 3?"}])
    (cell,) = run_cells(
        f"import alignkit\nalignkit.candidates('prompts.jsonl', 'out.jsonl', n=2, from_run={str(sft_run)!r}, "
        "max_new_tokens=4)",
        cwd=tmp_path,
    )
    assert (tmp_path / "out.jsonl").is_file()
    shown = [output for output in cell.outputs if output.output_type == "display_data"]
    assert any("application/vnd.jupyter.widget-view+json" in output.data for output in shown)
    assert not any("IProgress not found" in output.get("text", "") for output in cell.outputs)


@pytest.fixture(scope="module")
def reward_run(sft_run, tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("api-reward")
    rejected = [{"role": "assistant", "content": "No idea."}]
    pairs = [{"prompt": r["messages"][:1], "chosen": r["messages"][1:], "rejected": rejected} for r in CHAT_ROWS]
    data = {"paths": [write_jsonl(root / "pairs.jsonl", pairs)]}
    return alignkit.reward(data=data, from_run=sft_run, out=root / "reward", trainer={"max_steps": 1})


def test_chat_refuses_a_reward_run_rather_than_answering_with_it(reward_run):
    with pytest.raises(AlignkitError) as refused:
        alignkit.chat("What is 2 plus 2?", run=reward_run, max_new_tokens=4)
    assert "is a reward model, not a policy" in refused.value.message


def test_a_reward_model_scores_a_text_prompt_as_one_user_turn(reward_run):
    scorer = load_scorer(reward_run)
    as_messages = scorer.score([[{"role": "user", "content": "What is 2 plus 2?"}]], ["It is 4."])
    assert scorer.score(["What is 2 plus 2?"], ["It is 4."]) == as_messages


def test_a_reward_model_scores_an_assistant_message_as_its_text(reward_run):
    """The docs' completions are strings or assistant messages: one message dict is the same reply as its text."""
    scorer = load_scorer(reward_run)
    prompt = [{"role": "user", "content": "What is 2 plus 2?"}]
    reply = {"role": "assistant", "content": "It is 4."}
    assert scorer.score([prompt], [reply]) == scorer.score([prompt], ["It is 4."]) == scorer.score([prompt], [[reply]])


def test_every_option_of_generate_is_an_argument_of_alignkit_candidates():
    """The CLI's `generate` is `alignkit.candidates` (a notebook could not resume an interrupted generation)."""
    import inspect

    import typer.main

    from alignkit.cli import app

    command = typer.main.get_command(app).commands["generate"]
    assert {param.name for param in command.params} <= set(inspect.signature(alignkit.candidates).parameters)


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line the real console entry point prints for a refused command, run in-process."""
    from alignkit import cli

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["alignkit", *argv])
        with pytest.raises(SystemExit):
            cli.main()
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return line


def python_error(function: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(AlignkitError) as refused:
        function(*args, **kwargs)
    return str(refused.value)


# (Python call, the same call on the command line, the fix as the Python function takes it, and as the CLI does)
SAME_BAD_CALL = {
    "run-dir-not-empty": (
        lambda data, tmp: alignkit.sft(data={"paths": [data]}, out=tmp / "full"),
        lambda data, tmp: ["sft", "--data", data, "--out", tmp / "full"],
        "pass resume=True to continue it, overwrite=True to replace it, or another `out`",
        "pass --resume to continue it, --overwrite to replace it, or another --out",
    ),
    "max-steps": (
        lambda data, tmp: alignkit.sft(data={"paths": [data]}, out=tmp / "run", trainer={"max_steps": 0}),
        lambda data, tmp: ["sft", "--data", data, "--out", tmp / "run", "--max-steps", "0"],
        "e.g. trainer={'max_steps': 10}",
        "e.g. --max-steps 10",
    ),
    "top-level-key": (
        lambda data, tmp: alignkit.sft(data={"paths": [data]}, out=tmp / "run", trainer={"runs_dir": "r"}),
        lambda data, tmp: ["sft", "--data", data, "--out", tmp / "run", "--set", "trainer.runs_dir=r"],
        "`runs_dir` is a top-level key: runs_dir=...",
        "`runs_dir` is a top-level key: --set runs_dir=...",
    ),
    "no-parent": (
        lambda data, tmp: alignkit.dpo(data={"paths": [data]}, out=tmp / "run"),
        lambda data, tmp: ["dpo", "--data", data, "--out", tmp / "run"],
        "no `from_run` run given (pass `from_run` an sft (or dpo) run)",
        "no --from run given — fix: pass --from an sft (or dpo) run",
    ),
    "no-reward": (
        lambda data, tmp: alignkit.rl(data={"paths": [data]}, out=tmp / "run"),
        lambda data, tmp: ["rl", "--data", data, "--out", tmp / "run"],
        "no `reward_run` run and no `rewards` given (pass reward_run='REWARD_RUN' or rewards=['reward_model'",
        "no --reward run and no `rewards` given — fix: pass --reward REWARD_RUN or --set rewards=[reward_model,",
    ),
    "output-file-exists": (
        lambda data, tmp: alignkit.candidates(data, tmp / "full" / "kept.jsonl"),
        lambda data, tmp: ["generate", "--prompts", data, "--out", tmp / "full" / "kept.jsonl"],
        "(pass overwrite=True or choose another `out`)",
        "pass --overwrite or choose another --out",
    ),
    "greedy-candidates": (
        lambda data, tmp: alignkit.candidates(data, tmp / "c.jsonl", temperature=0),
        lambda data, tmp: ["generate", "--prompts", data, "--out", tmp / "c.jsonl", "--temperature", "0"],
        "sample, e.g. temperature=0.8 (with greedy_first=True the first candidate is the greedy reply)",
        "sample, e.g. --temperature 0.8 (with --greedy-first the first candidate is the greedy reply)",
    ),
    "peft-rank": (
        lambda data, tmp: alignkit.sft(data={"paths": [data]}, out=tmp / "run", peft={"r": 0}),
        lambda data, tmp: ["sft", "--data", data, "--out", tmp / "run", "--set", "peft.r=0"],
        "e.g. peft={'r': 16}",
        "e.g. --set peft.r=16",
    ),
    "precision": (
        lambda data, tmp: alignkit.sft(data={"paths": [data]}, out=tmp / "run", model={"precision": "fp8"}),
        lambda data, tmp: ["sft", "--data", data, "--out", tmp / "run", "--set", "model.precision=fp8"],
        "model={'precision': 'auto'}",
        "--set model.precision=auto",
    ),
    "data-not-found": (
        lambda data, tmp: alignkit.sft(data={"paths": [tmp / "nope.jsonl"]}, out=tmp / "run"),
        lambda data, tmp: ["sft", "--data", tmp / "nope.jsonl", "--out", tmp / "run"],
        "data file not found (check the path passed to `data`)",
        "data file not found — fix: check the path passed to --data",
    ),
    "prompts-not-found": (
        lambda data, tmp: alignkit.candidates(tmp / "nope.jsonl", tmp / "c.jsonl"),
        lambda data, tmp: ["generate", "--prompts", tmp / "nope.jsonl", "--out", tmp / "c.jsonl"],
        "data file not found (check the path passed to `prompts`)",
        "data file not found — fix: check the path passed to --prompts",
    ),
    "candidates-not-found": (
        lambda data, tmp: alignkit.push(tmp / "nope.jsonl", "round-1"),
        lambda data, tmp: ["feedback", "push", "--candidates", tmp / "nope.jsonl", "--dataset", "round-1"],
        "data file not found (check the path passed to `candidates_file`)",
        "data file not found — fix: check the path passed to --candidates",
    ),
    "answer-key-not-found": (
        lambda data, tmp: alignkit.simulate_ratings("round-1", [("ann", "pw")], answer_key=tmp / "nope.jsonl"),
        lambda data, tmp: [
            "feedback",
            "simulate",
            "--dataset",
            "round-1",
            "--annotator",
            "ann:pw",
            "--answer-key",
            tmp / "nope.jsonl",
        ],
        "data file not found (check the path passed to `answer_key`)",
        "data file not found — fix: check the path passed to --answer-key",
    ),
    "set-not-key-value": (
        lambda data, tmp: alignkit.sft(data={"paths": [data]}, out=tmp / "run", overrides=["x"]),
        lambda data, tmp: ["sft", "--data", data, "--out", tmp / "run", "--set", "x"],
        "`overrides` 'x': expected key=value (e.g. overrides=['trainer.learning_rate=2e-5'])",
        "--set 'x': expected key=value — fix: e.g. --set trainer.learning_rate=2e-5",
    ),
    "count-below-one": (
        lambda data, tmp: alignkit.candidates(data, tmp / "c.jsonl", n=0),
        lambda data, tmp: ["generate", "--prompts", data, "--out", tmp / "c.jsonl", "--n", "0"],
        "`n` must be at least 1, got 0 (pass n=1 or more, or leave it out)",
        "--n must be at least 1, got 0 — fix: pass --n 1 or more, or leave it out",
    ),
    "one-candidate-each": (
        lambda data, tmp: alignkit.push(one_candidate_each(tmp), "round-1"),
        lambda data, tmp: ["feedback", "push", "--candidates", one_candidate_each(tmp), "--dataset", "round-1"],
        "no prompt has 2+ distinct candidates (generate with alignkit.candidates(..., n=2) or more)",
        "no prompt has 2+ distinct candidates — fix: generate with --n 2 or more",
    ),
    "export-dtype": (
        lambda data, tmp: alignkit.export_run(tmp / "run", tmp / "model", dtype="fp64"),
        lambda data, tmp: ["export", tmp / "run", "--out", tmp / "model", "--dtype", "fp64"],
        "dtype='fp64' is not one of auto, fp32, bf16, fp16 (pass one of them)",
        "--dtype fp64 is not one of auto, fp32, bf16, fp16 — fix: pass one of them",
    ),
    "runs-dir-missing": (
        lambda data, tmp: alignkit.list_runs(tmp / "nope"),
        lambda data, tmp: ["runs", "--dir", tmp / "nope"],
        "nope': no such directory (pass the folder your runs are in)",
        "nope: no such directory — fix: pass the folder your runs are in",
    ),
    "agreement-not-a-share": (
        lambda data, tmp: alignkit.pull("round-1", tmp / "pairs.jsonl", min_agreement=1.5),
        lambda data, tmp: [
            "feedback",
            "pull",
            "--dataset",
            "round-1",
            "--out",
            tmp / "pairs.jsonl",
            "--min-agreement",
            "1.5",
        ],
        "`min_agreement` 1.5: expected a share between 0 and 1 (e.g. 0.6)",
        "--min-agreement 1.5: expected a share between 0 and 1",
    ),
}


def one_candidate_each(tmp: Path) -> Path:
    """Candidates as `generate --n 1` writes them: one per prompt, nothing to compare."""
    prompt = [{"role": "user", "content": "What is 2 plus 2?"}]
    return write_jsonl(tmp / "one.jsonl", [{"prompt": prompt, "candidates": [{"text": "4."}]}])


@pytest.mark.parametrize(("python", "command", "in_python", "in_cli"), SAME_BAD_CALL.values(), ids=SAME_BAD_CALL)
def test_a_refusal_names_its_fix_as_the_python_keyword_or_the_cli_flag(
    python, command, in_python, in_cli, chat_file, tmp_path, capsys
):
    """A notebook's `alignkit.sft(...)` was told to `pass --overwrite` or `--max-steps 10`: flags it cannot pass."""
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "kept.jsonl").write_text("{}\n")
    from_python = python_error(python, str(chat_file), tmp_path)
    from_cli = cli_error([str(arg) for arg in command(str(chat_file), tmp_path)], capsys)
    assert in_python in from_python and " --" not in from_python, from_python
    assert in_cli in from_cli, from_cli
    assert (tmp_path / "full" / "kept.jsonl").read_text() == "{}\n"


def pasted(fix: str, **values: str) -> dict[str, Any]:
    """The keyword arguments a fix spells (`data={'paths': ['NEW_PATH']}`), pasted with the placeholders filled."""
    for placeholder, value in values.items():
        fix = fix.replace(repr(placeholder), repr(value))
    return eval(f"dict({fix})")


def test_the_fixes_a_moved_run_names_in_python_work_when_pasted(tiny_model, tmp_path):
    """Each fix a notebook is shown for a run moved with its data and base, pasted into the call it names, is taken:
    the resume hint, the new place of the data and of the base, the base of `candidates` (its `model` is the name,
    not a stage's `model={'name': ...}`); `evaluate_runs`, which takes no model, is sent to ALIGNKIT_MODEL_PATH."""
    import shutil

    from alignkit import runs

    shutil.copytree(tiny_model, tmp_path / "models" / "tiny")
    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    trainer = {"max_steps": 1, "save_steps": 1, "eval_steps": 1, "per_device_train_batch_size": 4}
    run_dir = tmp_path / "runs" / "sft"
    alignkit.sft(data={"paths": [chat]}, model={"name": tmp_path / "models" / "tiny"}, trainer=trainer, out=run_dir)
    runs.Run(run_dir).update_manifest(status="interrupted")
    shutil.move(tmp_path / "models", tmp_path / "moved")
    shutil.move(chat, tmp_path / "chat.moved.jsonl")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "What is 2 plus 2?"}])

    unfinished = python_error(alignkit.candidates, prompts, tmp_path / "c.jsonl", n=1, from_run=run_dir)
    assert f"resume it with `alignkit.sft(resume=True, out={str(run_dir)!r})`" in unfinished
    data_gone = python_error(eval, unfinished.split("`")[-2], {"alignkit": alignkit})
    assert "resume with its new place: resume=True, data={'paths': ['NEW_PATH']} (" in data_gone
    moved_data = pasted("data={'paths': ['NEW_PATH']}", NEW_PATH=str(tmp_path / "chat.moved.jsonl"))
    base_gone = python_error(alignkit.sft, resume=True, out=run_dir, trainer={"max_steps": 2}, **moved_data)
    assert "pass its new place with model={'name': 'NEW_PATH'}, or" in base_gone
    moved_base = pasted("model={'name': 'NEW_PATH'}", NEW_PATH=str(tmp_path / "moved" / "tiny"))
    resumed = alignkit.sft(resume=True, out=run_dir, trainer={"max_steps": 2}, **moved_data, **moved_base)
    assert resumed.complete and resumed.metrics["resumed_from"] == "checkpoints/checkpoint-1"

    shutil.move(tmp_path / "moved", tmp_path / "moved.again")
    base_gone = python_error(alignkit.candidates, prompts, tmp_path / "c.jsonl", n=1, from_run=run_dir)
    assert "pass its new place with model='NEW_PATH', or" in base_gone
    given = pasted("model='NEW_PATH'", NEW_PATH=str(tmp_path / "moved.again" / "tiny"))
    alignkit.candidates(prompts, tmp_path / "c.jsonl", n=1, from_run=run_dir, max_new_tokens=2, **given)
    assert (tmp_path / "c.jsonl").is_file()
    kept = python_error(alignkit.candidates, prompts, tmp_path / "c.jsonl", n=1, from_run=run_dir, **given)
    assert "(pass overwrite=True or choose another `out`)" in kept
    alignkit.candidates(prompts, tmp_path / "c.jsonl", n=1, from_run=run_dir, max_new_tokens=2, **given, overwrite=True)

    shutil.move(tmp_path / "moved.again", tmp_path / "moved.third")  # not where `candidates` was told
    runs_gone = python_error(alignkit.evaluate_runs, [run_dir], out=tmp_path / "eval", limit=1)
    assert "model=" not in runs_gone and "set ALIGNKIT_MODEL_PATH=NEW_PATH (" in runs_gone


def test_curves_of_two_runs_of_one_name_are_two_lines_and_a_misspelled_curve_is_refused(sft_run, tmp_path):
    """Comparing the `sft` run of two experiments drew one zigzag line labelled `sft` (both runs' points under one
    name); `plot_curves("runs/sft")` read the path a character at a time, and `["los"]`, like it, drew empty axes."""
    import shutil

    import matplotlib

    from alignkit.dashboard import plot_curves

    matplotlib.use("Agg")
    first, second = (Path(shutil.copytree(sft_run.path, tmp_path / name / "sft")) for name in ("exp-a", "exp-b"))
    with (second / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"step": 3, "loss": 0.5}\n')
    (loss,) = plot_curves([first, alignkit.open_run(second)], ["loss"]).axes
    lines = {line.get_label(): list(line.get_ydata()) for line in loss.get_lines()}
    assert set(lines) == {"exp-a/sft", "exp-b/sft"} and lines["exp-b/sft"] == [*lines["exp-a/sft"], 0.5]
    (alone,) = plot_curves(str(first), ["loss"]).axes
    assert [line.get_label() for line in alone.get_lines()] == ["sft"]
    (grad_norm,) = plot_curves([first], ["grad_norm"]).axes  # a key of metrics.jsonl, not one of the named curves
    assert len(grad_norm.get_lines()[0].get_ydata()) == 2
    with pytest.raises(AlignkitError, match=r"no curve 'los' in these runs \(curves: loss, validation loss"):
        plot_curves([first], ["loss", "los"])


def test_an_interrupted_training_call_says_how_to_resume_it_in_python(tiny_model, chat_file, tmp_path):
    """A notebook's interrupted `alignkit.sft(...)` cell showed torch's frames and `KeyboardInterrupt`, nothing about
    the run it left: now the note under the traceback names its checkpoint and the call that continues it."""
    import os
    import signal
    import threading

    out = tmp_path / "sft"

    def press_ctrl_c() -> None:  # as Jupyter's interrupt does: SIGINT to the kernel, once training has saved
        # any checkpoint: a thread starved of the GIL by training may wake after the first one was rotated away
        while not list(out.glob("checkpoints/checkpoint-*/trainer_state.json")):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    # SIGINT raises KeyboardInterrupt, as in a Jupyter kernel, even where the test runner was started in the
    # background (`pytest &`, nohup, CI) and so ignores it
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=press_ctrl_c, daemon=True).start()
    trainer = {"max_steps": 500, "save_steps": 2, "eval_steps": 2, "per_device_train_batch_size": 4}
    try:
        with pytest.raises(KeyboardInterrupt) as interrupted:
            alignkit.sft(data={"paths": [chat_file]}, model={"name": tiny_model}, trainer=trainer, out=out)
    finally:
        signal.signal(signal.SIGINT, previous)
    (note,) = interrupted.value.__notes__
    call = f"alignkit.sft(resume=True, out={str(out)!r})"
    assert note.startswith(f"alignkit: {out} interrupted, its last checkpoint (checkpoint-") and note.endswith(call)
    step = int(Run(out).last_checkpoint().rsplit("-", 1)[-1])
    resumed = eval(
        call.replace("resume=True", f"resume=True, trainer={{'max_steps': {step + 1}}}"), {"alignkit": alignkit}
    )
    assert resumed.complete and resumed.metrics["resumed_from"] == f"checkpoints/checkpoint-{step}"


def test_a_training_cell_on_a_cpu_shows_no_pin_memory_warning(tiny_model, chat_file, tmp_path, monkeypatch):
    """Every training cell on a machine without a GPU printed torch's "'pin_memory' argument is set as true but no
    accelerator is found" once per dataloader (training, validation, final evaluation): TrainingArguments' default.
    It also showed one datasets bar per map/filter step of TRL's preparation ("Tokenizing train dataset", ...)."""
    monkeypatch.delenv("HF_DATASETS_DISABLE_PROGRESS_BARS", raising=False)  # a fresh kernel's (the CLI sets it)
    (cell,) = run_cells(
        "import alignkit, datasets\n"
        f"run = alignkit.sft(data={{'paths': [{str(chat_file)!r}]}}, model={{'name': {tiny_model!r}}}, "
        "trainer={'max_steps': 1, 'per_device_train_batch_size': 4}, out='run')\n"
        "print(run.status, datasets.is_progress_bar_enabled())",
        cwd=tmp_path,
    )
    shown = "".join(
        output.get("text", "") + str(output.get("data", {}).get("text/plain", "")) for output in cell.outputs
    )
    assert "complete True" in shown and "pin_memory" not in shown, shown  # the user's datasets bars are back after
    assert "Tokenizing" not in shown and "dataset" not in shown, shown


def test_import_alignkit_is_quiet_and_light_and_reaches_its_submodules_as_the_docs_name_them():
    """`alignkit.lineage.load_run_model(run.path)` (the package's docstring) was an AttributeError in a fresh kernel:
    `import alignkit` imports no submodule, and only an earlier call had imported lineage."""
    import subprocess
    import sys

    script = (
        "import sys, alignkit\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'datasets', 'peft') if m in sys.modules)\n"
        "print(heavy, callable(alignkit.lineage.load_run_model), callable(alignkit.dashboard.plot_curves))\n"
        "try:\n    alignkit.no_such_module\nexcept AttributeError as exc:\n    print(exc)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.splitlines() == ["[] True True", "module 'alignkit' has no attribute 'no_such_module'"]
