"""The playground and Runs pages under Streamlit's AppTest, on real tiny runs (SFT, then DPO on its adapter): the
model list, streamed multi-turn history per column, the few-shot baseline, broken runs, adapter switching on one
shared base. Feedback to a real Argilla in a real browser: tests/e2e/test_playground_browser.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from alignkit import dashboard, demo, hardware, lineage, models, serve
from alignkit import playground as pg
from alignkit.errors import AlignkitError
from alignkit.generate import Sampling
from tests.conftest import CHAT_ROWS, run_cli, train_sft_and_dpo

APPS = Path(__file__).resolve().parents[2] / "apps"
SAMPLING = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8, seed=3)


@pytest.fixture(scope="module")
def runs_dir(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/sft (LoRA on the tiny base), runs/dpo (continues the SFT adapter), runs/broken (damaged manifest)."""
    root = tmp_path_factory.mktemp("playground")
    runs = train_sft_and_dpo(root, tiny_model, sft_steps=3)
    (runs / "broken").mkdir()
    (runs / "broken" / "manifest.json").write_text("{not json")
    return runs


def test_model_list_is_the_base_then_runs_with_lineage_metrics_and_broken_ones_explained(runs_dir, tiny_model):
    choices = {Path(c.key).name: c for c in pg.model_choices(runs_dir, tiny_model)}
    assert pg.model_choices(runs_dir, tiny_model)[0].key == pg.BASE_PREFIX + tiny_model
    assert choices["dpo"].lineage == [Path(tiny_model).name, "sft", "dpo"] and choices["dpo"].usable
    assert choices["sft"].metrics["global_step"] == 3 and "eval_loss" in choices["sft"].metrics
    assert not choices["broken"].usable and "manifest.json: unreadable" in choices["broken"].error
    assert "fix:" in choices["broken"].error
    assert [c.stage for c in pg.model_choices(runs_dir / "missing", tiny_model)] == ["base"]


def test_a_base_model_path_that_holds_no_model_is_a_broken_choice_before_any_chat(runs_dir, tiny_model, tmp_path):
    """A base model dir typed wrong, or moved after training a LoRA run on it: the model list says so, in one line
    naming the path, for the base and for the runs whose adapters need it (not a failure mid-chat)."""
    missing = tmp_path / "no-such-model"
    base = pg.model_choices(runs_dir, str(missing))[0]
    assert not base.usable and base.label == "base · no-such-model (broken)"
    assert base.error == f"model {missing}: not found — fix: pass `embedded`, a model dir, a .gguf file or a hub id"
    moved = tmp_path / "runs"
    shutil.copytree(runs_dir / "sft", moved / "sft")  # its lineage is relative: the copy stands alone
    manifest = json.loads((moved / "sft" / "manifest.json").read_text())
    manifest["model"]["name"] = str(tmp_path / "moved-base")
    (moved / "sft" / "manifest.json").write_text(json.dumps(manifest))
    run = pg.model_choices(moved, tiny_model)[1]
    assert not run.usable and run.label == "sft (broken)"
    assert f"base model {tmp_path / 'moved-base'} of {moved / 'sft'}: not found" in run.error
    assert "ALIGNKIT_MODEL_PATH=NEW_PATH" in run.error  # how to say where it is now
    assert pg.model_choices(runs_dir, tiny_model)[0].usable and pg.model_choices(runs_dir, "org/hub-id")[0].usable


