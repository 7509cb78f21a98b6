"""The Python API as a researcher uses it in a notebook: what a cell shows when a call is refused, and which Python
objects the stage functions take."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

import alignkit
import datasets
from alignkit import AlignkitError
from alignkit.config import RLStageConfig, SFTStageConfig, load_config, to_yaml
from alignkit.lineage import load_scorer
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
    assert "trainer.learning_rate" in str(refused.value) and not (tmp_path / "run").exists()


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
