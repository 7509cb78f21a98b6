"""Malformed inputs: one line naming file/row/field and the fix, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from alignkit import cli
from tests.conftest import run_cli

BAD = Path(__file__).resolve().parent.parent / "data" / "bad"

# (file under tests/data/bad, extra args, substrings the one-line error must contain)
DATA_CASES = [
    ("bad_json_line.jsonl", "sft", ["bad_json_line.jsonl:line 3", "not valid JSON"]),
    ("misnamed_field.jsonl", "sft", ["misnamed_field.jsonl:line 2", "did you mean `messages`"]),
    ("unknown_role.jsonl", "sft", ["unknown_role.jsonl:line 3", "messages[1].role", "'bot'"]),
    ("no_assistant.jsonl", "sft", ["no_assistant.jsonl:line 1", "no assistant turn"]),
    ("empty.jsonl", "sft", ["empty.jsonl", "empty"]),
    ("latin1.jsonl", "sft", ["latin1.jsonl:line 2", "UTF-8"]),
    ("content_not_string.jsonl", "sft", ["line 1", "messages[1].content", "expected a string"]),
    ("alpaca_missing_output.json", "sft", ["alpaca_missing_output.json:item 1", "`output`: missing"]),
    ("extra_cells.csv", "sft", ["extra_cells.csv:line 3", "more cells"]),
    ("empty_assistant.jsonl", "sft", ["line 1", "messages[1].content", "empty"]),
    ("system_not_first.jsonl", "sft", ["line 1", "messages[1].role", "system message may only come first"]),
    ("not_an_object.jsonl", "sft", ["not_an_object.jsonl:line 2", "expected a JSON object"]),
    ("text_rows_for_sft.jsonl", "sft", ["line 1", "alignkit pretrain"]),
    ("sharegpt_bad_from.jsonl", "sft", ["line 1", "conversations[1].from", "'robot'"]),
    ("assistant_first.jsonl", "sft", ["line 1", "messages[0].role", "start with a user turn"]),
    ("truncated.parquet", "sft", ["truncated.parquet", "cannot read Parquet"]),
    ("unsupported.xml", "sft", ["unsupported.xml", "unsupported file type"]),
    ("not_a_list.json", "sft", ["not_a_list.json", "expected a JSON list"]),
    ("broken.json", "sft", ["broken.json:line 2", "not valid JSON"]),
    ("prompt_missing_completion.jsonl", "sft", ["line 2", "`completion`: missing"]),
    ("empty.jsonl", "pretrain", ["empty.jsonl", "empty"]),
]

CONFIG_CASES = [
    ("unknown_key.yaml", ["unknown config key `trainer.learning_rat`", "did you mean `trainer.learning_rate`"]),
    ("unknown_section_key.yaml", ["unknown config key `model.nmae`", "did you mean `model.name`"]),
    ("wrong_type.yaml", ["validation_split", "must be float"]),
    ("bad_syntax.yaml", ["bad_syntax.yaml", "not valid YAML"]),
    ("unknown_peft.yaml", ["unknown peft.method `loraa`", "did you mean `lora`"]),
    ("unknown_peft_key.yaml", ["unknown config key `peft.rank`"]),
]


def invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the real console entry point in-process; returns (exit code, stderr)."""
    old = sys.argv
    sys.argv = ["alignkit", *argv]
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    finally:
        sys.argv = old
    return int(exit_info.value.code or 0), capsys.readouterr().err


def assert_one_line_error(code: int, err: str, expected: list[str]) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    for fragment in expected:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


@pytest.mark.parametrize(("name", "stage", "expected"), DATA_CASES, ids=[f"{c[1]}-{c[0]}" for c in DATA_CASES])
def test_malformed_data_gives_one_line_error(name, stage, expected, tmp_path, capsys, tiny_model):
    out = tmp_path / "run"
    code, err = invoke([stage, "--data", str(BAD / name), "--model", tiny_model, "--out", str(out)], capsys)
    assert_one_line_error(code, err, expected)
    assert not out.exists(), "no run directory may be left behind by a rejected input"