def test_adapters_switched_on_one_base_answer_like_each_run_loaded_alone(runs_dir, tiny_model):
    pool = pg.ModelPool()
    messages = [{"role": "user", "content": "What is 3 plus 3?"}]
    for key in (str(runs_dir / "sft"), str(runs_dir / "dpo"), pg.BASE_PREFIX + tiny_model, str(runs_dir / "sft")):
        streamed = list(pg.stream_reply(pool, key, messages, SAMPLING))
        if key.startswith(pg.BASE_PREFIX):
            cfg = models.ModelConfig(name=tiny_model)
            model, tokenizer = models.load_base(cfg, hardware.pick_precision()), models.load_tokenizer(cfg)
        else:
            model, tokenizer = lineage.load_run_model(key)
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        torch.manual_seed(SAMPLING.seed)
        out = model.generate(**inputs, max_new_tokens=8, do_sample=True, top_p=1.0, pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert len(streamed) > 1 and "".join(streamed).strip() == expected.strip(), key
    assert list(pool.bases) == [tiny_model] and not pool.whole  # one base in memory, adapters switched inside it
    assert len(pool.bases[tiny_model][0].peft_config) == 2


def test_stop_ends_generation_early(runs_dir):
    pool = pg.ModelPool()
    stop = pg.threading.Event()
    messages = [{"role": "user", "content": "Hello"}]
    chunks = []
    for chunk in pg.stream_reply(pool, str(runs_dir / "sft"), messages, Sampling(max_new_tokens=200), stop):
        chunks.append(chunk)
        stop.set()
    assert 1 <= len(chunks) <= 3


def test_few_shot_baseline_puts_sft_examples_before_the_conversation(runs_dir):
    examples = pg.sft_examples(runs_dir / "dpo")  # the DPO run's SFT ancestor's data
    assert examples == [row["messages"] for row in CHAT_ROWS]
    messages = pg.conversation([], "What is 5 plus 5?", system="Be brief.")
    shown = pg.few_shot(examples, messages, k=3, seed=1)
    assert shown[0] == {"role": "system", "content": "Be brief."} and shown[-1] == messages[-1]
    assert [m["role"] for m in shown[1:-1]] == ["user", "assistant"] * 3
    with pytest.raises(AlignkitError, match="does not exist"):
        pg.sft_examples(runs_dir / "missing")
    with pytest.raises(AlignkitError, match="does not exist"):
        pg.ModelPool().get(str(runs_dir / "missing"))


def test_feedback_records_use_the_collection_round_schema(tiny_model):
    prompt = [{"role": "user", "content": "Hi?"}]
    left, right = (pg.Answer(text, pg.BASE_PREFIX + tiny_model, SAMPLING) for text in ("Left answer.", "Right."))
    for choice, winner in (("first", "Left answer."), ("second", "Right.")):
        record = pg.preference_record(prompt, left, right, choice, user_id="00000000-0000-0000-0000-000000000001")
        value = next(iter(record.responses)).value
        assert record.fields[f"candidate_{value}"] == winner
        assert record.metadata["round"] == "playground" and json.loads(record.metadata["prompt_messages"]) == prompt
    thumbs = pg.reply_record(prompt, left, False, user_id="00000000-0000-0000-0000-000000000001")
    assert thumbs.fields == {"prompt": "Hi?", "response": "Left answer."}
    assert next(iter(thumbs.responses)).value == "reject"


# -- the pages under AppTest ----------------------------------------------------------------------------------------


@pytest.fixture
def app(runs_dir: Path, tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("ALIGNKIT_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("ALIGNKIT_BASE_MODEL", tiny_model)
    monkeypatch.setenv("ARGILLA_API_URL", "http://127.0.0.1:9")
    return AppTest.from_file(str(APPS / "playground.py"), default_timeout=120)


def test_picker_offers_base_and_runs_and_a_broken_run_is_an_error_not_a_traceback(app, runs_dir, tiny_model):
    app.run()
    assert not app.exception
    picker = app.multiselect[0]
    assert picker.options[0] == f"base · {Path(tiny_model).name}" and len(picker.options) == 4
    assert "dpo · dpo" in picker.options and "broken (broken)" in picker.options
    assert picker.proto.select_all == 0  # "Select all" would pick the first three options, whatever they are
    picker.set_value([str(runs_dir / "broken")]).run()
    assert not app.exception
    assert "manifest.json: unreadable" in app.error[0].value


CHOICES = ("first", "tie", "second")


def test_two_models_answer_each_turn_and_keep_their_own_history(app, runs_dir, tiny_model):
    app.run()
    app.multiselect[0].set_value([pg.BASE_PREFIX + tiny_model, str(runs_dir / "sft")]).run()
    app.sidebar.number_input[0].set_value(6).run()  # max new tokens
    app.chat_input[0].set_value("What is 2 plus 2?").run()
    assert not app.exception
    app.chat_input[0].set_value("And 3 plus 3?").run()
    assert not app.exception
    turns = app.session_state["turns"]
    assert [t["user"] for t in turns] == ["What is 2 plus 2?", "And 3 plus 3?"]
    for key in (pg.BASE_PREFIX + tiny_model, str(runs_dir / "sft")):
        second = turns[1]["prompt"][key]
        assert second[1] == {"role": "assistant", "content": turns[0]["answers"][key]}  # its own earlier reply
        assert second[-1] == {"role": "user", "content": "And 3 plus 3?"}
    assert any(b.label == "⬅ Left is better" and b.disabled for b in app.button)  # not signed in to Argilla
    # a pair is offered for replies to one conversation only: turn 2 follows each model's own turn-1 reply
    assert len({a for a in turns[0]["answers"].values()}) == 2
    assert {b.key for b in app.button if (b.key or "").startswith("choice-")} == {f"choice-0-{c}" for c in CHOICES}
    assert any("different conversations" in c.value for c in app.caption)
    # a model added mid-chat starts from the turns it answered: none, not earlier turns with empty replies
    app.multiselect[0].set_value([pg.BASE_PREFIX + tiny_model, str(runs_dir / "sft"), str(runs_dir / "dpo")]).run()
    app.chat_input[0].set_value("And 4 plus 4?").run()
    assert not app.exception
    assert app.session_state["turns"][2]["prompt"][str(runs_dir / "dpo")] == [
        {"role": "user", "content": "And 4 plus 4?"}
    ]
    next(b for b in app.button if b.label == "Clear chat").click().run()
    assert app.session_state["turns"] == []


def test_a_runs_directory_that_does_not_exist_is_said_not_shown_as_no_runs(app, runs_dir, tmp_path):
    app.run()
    assert not app.warning
    app.sidebar.text_input[0].set_value(str(tmp_path / "no-such-runs")).run()
    assert not app.exception
    assert "no-such-runs` not found" in app.warning[0].value
    assert len(app.multiselect[0].options) == 1  # the base only


def test_a_picked_run_that_is_deleted_is_said_gone_not_silently_unpicked(app, runs_dir, tmp_path):
    copy = tmp_path / "runs"
    shutil.copytree(runs_dir, copy)
    app.run()
    app.sidebar.text_input[0].set_value(str(copy)).run()
    app.multiselect[0].set_value([str(copy / "sft"), str(copy / "dpo")]).run()
    shutil.rmtree(copy / "dpo")
    app.run()
    assert not app.exception
    assert [w.value for w in app.warning] == [
        f"`{copy / 'dpo'}` is gone (moved or deleted since you picked it): it is no longer in the chat"
    ]
    assert app.multiselect[0].value == [str(copy / "sft")]


def test_a_base_model_field_changed_moves_the_picked_base_to_it_not_said_gone(app, runs_dir, tiny_model, tmp_path):
    """The researcher picks the base, then types another base model into the sidebar: the base column now answers
    with the new one (its own history starts there), and the page says the base changed, not that it was deleted.
    The same runs directory typed relative keeps the picks; a run left outside a runs directory typed since is said
    to be outside it."""
    other = shutil.copytree(tiny_model, tmp_path / "other-base")
    app.run()
    app.multiselect[0].set_value([pg.BASE_PREFIX + tiny_model, str(runs_dir / "sft")]).run()
    app.sidebar.text_input[1].set_value(str(other)).run()  # base model
    assert not app.exception and not app.warning
    assert [i.value for i in app.info] == [
        f"Base model changed from `{tiny_model}` to `{other}`: the base column answers with it from the next turn, "
        "without the earlier turns"
    ]
    assert app.multiselect[0].value == [pg.BASE_PREFIX + str(other), str(runs_dir / "sft")]  # in the same column
    app.sidebar.number_input[0].set_value(4).run()  # max new tokens
    app.chat_input[0].set_value("What is 2 plus 2?").run()
    assert not app.exception and set(app.session_state["turns"][0]["answers"]) == set(app.multiselect[0].value)
    app.sidebar.text_input[0].set_value(os.path.relpath(runs_dir)).run()  # the same runs, typed relative
    assert not app.warning and app.multiselect[0].value == [pg.BASE_PREFIX + str(other), str(runs_dir / "sft")]
    elsewhere = tmp_path / "other-runs"
    elsewhere.mkdir()
    app.sidebar.text_input[0].set_value(str(elsewhere)).run()  # runs directory
    assert [w.value for w in app.warning] == [
        f"`{runs_dir / 'sft'}` is not under the runs directory `{elsewhere}`: it is no longer in the chat"
    ]


def test_a_model_that_fails_to_load_keeps_its_error_line_and_offers_no_empty_reply_to_rate(app, runs_dir, tmp_path):
    """A base model dir that cannot be loaded: after the turn its column still says why, in one line, instead of an
    "(empty reply)" with thumbs and a "Left is better" that would store a preference for a reply never given; the
    run beside it answers, and the next turn does not feed the failed one back as history."""
    broken = tmp_path / "half-copied-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')  # no weights, no tokenizer
    app.run()
    app.sidebar.text_input[1].set_value(str(broken)).run()  # base model
    app.multiselect[0].set_value([pg.BASE_PREFIX + str(broken), str(runs_dir / "sft")]).run()
    app.sidebar.number_input[0].set_value(4).run()  # max new tokens
    app.chat_input[0].set_value("What is 2 plus 2?").run()
    assert not app.exception
    assert [e.value for e in app.error] == [
        f"model {broken}: cannot load tokenizer (Couldn't instantiate the backend tokenizer from one of: ) — fix: "
        "pass `embedded`, a local model dir with tokenizer files, a .gguf file, or a hub id while online"
    ]
    assert not [m for m in app.markdown if "empty reply" in m.value]
    assert not [b for b in app.button if "better" in b.label] and len(app.get("feedback")) == 1
    turn = app.session_state["turns"][0]
    assert list(turn["answers"]) == [str(runs_dir / "sft")] and list(turn["errors"]) == [pg.BASE_PREFIX + str(broken)]
    app.chat_input[0].set_value("And 3 plus 3?").run()
    assert app.session_state["turns"][1]["prompt"][pg.BASE_PREFIX + str(broken)] == [
        {"role": "user", "content": "And 3 plus 3?"}
    ]


def test_few_shot_column_answers_from_the_base_with_sft_examples(app, runs_dir, tiny_model):
    app.run()
    app.multiselect[0].set_value([str(runs_dir / "dpo")]).run()
    app.sidebar.number_input[0].set_value(4).run()
    app.sidebar.number_input[2].set_value(2).run()  # few-shot examples
    app.chat_input[0].set_value("What is 7 plus 7?").run()
    assert not app.exception
    turn = app.session_state["turns"][0]
    assert set(turn["answers"]) == {str(runs_dir / "dpo"), "icl"}
    assert turn["models"]["icl"] == pg.BASE_PREFIX + tiny_model and turn["few_shot"]["icl"] == 2
    assert any("2-shot" in m.value for m in app.markdown)


def test_runs_page_shows_lineage_curves_and_a_config_diff(runs_dir, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_RUNS_DIR", str(runs_dir))
    page = AppTest.from_file(str(APPS / "runs.py"), default_timeout=60).run()
    assert not page.exception
    rows = dashboard.run_rows(runs_dir)
    assert {r["run"]: r["status"] for r in rows} == {"sft": "complete", "dpo": "complete", "broken": "broken"}
    dot = dashboard.lineage_dot(rows)
    assert '"sft" -> "dpo"' in dot and '"base:' in dot
    found = dashboard.curves([runs_dir / "sft", runs_dir / "dpo"])
    assert {"loss", "validation loss", "reward accuracy"} <= set(found) and len(found["loss"]["sft"]) == 3
    diff = {row["key"]: row for row in dashboard.config_diff(runs_dir / "sft", runs_dir / "dpo")}
    assert diff["trainer.max_steps"]["sft"] == 3 and diff["trainer.max_steps"]["dpo"] == 2
    assert page.get("graphviz_chart")[0].proto.spec == dot
    charts = [e for e in page.main if e.type == "vega_lite_chart"]
    assert len(charts) == len(found) and len(page.dataframe) == 2  # runs table and config diff (no eval.json yet)


def test_the_runs_listing_names_the_data_each_run_trained_on(runs_dir):
    """`alignkit runs` showed a second round's DPO run as `embedded → sft → dpo`, like the first: which rounds' pairs
    it trained on was only in its manifest."""
    listing = run_cli("runs", "--dir", str(runs_dir), "--json")
    assert listing.returncode == 0, listing.stderr
    data = {row["run"]: row.get("data") for row in json.loads(listing.stdout)}
    assert (data["sft"], data["dpo"]) == ("chat.jsonl", "pairs.jsonl")
    table = run_cli("runs", "--dir", str(runs_dir), env={"COLUMNS": "200"})
    (dpo_line,) = [line for line in table.stdout.splitlines() if line.startswith("│ dpo ")]
    assert "pairs.jsonl" in dpo_line and "chat.jsonl" not in dpo_line


def test_runs_in_a_group_folder_are_listed_by_the_cli_the_runs_page_and_the_playground(
    runs_dir, tiny_model, monkeypatch
):
    # `alignkit demo` writes its runs as one group, runs/demo/<stage>, inside the runs dir `alignkit serve` shows
    monkeypatch.delenv("ALIGNKIT_RUNS_DIR", raising=False)
    assert Path(serve.workdir_env()["ALIGNKIT_RUNS_DIR"]) == Path(demo.DemoConfig().out).parent.resolve()
    root, group = runs_dir.parent, runs_dir.name  # here the group is runs_dir inside its parent
    rows = {r["run"]: r for r in dashboard.run_rows(root)}
    assert {name: r["status"] for name, r in rows.items()} == {
        f"{group}/sft": "complete",
        f"{group}/dpo": "complete",
        f"{group}/broken": "broken",
    }
    assert rows[f"{group}/dpo"]["parent"] == f"{group}/sft"
    assert f'"{group}/sft" -> "{group}/dpo"' in dashboard.lineage_dot(list(rows.values()))
    labels = {c.label for c in pg.model_choices(root, tiny_model)}
    assert {f"sft · {group}/sft", f"dpo · {group}/dpo", f"{group}/broken (broken)"} <= labels
    listing = subprocess.run(
        [sys.executable, "-m", "alignkit.cli", "runs", "--dir", str(root), "--json"], capture_output=True, text=True
    )
    assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr
    assert {row["run"] for row in json.loads(listing.stdout)} == set(rows)


@pytest.mark.parametrize(
    ("messages", "options", "expected"),
    [
        ([], {}, "field `messages`: expected a non-empty list of messages"),
        ({"role": "user", "content": "hi"}, {}, "`messages` must be a str or a list of dicts, got {'role': 'user'"),
        ([{"role": "bot", "content": "hi"}], {}, "field `messages[0].role`: unknown role 'bot'"),
        (
            [{"role": "user", "content": 3}],
            {},
            "field `messages[0].content`: expected a string or a list of text parts, got int",
        ),
        ("hi", {"max_new_tokens": 0}, "`max_new_tokens` must be at least 1, got 0"),
        ("hi", {"top_p": 0.0}, "`top_p` must be in (0, 1], got 0.0"),
        ("hi", {"temperature": -1.0}, "`temperature` must be at least 0 (0: greedy), got -1.0"),
    ],
    ids=["empty", "one-dict", "unknown-role", "content-not-text", "no-new-tokens", "top-p-zero", "temperature-below"],
)
def test_chat_refuses_malformed_messages_and_sampling_in_one_error(messages, options, expected, tiny_model):
    import alignkit

    with pytest.raises(AlignkitError) as refused:
        alignkit.chat(messages, model=tiny_model, **options)
    assert expected in refused.value.message


def test_chat_answers_with_a_run_trained_again_into_the_same_dir(tmp_path):
    """A notebook trains `out=runs/sft`, chats, trains again with `overwrite=True`, chats: the second reply is the
    new run's (as a fresh process gives it), not the first run's kept in the pool."""
    import alignkit
    from tests.conftest import build_tiny_model, write_jsonl

    base = str(build_tiny_model(tmp_path / "base", initializer_range=0.5))
    write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    trainer = {"per_device_train_batch_size": 4, "logging_steps": 1, "eval_steps": 2, "learning_rate": 5e-2}
    run_dir, messages = tmp_path / "runs" / "sft", [{"role": "user", "content": "What is 3 plus 3?"}]

    def train(steps: int) -> None:
        alignkit.sft(
            data={"paths": [str(tmp_path / "chat.jsonl")]},
            model={"name": base},
            out=str(run_dir),
            trainer={"max_steps": steps, **trainer},
            overwrite=True,
        )

    def fresh_reply() -> str:
        return pg.reply(pg.ModelPool(engine="transformers"), str(run_dir), messages, greedy)

    greedy = Sampling(max_new_tokens=12)
    pool = pg.ModelPool(engine="transformers")
    train(1)
    first = pg.reply(pool, str(run_dir), messages, greedy)
    train(12)
    again = pg.reply(pool, str(run_dir), messages, greedy)
    assert again == fresh_reply() != first
    assert len(pool.bases[base][0].peft_config) == 1  # the first training's adapter was dropped


def test_playground_feedback_names_a_run_by_its_id_so_its_pairs_keep_their_policy_once_runs_moved(runs_dir, tmp_path):
    """Playground feedback named a run by its path alone (no `run_id`, unlike `generate`): pulled, the same run's
    pairs from before and after runs/ moved were two policies."""
    import uuid

    from alignkit import runs
    from alignkit.feedback import pull

    prompt = [{"role": "user", "content": "Name a compost green."}]
    moved = shutil.copytree(runs_dir / "dpo", tmp_path / "runs-moved" / "dpo")
    base = pg.Answer("Hm", pg.BASE_PREFIX + "x", SAMPLING)
    records = [
        pg.preference_record(prompt, pg.Answer("Coffee.", str(run), SAMPLING), base, "first", uuid.uuid4())
        for run in (runs_dir / "dpo", moved)
    ]
    named = [pull.candidate_policies(record.metadata) for record in records]
    run_id = runs.Run(moved).manifest["id"]
    assert [[policy.get("run_id") for policy in policies] for policies in named] == [[run_id, None]] * 2
    assert named[0][1] == {"model": "x"}  # the base, by name