@pytest.mark.parametrize(("name", "expected"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_gives_one_line_error(name, expected, tmp_path, capsys, chat_file, tiny_model):
    out = tmp_path / "run"
    argv = ["sft", "--config", str(BAD / name), "--data", str(chat_file), "--model", tiny_model, "--out", str(out)]
    code, err = invoke(argv, capsys)
    assert_one_line_error(code, err, expected)
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "model.nmae=x"], ["unknown config key `model.nmae`", "did you mean `model.name`"]),
        (["--set", "trainer.lerning_rate=1e-4"], ["`trainer.lerning_rate`", "did you mean `trainer.learning_rate`"]),
        (["--set", "novalue"], ["expected key=value"]),
        (["--max-steps", "0"], ["max_steps must be positive"]),
        (["--from", "does/not/exist"], ["does/not/exist", "not a run directory"]),
        (["--model", "./no-such-model"], ["no-such-model", "not found"]),
        (["--data", "missing.jsonl"], ["missing.jsonl", "not found"]),
    ],
    ids=["set-typo", "trainer-typo", "set-no-equals", "zero-steps", "missing-from", "missing-model", "missing-data"],
)
def test_bad_flags_give_one_line_error(args, expected, tmp_path, capsys, chat_file, tiny_model):
    base = ["sft", "--data", str(chat_file), "--model", tiny_model, "--out", str(tmp_path / "run")]
    if "--model" in args:
        base = base[:3] + base[5:]
    code, err = invoke(base + args, capsys)
    assert_one_line_error(code, err, expected)
    assert not (tmp_path / "run").exists()


def test_existing_output_is_not_clobbered(tmp_path, capsys, chat_file, tiny_model):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, err = invoke(["sft", "--data", str(chat_file), "--model", tiny_model, "--out", str(out)], capsys)
    assert_one_line_error(code, err, ["output directory exists", "--overwrite"])
    assert (out / "precious.txt").read_text() == "keep me"


def test_error_in_a_real_subprocess_has_no_traceback(tmp_path):
    result = run_cli("sft", "--data", str(BAD / "unknown_role.jsonl"), "--out", str(tmp_path / "run"))
    assert_one_line_error(result.returncode, result.stderr, ["unknown_role.jsonl:line 3", "'bot'"])


def test_export_of_a_directory_that_is_no_run_is_one_error(tmp_path, capsys):
    code, err = invoke(["export", str(tmp_path), "--out", str(tmp_path / "merged")], capsys)
    assert_one_line_error(code, err, ["not a run directory"])
    assert not (tmp_path / "merged").exists()


def test_shipped_configs_load():
    from alignkit.config import PretrainStageConfig, SFTStageConfig, load_config

    repo = Path(__file__).resolve().parent.parent.parent
    assert load_config(SFTStageConfig, repo / "configs" / "sft.yaml").peft["r"] == 16
    assert load_config(PretrainStageConfig, repo / "configs" / "pretrain.yaml").trainer["packing"] is True


@pytest.mark.parametrize(
    "argv",
    [
        ["feedback", "push", "--candidates", "CANDIDATES", "--dataset", "r1"],
        ["feedback", "pull", "--dataset", "r1", "--out", "OUT"],
        ["feedback", "users", "list"],
        ["feedback", "users", "add", "alice", "--password", "alice-password"],
        ["feedback", "simulate", "--dataset", "r1", "--annotator", "alice:alice-password"],
        ["feedback", "review", "pull", "--dataset", "r1", "--out", "OUT"],
    ],
    ids=["push", "pull", "users-list", "users-add", "simulate", "review-pull"],
)
def test_every_feedback_command_reports_unreachable_argilla_in_one_line(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ARGILLA_API_KEY", "owner-api-key")
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text('{"prompt": "Hi", "candidates": [{"text": "Hello"}, {"text": "Hey"}]}\n')
    argv = [a.replace("CANDIDATES", str(candidates)).replace("OUT", str(tmp_path / "out.jsonl")) for a in argv]
    code, err = invoke(argv, capsys)
    assert_one_line_error(code, err, ["Argilla at http://127.0.0.1:9 is unreachable"])
    assert not (tmp_path / "out.jsonl").exists()
