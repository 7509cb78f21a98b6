"""Preference data, reward model, DPO/KTO/SimPO/ORPO on a tiny random model: formats, errors, run directories,
the reference being the SFT policy, and reloading a trained policy."""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import alignkit
from alignkit import AlignkitError, data, evaluate, generate, hardware, lineage, models, runs
from alignkit.config import DPOStageConfig, ModelConfig, load_config
from alignkit.data.preferences import load_preferences, load_unpaired
from alignkit.stages import reward
from tests.conftest import run_capturing_trainer, write_jsonl

PREFS = Path(__file__).resolve().parent.parent / "data" / "prefs"
N_PAIRS = 16


def question(i: int) -> str:
    return f"What is {i} plus {i}?"


CANONICAL = [
    {
        "prompt": [{"role": "user", "content": question(i)}],
        "chosen": [{"role": "assistant", "content": f"It is {2 * i}."}],
        "rejected": [{"role": "assistant", "content": f"It is {2 * i + 1}, I think."}],
    }
    for i in range(N_PAIRS)
]


def text(turns: list[dict[str, str]]) -> str:
    return turns[0]["content"]


FORMATS: dict[str, list[dict[str, Any]]] = {
    "conversational": CANONICAL,
    "standard": [
        {"prompt": text(p["prompt"]), "chosen": text(p["chosen"]), "rejected": text(p["rejected"])} for p in CANONICAL
    ],
    "implicit_prompt": [
        {"chosen": p["prompt"] + p["chosen"], "rejected": p["prompt"] + p["rejected"]} for p in CANONICAL
    ],
    "question": [
        {"question": text(p["prompt"]), "chosen": text(p["chosen"]), "rejected": text(p["rejected"])} for p in CANONICAL
    ],
    "instruction": [
        {"instruction": text(p["prompt"]), "input": "", "chosen": p["chosen"], "rejected": text(p["rejected"])}
        for p in CANONICAL
    ],
}


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    if path.suffix == ".jsonl":
        return write_jsonl(path, rows)
    if path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        cells = [{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows]
        pd.DataFrame(cells).to_csv(path, index=False)
    elif path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize(
    ("fmt", "suffix"),
    [
        ("conversational", ".jsonl"),
        ("conversational", ".csv"),
        ("standard", ".jsonl"),
        ("standard", ".parquet"),
        ("implicit_prompt", ".json"),
        ("question", ".csv"),
        ("instruction", ".jsonl"),
    ],
)
def test_each_preference_format_loads_to_the_same_canonical_rows(fmt, suffix, tmp_path):
    path = write_rows(tmp_path / f"{fmt}{suffix}", FORMATS[fmt])
    assert load_preferences([str(path)]) == CANONICAL


def test_implicit_prompt_splits_multi_turn_conversations_at_the_shared_turns(tmp_path):
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is 2 plus 2?"},
    ]
    row = {
        "chosen": [*history, {"role": "assistant", "content": "4."}],
        "rejected": [*history, {"role": "assistant", "content": "5."}],
    }
    [pair] = load_preferences([str(write_jsonl(tmp_path / "p.jsonl", [row]))])
    assert pair["prompt"] == history
    assert pair["chosen"] == [{"role": "assistant", "content": "4."}]


def test_annotations_are_kept_and_csv_cells_parsed(tmp_path):
    rows = [
        {**FORMATS["standard"][0], "margin": 1.5, "annotators": ["ann", "bob"], "agreement": 1.0},
        {**FORMATS["standard"][1], "margin": "0.25", "annotators": "ann, bob", "agreement": "0.5"},
        FORMATS["standard"][2],
    ]
    loaded = load_preferences([str(write_rows(tmp_path / "p.csv", rows))])
    assert loaded[0] == CANONICAL[0] | {"margin": 1.5, "annotators": ["ann", "bob"], "agreement": 1.0}
    assert loaded[1] == CANONICAL[1] | {"margin": 0.25, "annotators": ["ann", "bob"], "agreement": 0.5}
    assert loaded[2] == CANONICAL[2]


def test_unpaired_rows_load_and_pairs_split_in_two_for_kto(tmp_path):
    unpaired = [
        {"prompt": question(1), "completion": "It is 2.", "label": True},
        {"prompt": [{"role": "user", "content": question(2)}], "completion": "It is 5.", "label": "false"},
    ]
    rows = load_unpaired([str(write_rows(tmp_path / "u.jsonl", unpaired))])
    assert rows == [
        {
            "prompt": [{"role": "user", "content": question(1)}],
            "completion": [{"role": "assistant", "content": "It is 2."}],
            "label": True,
        },
        {
            "prompt": [{"role": "user", "content": question(2)}],
            "completion": [{"role": "assistant", "content": "It is 5."}],
            "label": False,
        },
    ]
    from_pairs = load_unpaired([str(write_rows(tmp_path / "p.jsonl", FORMATS["standard"][:2]))])
    assert [r["label"] for r in from_pairs] == [True, False, True, False]
    assert from_pairs[1]["completion"] == CANONICAL[0]["rejected"]


BAD_CASES = [
    ("missing_rejected.jsonl", load_preferences, ["missing_rejected.jsonl:line 2", "field `rejected`: missing"]),
    ("misnamed_rejected.jsonl", load_preferences, ["line 1", "`rejected`: missing", "did you mean `rejected`"]),
    (
        "identical.jsonl",
        load_preferences,
        ["identical.jsonl:line 1", "field `rejected`", "chosen and rejected are identical"],
    ),
    ("empty_chosen.jsonl", load_preferences, ["empty_chosen.jsonl:line 3", "field `chosen`: is empty"]),
    ("empty.jsonl", load_preferences, ["empty.jsonl", "empty"]),
    ("no_shared_prompt.jsonl", load_preferences, ["line 1", "field `chosen`", "shares no prompt turns"]),
    ("reply_not_assistant.jsonl", load_preferences, ["line 1", "chosen[0].role", "assistant turn"]),
    ("prompt_ends_with_assistant.jsonl", load_preferences, ["line 1", "prompt[1].role", "end with a user turn"]),
    ("margin_not_number.csv", load_preferences, ["margin_not_number.csv:line 3", "field `margin`", "'high'"]),
    ("bad_label.jsonl", load_unpaired, ["bad_label.jsonl:line 2", "field `label`", "expected true or false"]),
    ("empty.jsonl", load_unpaired, ["empty.jsonl", "empty"]),
]


@pytest.mark.parametrize(("name", "load", "expected"), BAD_CASES, ids=[f"{c[1].__name__}-{c[0]}" for c in BAD_CASES])
def test_bad_preference_files_name_the_file_line_and_field(name, load, expected):
    with pytest.raises(AlignkitError) as error:
        load([str(PREFS / name)])
    message = str(error.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ---- training stages -------------------------------------------------------------------------------------------

TINY = {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 4, "logging_steps": 1, "eval_steps": 2}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prefs")
    chats = [{"messages": p["prompt"] + p["chosen"]} for p in CANONICAL]
    write_jsonl(root / "chat.jsonl", chats)
    write_jsonl(root / "pairs.jsonl", [p | {"margin": float(i % 3)} for i, p in enumerate(CANONICAL)])
    unpaired = [
        {"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
        for p in CANONICAL
        for side in ("chosen", "rejected")
    ]
    write_jsonl(root / "unpaired.jsonl", unpaired)
    return root


@pytest.fixture(scope="module")
def sft_run(tiny_model: str, data_dir: Path) -> runs.Run:
    return alignkit.sft(
        data={"paths": [str(data_dir / "chat.jsonl")]},
        model={"name": tiny_model},
        out=str(data_dir / "sft"),
        trainer={"max_steps": 3, "learning_rate": 1e-2, **TINY},
    )


def assert_complete_run(run: runs.Run, stages: list[str]) -> None:
    assert run.complete
    manifest = run.manifest
    assert [step["stage"] for step in manifest["lineage"]] == stages
    assert manifest["precision"] == "float32" and manifest["device"] == "cpu"
    assert {"torch", "transformers", "trl", "peft"} <= set(manifest["versions"]) and manifest["data"]
    assert (run.path / "adapter" / "adapter_model.safetensors").is_file()
    assert not [p for p in (run.path / "adapter").iterdir() if p.is_dir()], "only the trained adapter is saved"
    assert (run.path / "config.yaml").is_file() and (run.path / "metrics.jsonl").read_text().strip()
    metrics = run.metrics
    assert metrics["global_step"] > 0 and metrics["train_runtime"] > 0 and math.isfinite(metrics["train_loss"])


@pytest.fixture(scope="module")
def reward_run(sft_run: runs.Run, data_dir: Path) -> runs.Run:
    return alignkit.reward(
        data={"paths": [str(data_dir / "pairs.jsonl")], "validation_split": 0.25},
        from_run=str(sft_run.path),
        out=str(data_dir / "reward"),
        trainer={"max_steps": 4, "learning_rate": 1e-2, **TINY},
        calibration_bins=4,
    )


def test_reward_model_on_the_sft_base_reports_accuracy_and_calibration(reward_run, data_dir, capfd):
    run = reward_run
    assert_complete_run(run, ["sft", "reward"])
    assert run.manifest["head"] == "sequence-classification"
    with safe_open(run.path / "adapter" / "adapter_model.safetensors", "pt") as saved:
        names = saved.keys()
    assert any(name.endswith("score.weight") for name in names), "the new head is saved with the adapter"
    metrics = run.metrics
    assert metrics["margin_used"] is True and metrics["scored_split"] == "validation"
    assert 0.0 <= metrics["pairwise_accuracy"] <= 1.0 and metrics["scored_pairs"] == metrics["eval_rows"] == 4
    _, held_out = data.split(load_preferences([str(data_dir / "pairs.jsonl")]), 0.25, seed=42)  # the stage's split
    assert metrics["eval_prompts"] == len({json.dumps(row["prompt"]) for row in held_out}) > 0
    low, high = metrics["accuracy_interval_95"]
    assert low <= metrics["pairwise_accuracy"] <= high
    table = metrics["calibration"]
    assert len(table) == 4 and sum(b["count"] for b in table) == 4
    assert table[0]["lower"] == 0.5 and table[-1]["upper"] == 1.0
    for row in table:
        if row["count"]:
            assert row["lower"] <= row["mean_predicted"] <= row["upper"] and 0 <= row["observed_accuracy"] <= 1
    assert 0 <= metrics["expected_calibration_error"] <= 0.5
    # TRL's own held-out figures of the kept checkpoint agree with the scorer's (same tokenization, same head); the
    # stage does not ask TRL to score the validation pairs a last time
    assert "eval_margin" not in metrics and metrics["best_checkpoint"]
    step = int(metrics["best_checkpoint"].rsplit("-", 1)[1])
    logged = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    trl_eval = next(row for row in logged if row.get("step") == step and "eval_margin" in row)
    assert metrics["mean_margin"] == pytest.approx(trl_eval["eval_margin"], abs=1e-4)
    assert metrics["eval_loss"] == pytest.approx(trl_eval["eval_loss"], abs=1e-4), "the loss TRL trains, margins in"

    scorer = lineage.load_scorer(run.path)
    _, held_out = data.split(load_preferences([str(data_dir / "pairs.jsonl")]), 0.25, seed=42)
    reloaded = reward.pairwise_metrics(scorer, held_out, bins=4)
    assert reloaded["mean_margin"] == pytest.approx(metrics["mean_margin"], abs=1e-5), "a reload scores as trained"
    rewards = scorer.score([p["prompt"] for p in held_out], [text(p["chosen"]) for p in held_out])
    assert len(rewards) == len(held_out) and all(math.isfinite(r) for r in rewards)
    # a conversation scores the same alone, repeated, or batched (padded) with longer ones
    texts = [text(p[side]) for p in held_out for side in ("chosen", "rejected")]
    prompts = [p["prompt"] for p in held_out for _ in range(2)]
    alone = [scorer.score([prompt], [answer])[0] for prompt, answer in zip(prompts, texts, strict=True)]
    assert len(set(alone)) > 1, "distinct answers score differently"
    assert scorer.score(prompts[::-1] + prompts, texts[::-1] + texts) == pytest.approx(alone[::-1] + alone, abs=1e-5)
    capfd.readouterr()
    scorer.progress = "scoring answers"  # as the reward stage scores its validation pairs: a bar over the distinct ones
    scorer.score(prompts + prompts, texts + texts)
    assert re.search(rf"scoring answers: 100%.* {len(texts)}/{len(texts)} ", capfd.readouterr().err)


def test_reward_model_without_parent_or_margins(tiny_model, data_dir, tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", CANONICAL)
    run = alignkit.reward(
        data={"paths": [str(path)], "validation_split": 0.0},
        model={"name": tiny_model},
        out=str(tmp_path / "reward"),
        trainer={"max_steps": 2, **TINY},
    )
    assert_complete_run(run, ["reward"])
    assert run.metrics["margin_used"] is False and run.metrics["scored_split"] == "train"


def sequence_logps(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed log-probabilities of the completion tokens of a DPO batch (chosen rows, then rejected rows)."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    token_logps = logits[:, :-1].log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (token_logps * batch["completion_mask"][:, 1:]).sum(-1)


@pytest.fixture(scope="module", params=["continue-sft-adapter", "new-adapter-on-merged-sft"])
def dpo_result(request, sft_run, data_dir) -> tuple[runs.Run, Any]:
    peft = {} if request.param == "continue-sft-adapter" else {"method": "lora", "r": 4, "lora_alpha": 8}
    return run_capturing_trainer(
        alignkit.dpo,
        data={"paths": [str(data_dir / "pairs.jsonl")], "validation_split": 0.25},
        from_run=str(sft_run.path),
        out=str(data_dir / f"dpo-{request.param}"),
        peft=peft,
        trainer={"max_steps": 4, "learning_rate": 5e-3, **TINY},
    )


def test_dpo_reference_log_probs_are_the_sft_policy(dpo_result, sft_run, tiny_model):
    run, trainer = dpo_result
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    reference = torch.cat(trainer.compute_ref_log_probs(trainer.model, batch))
    sft_model, _ = lineage.load_run_model(sft_run.path)
    torch.testing.assert_close(reference, sequence_logps(sft_model, batch), atol=1e-4, rtol=0)
    base = models.load_base(ModelConfig(name=tiny_model), hardware.pick_precision())
    assert (sequence_logps(base, batch) - reference).abs().max() > 1e-3, "the reference is not the bare base"
    trained = sequence_logps(trainer.model, batch)
    assert (trained - reference).abs().max() > 1e-3, "the policy moved away from the reference"
    assert run.metrics["eval_loss_start"] == pytest.approx(math.log(2), abs=1e-4), "policy == reference at step 0"


def test_dpo_run_reloads_as_the_trained_policy(dpo_result, sft_run):
    run, trainer = dpo_result
    assert_complete_run(run, ["sft", "dpo"])
    continues = not load_config(DPOStageConfig, run.path / "config.yaml").peft
    recorded = run.manifest["adapter_continues"]
    assert (run.resolve(recorded) if recorded else None) == (sft_run.path.resolve() if continues else None)
    assert not (recorded and Path(recorded).is_absolute())  # relative to the run: runs/ can move
    metrics = run.metrics
    for key in ("final_train_loss", "train_rewards/accuracies", "train_rewards/margins", "eval_rewards/accuracies"):
        assert key in metrics, key
    assert metrics["train_tokens"] > 0 and metrics["method"] == "dpo"
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    reloaded, _ = lineage.load_run_model(run.path)
    torch.testing.assert_close(sequence_logps(reloaded, batch), sequence_logps(trainer.model, batch), atol=1e-4, rtol=0)
    sft_model, _ = lineage.load_run_model(sft_run.path)
    assert (sequence_logps(reloaded, batch) - sequence_logps(sft_model, batch)).abs().max() > 1e-3


@pytest.mark.parametrize(
    "trainer_options",
    [
        {"loss_type": "ipo"},
        {"loss_type": "robust", "label_smoothing": 0.1},
        {"loss_type": "sigmoid", "precompute_ref_log_probs": True},
    ],
    ids=["ipo", "robust", "sigmoid-precomputed-reference"],
)
def test_dpo_loss_variants_train(trainer_options, sft_run, data_dir, tmp_path):
    run = alignkit.dpo(
        data={"paths": [str(data_dir / "pairs.jsonl")], "validation_split": 0.25},
        from_run=str(sft_run.path),
        out=str(tmp_path / "dpo"),
        trainer={"max_steps": 2, **TINY, **trainer_options},
    )
    assert_complete_run(run, ["sft", "dpo"])
    loss_type = trainer_options["loss_type"]
    start = run.metrics["eval_loss_start"]
    assert start == pytest.approx(
        {"ipo": (1 / (2 * 0.1)) ** 2, "robust": math.log(2), "sigmoid": math.log(2)}[loss_type]
    )


def test_reward_and_dpo_manifests_name_the_rounds_and_policies_of_their_pulled_pairs(sft_run, reward_run, tmp_path):
    """Trained on two rounds' pulled pairs, a run recorded only the files' sha256: which round and which policy's
    candidates it learnt from was in no manifest, and `feedback pull` dropped the policy from the pairs."""

    def pulled(rows: list[dict], dataset: str, round_number: int, policy: str) -> list[dict]:
        origin = {"dataset": dataset, "round": round_number, "candidates_from": [policy]}
        return [row | origin | {"record_id": f"r{round_number}-{i}"} for i, row in enumerate(rows)]

    write_jsonl(tmp_path / "pairs-1.jsonl", pulled(CANONICAL, "round-1", 1, "runs/sft"))
    write_jsonl(tmp_path / "pairs-2.jsonl", pulled(CANONICAL[:3], "round-2", 2, "runs/dpo"))
    data = {"paths": [str(tmp_path / "pairs-1.jsonl"), str(tmp_path / "pairs-2.jsonl")]}
    expected = [
        {"dataset": "round-1", "round": 1, "candidates_from": [{"run": "../runs/sft"}], "rows": N_PAIRS},
        {"dataset": "round-2", "round": 2, "candidates_from": [{"run": "../runs/dpo"}], "rows": 3},
    ]
    for stage, method, per_pair in ((alignkit.reward, {}, 1), (alignkit.dpo, {"method": "kto"}, 2)):
        run = stage(
            data=data, from_run=str(sft_run.path), out=str(tmp_path / stage.__name__), trainer={"max_steps": 1, **TINY},
            **method,
        )  # fmt: skip
        assert run.manifest["pairs_origin"] == [entry | {"rows": entry["rows"] * per_pair} for entry in expected]
    assert "pairs_origin" not in reward_run.manifest  # pairs that were not pulled from Argilla


def test_pulled_pairs_name_their_policy_by_run_id_so_a_moved_runs_folder_is_one_policy(sft_run, tmp_path):
    """Pulled pairs named the policy by the absolute path its candidates were generated at: after runs/ moved, one
    round of one policy was two entries of `pairs_origin` (and a path that means nothing on another machine)."""
    from alignkit.feedback import pull

    def metadata(run_dir: Path, run_id: str) -> dict[str, str]:  # as `feedback push` records a record's sources
        sources = [{"run": str(run_dir.resolve()), "run_id": run_id, "model": "embedded", "sampling": {}}] * 2
        return {"round": "1", "runs": str(run_dir.resolve()), "source": json.dumps(sources)}

    run_id = sft_run.manifest["id"]
    before, after = metadata(tmp_path / "runs" / "sft", run_id), metadata(tmp_path / "runs-moved" / "sft", run_id)
    again = metadata(tmp_path / "runs-moved" / "sft", "b2")  # trained again in its place: another policy
    rows = [
        pair | pull.record_origin("round-1", record) | {"record_id": f"r1-{i}"}
        for i, (pair, record) in enumerate(zip(CANONICAL, [before] * 4 + [after] * 4 + [again] * 2, strict=False))
    ]
    assert rows[0]["candidates_from"] == [{"run_id": run_id, "run": str(tmp_path / "runs" / "sft")}]
    pull.write_pairs(tmp_path / "pairs.jsonl", rows)
    run = alignkit.reward(
        data={"paths": [str(tmp_path / "pairs.jsonl")], "validation_split": 0.0}, from_run=str(sft_run.path),
        out=str(tmp_path / "runs-moved" / "reward"), trainer={"max_steps": 1, **TINY},
    )  # fmt: skip
    counted = {
        json.dumps(o["candidates_from"]): (o["dataset"], o["round"], o["rows"]) for o in run.manifest["pairs_origin"]
    }
    assert counted == {  # each run path relative to the run dir, as a manifest's paths are
        json.dumps([{"run_id": "b2", "run": "../sft"}]): ("round-1", 1, 2),
        json.dumps([{"run_id": run_id, "run": "../../runs/sft"}]): ("round-1", 1, 8),
    }


def test_a_pulled_pairs_files_run_paths_lead_to_the_run_from_any_folder_after_the_project_moved(
    sft_run, tmp_path, monkeypatch
):
    """`feedback pull` wrote each policy's run path relative to the working directory it ran in: read by a stage run
    from another folder, or after the project moved, the path in the pairs file and in the manifest's `pairs_origin`
    led nowhere (or to another run). It is relative to the pairs file now, and in the manifest to the run dir."""
    from alignkit.feedback import pull

    project = tmp_path / "project"
    shutil.copytree(sft_run.path, project / "runs" / "sft")  # the policy that wrote the candidates, inside the project
    source = runs.policy_source(runs.Run(project / "runs" / "sft"))
    record = {"round": "1", "source": json.dumps([source, source])}
    monkeypatch.chdir(project)  # pulled from the project's folder into pairs/
    rows = [pair | pull.record_origin("round-1", record) | {"record_id": f"r-{i}"} for i, pair in enumerate(CANONICAL)]
    pull.write_pairs(project / "pairs" / "round-1.jsonl", rows)
    shutil.move(project, tmp_path / "moved")
    monkeypatch.chdir(tmp_path)  # trained from another folder
    run = alignkit.reward(
        data={"paths": [str(tmp_path / "moved" / "pairs" / "round-1.jsonl")], "validation_split": 0.0},
        from_run=str(sft_run.path), out=str(tmp_path / "moved" / "runs" / "reward"), trainer={"max_steps": 1, **TINY},
    )  # fmt: skip
    ((policy,),) = [origin["candidates_from"] for origin in run.manifest["pairs_origin"]]
    assert policy["run_id"] == sft_run.manifest["id"]
    assert runs.Run(run.path / policy["run"]).manifest["id"] == policy["run_id"]  # the path leads to the run


def test_a_run_path_typed_into_a_candidates_file_is_read_from_the_file_not_from_where_pull_runs(
    sft_run, tmp_path, monkeypatch
):
    """A `run` typed by hand into a candidates file (`runs/sft`) went into the records as typed, and `feedback pull`
    read it from its own working directory: pulled from another folder, the pairs named no run, or another folder's
    `runs/sft` and its id. It is read as a path in a pairs file is, from the file's folder (else from where push
    runs), and pushed absolute with the run's id, as `generate` writes it."""
    from alignkit.feedback import pull, push

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    shutil.copytree(sft_run.path, project / "runs" / "sft")
    shutil.copytree(sft_run.path, elsewhere / "runs" / "sft")
    manifest = json.loads((elsewhere / "runs" / "sft" / "manifest.json").read_text())
    (elsewhere / "runs" / "sft" / "manifest.json").write_text(json.dumps(manifest | {"id": "another-run"}))
    typed = {"run": "runs/sft", "model": "embedded"}
    row = {"prompt": "Say hi.", "candidates": [{"text": "Hi!"} | typed, {"text": "Go away."} | typed]}
    policy = {"run_id": sft_run.manifest["id"], "run": str(project / "runs" / "sft")}
    for candidates, pushed_from in ((project / "candidates.jsonl", elsewhere), (project / "data" / "c.jsonl", project)):
        candidates.parent.mkdir(exist_ok=True)
        write_jsonl(candidates, [row])
        monkeypatch.chdir(pushed_from)  # beside the file, else from the folder push runs in
        (record,) = push.records_for_round(push.load_candidates(str(candidates)), 2, 1, seed=0)
        monkeypatch.chdir(elsewhere)  # pulled from another folder, which has a `runs/sft` of its own
        origin = pull.record_origin("round-1", record.metadata)
        assert origin["candidates_from"] == [policy], candidates
        pairs = project / "pairs" / "round-1.jsonl"
        pull.write_pairs(pairs, [pair | origin for pair in CANONICAL[:2]], overwrite=True)
        assert json.loads(pairs.read_text().splitlines()[0])["candidates_from"] == [policy | {"run": "../runs/sft"}]
        assert load_preferences([str(pairs)])[0]["candidates_from"] == [policy]
    write_jsonl(candidates, [row | {"candidates": [{"text": "Hi!", "run": 3}, {"text": "Go away."}]}])
    with pytest.raises(
        AlignkitError, match=r"c\.jsonl:line 1: field `candidates\[0\]\.run`: expected a string, got int"
    ):
        push.load_candidates(str(candidates))


def test_a_run_path_in_a_candidates_file_that_leads_to_no_run_is_warned_of_once(sft_run, tmp_path, alignkit_records):
    """A hand-typed `run` that looks like a path and leads to no run (`runs/sft-typo`) was pushed as written without
    a word: its records named no policy. One warning per such value names the file, its first row and field and the
    value; a label of the user's own ("gpt-4o") and a path that leads to the run pass without one."""
    from alignkit.feedback import push

    shutil.copytree(sft_run.path, tmp_path / "runs" / "sft")
    candidates = [{"text": "Hi!", "run": "gpt-4o"}, {"text": "Go away.", "run": "runs/sft"}]
    typo = [{"text": "Hello.", "run": "runs/sft-typo"}, {"text": "Bye.", "run": "./sft"}]
    path = write_jsonl(
        tmp_path / "candidates.jsonl",
        [
            {"prompt": "Say hi.", "candidates": candidates},
            {"prompt": "Say bye.", "candidates": [*candidates, *typo]},
            {"prompt": "Say yes.", "candidates": typo},
        ],
    )
    rows = push.load_candidates(str(path))
    assert [c["run"] for c in rows[1]["candidates"]] == [
        "gpt-4o",
        str(tmp_path / "runs" / "sft"),
        *[t["run"] for t in typo],
    ]
    warnings = [r.getMessage() for r in alignkit_records.records if r.levelname == "WARNING"]
    said = "leads to no run from the file's folder or the working directory (and once more in the file); pushed as "
    fix = "written (fix the path to label the rows with their run)"
    assert warnings == [
        f"{path}:line 2: field `candidates[2].run`: 'runs/sft-typo' {said}{fix}",
        f"{path}:line 2: field `candidates[3].run`: './sft' {said}{fix}",
    ]


def test_a_run_path_in_synth_rows_pushed_for_review_is_read_from_the_file_as_a_candidates_files_is(
    sft_run, tmp_path, monkeypatch, alignkit_records
):
    """Rows of `alignkit synth` pushed for review kept their `synth.run` as written: a relative path (typed, or the
    file's runs/ copied beside it) went into the record as is, to be read later from wherever `feedback pull-review`
    runs. It is read from the file's folder and recorded absolute with the run's id, as candidates files' runs are;
    a path that leads to no run is pushed as written with one warning naming the row and field."""
    from alignkit.feedback import push

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    shutil.copytree(sft_run.path, project / "runs" / "sft")
    elsewhere.mkdir()
    (project / "data").mkdir()
    synth = {"seed_ids": ["s1"], "model": "embedded", "round": 1}
    conversation = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]
    other = [{"role": "user", "content": "Say bye."}, {"role": "assistant", "content": "Bye."}]
    path = write_jsonl(
        project / "data" / "synth.jsonl",
        [
            {"messages": conversation, "synth": synth | {"run": "../runs/sft"}},
            {"messages": other, "synth": synth | {"run": "../runs/sft-typo"}},
        ],
    )
    monkeypatch.chdir(elsewhere)
    rows = push.load_reviewable(str(path))
    assert rows[0]["synth"] == synth | {"run": str(project / "runs" / "sft"), "run_id": sft_run.manifest["id"]}
    assert rows[1]["synth"] == synth | {"run": "../runs/sft-typo"}
    (record, _) = push.review_records(rows)
    assert json.loads(record.metadata["row"])["synth"]["run"] == str(project / "runs" / "sft")
    warnings = [r.getMessage() for r in alignkit_records.records if r.levelname == "WARNING"]
    assert warnings == [
        f"{path}:line 2: field `synth.run`: '../runs/sft-typo' leads to no run from the file's folder or the working "
        "directory; pushed as written (fix the path to label the rows with their run)"
    ]
    write_jsonl(path, [{"messages": conversation, "synth": synth | {"run": 3}}])
    with pytest.raises(AlignkitError, match=r"synth\.jsonl:line 1: field `synth\.run`: expected a string, got int"):
        push.load_reviewable(str(path))


def test_records_and_pairs_from_before_runs_had_ids_count_as_the_policy_their_run_path_leads_to(
    sft_run, tmp_path, monkeypatch
):
    """Records pushed before runs had ids (older `generate` files, older playground feedback) and pairs pulled then
    named a policy by its path alone: beside records naming it by id (runs/ moved or copied since), one policy was
    two in `pairs_origin`. A path that leads to no run any more stays a policy of its own: nothing tells which."""
    from alignkit.feedback import pull

    run_id = sft_run.manifest["id"]
    shutil.copytree(sft_run.path, tmp_path / "runs-copy" / "sft")
    with_id = {"run": str(tmp_path / "runs-copy" / "sft"), "run_id": run_id, "model": "m"}
    without_id = {"run": str(sft_run.path), "model": "m"}  # pushed before runs had ids
    pushed = {"round": "1", "source": json.dumps([without_id, with_id])}
    base = {"run": "", "model": "embedded"}  # an older playground record: the base beside a run named by its path
    playground = {"round": "playground", "source": json.dumps([without_id | {"model": str(sft_run.path)}, base])}
    by_hand = {"round": "1", "runs": str(sft_run.path)}  # a record pushed by hand: its runs' paths, no `source`
    for metadata in (pushed, playground, by_hand):
        policies = pull.record_origin("round-1", metadata)["candidates_from"]
        assert [p.get("run_id") for p in policies if "run" in p] == [run_id]

    monkeypatch.chdir(sft_run.path.parent)  # older pulls: a path alone, absolute or relative to where they ran
    gone = str(tmp_path / "runs-gone" / "sft")
    older = [str(sft_run.path), {"run": sft_run.path.name}, {"run_id": run_id, "run": "runs-copy/sft"}, {"run": gone}]
    rows = [
        pair | {"dataset": "round-1", "round": 1, "candidates_from": [older[i % 4]]} for i, pair in enumerate(CANONICAL)
    ]
    write_jsonl(tmp_path / "older-pairs.jsonl", rows)
    run = alignkit.reward(
        data={"paths": [str(tmp_path / "older-pairs.jsonl")], "validation_split": 0.0}, from_run=str(sft_run.path),
        out=str(tmp_path / "reward"), trainer={"max_steps": 1, **TINY},
    )  # fmt: skip
    counted = {
        origin["candidates_from"][0].get("run_id", "no id"): origin["rows"] for origin in run.manifest["pairs_origin"]
    }
    assert counted == {run_id: 3 * N_PAIRS // 4, "no id": N_PAIRS // 4}


def test_kto_trains_on_unpaired_rows(sft_run, data_dir, tmp_path):
    run = alignkit.dpo(
        method="kto",
        data={"paths": [str(data_dir / "unpaired.jsonl")], "validation_split": 0.0},
        from_run=str(sft_run.path),
        out=str(tmp_path / "kto"),
        trainer={"max_steps": 2, **TINY},
    )
    assert_complete_run(run, ["sft", "dpo"])
    assert run.manifest["method"] == "kto" and run.metrics["train_rows"] == 2 * N_PAIRS
    assert "train_kl" in run.metrics
    model, _ = lineage.load_run_model(run.path)
    assert model is not None


def test_kto_rows_all_of_one_label_or_out_of_balance_are_said_on_the_console(
    sft_run, data_dir, tmp_path, alignkit_records
):
    """TRL's KTO trainer logs the imbalance only to the run's log.txt: a ratings file of thumbs-up alone trained
    without a word on the console."""
    rows = [json.loads(line) for line in (data_dir / "unpaired.jsonl").read_text().splitlines()]
    good, bad = [r for r in rows if r["label"]], [r for r in rows if not r["label"]]
    for name, chosen in (("all-good", good), ("mostly-good", good + bad[:4]), ("balanced", good + bad)):
        write_jsonl(tmp_path / f"{name}.jsonl", chosen)
        alignkit_records.clear()
        alignkit_records.handler.setLevel(logging.INFO)  # an earlier run in this process may have raised it
        alignkit.dpo(
            method="kto",
            data={"paths": [str(tmp_path / f"{name}.jsonl")], "validation_split": 0.0},
            from_run=str(sft_run.path),
            out=str(tmp_path / name),
            trainer={"max_steps": 1, **TINY},
        )
        warned = [r.getMessage() for r in alignkit_records.records if "KTO" in r.getMessage()]
        expected = {
            "all-good": [f"all {N_PAIRS} KTO training rows are desirable (label true)"],
            "mostly-good": [f"KTO rows are {N_PAIRS} desirable to 4 undesirable", "trainer={'desirable_weight': 0.29}"],
            "balanced": [],
        }[name]
        assert bool(warned) == bool(expected), (name, warned)
        assert all(any(part in w for w in warned) for part in expected), (name, warned)


@pytest.mark.parametrize("method", ["simpo", "orpo"])
def test_reference_free_methods_train(method, sft_run, data_dir, tmp_path):
    run = alignkit.dpo(
        method=method,
        data={"paths": [str(data_dir / "pairs.jsonl")], "validation_split": 0.0},
        from_run=str(sft_run.path),
        out=str(tmp_path / method),
        trainer={"max_steps": 2, **TINY},
    )
    assert_complete_run(run, ["sft", "dpo"])
    assert "train_rewards/accuracies" in run.metrics
    # the method's own terms, which metrics.json lacked: the NLL of the chosen answer, and ORPO's odds ratio
    logged = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    last = [row for row in logged if "loss" in row][-1]
    own = ["nll_loss", "log_odds_ratio", "log_odds_chosen"] if method == "orpo" else ["nll_loss"]
    assert {key: run.metrics[f"train_{key}"] for key in own} == {key: last[key] for key in own}


def test_dpo_on_a_dpo_run_replaces_the_adapter_chain(dpo_result, data_dir, tmp_path):
    first, _ = dpo_result
    run, trainer = run_capturing_trainer(
        alignkit.dpo,
        data={"paths": [str(data_dir / "pairs.jsonl")], "validation_split": 0.0},
        from_run=str(first.path),
        out=str(tmp_path / "dpo2"),
        trainer={"max_steps": 2, "learning_rate": 5e-3, **TINY},
    )
    assert_complete_run(run, ["sft", "dpo", "dpo"])
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    first_model, _ = lineage.load_run_model(first.path)
    reference = torch.cat(trainer.compute_ref_log_probs(trainer.model, batch))
    torch.testing.assert_close(reference, sequence_logps(first_model, batch), atol=1e-4, rtol=0)
    reloaded, _ = lineage.load_run_model(run.path)
    torch.testing.assert_close(sequence_logps(reloaded, batch), sequence_logps(trainer.model, batch), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({}, "no `from_run` run given"),
        ({"method": "dpoo"}, "unknown dpo method `dpoo`"),
        ({"trainer": {"loss_type": "simpo"}}, "set `method: simpo`"),
        ({"trainer": {"loss_type": "sigmoidd"}}, "unknown trainer.loss_type 'sigmoidd'"),
        ({"method": "kto", "trainer": {"per_device_train_batch_size": 1}}, "KTO needs"),
        ({"trainer": {"betta": 0.1}}, "did you mean trainer={'beta': ...}?"),
        ({"method": "simpo", "trainer": {"loss_type": "ipo"}}, "would train CPO's ipo loss, not SimPO"),
    ],
    ids=["no-parent", "unknown-method", "simpo-as-loss", "unknown-loss", "kto-batch-of-one", "typo", "simpo-not-simpo"],
)
def test_bad_dpo_settings_fail_before_the_run_directory_exists(sections, expected, sft_run, data_dir, tmp_path):
    out = tmp_path / "dpo"
    values = {"from_run": str(sft_run.path)} if sections else {}
    with pytest.raises(AlignkitError, match=re.escape(expected)):
        alignkit.dpo(data={"paths": [str(data_dir / "pairs.jsonl")]}, out=str(out), **values, **sections)
    assert not out.exists()


@pytest.mark.parametrize("stage", [alignkit.dpo, alignkit.reward], ids=["dpo", "reward"])
def test_a_reward_run_is_not_a_policy_to_start_from(stage, reward_run, data_dir, tmp_path):
    with pytest.raises(AlignkitError, match="is a reward model, not a policy"):
        stage(data={"paths": [str(data_dir / "pairs.jsonl")]}, from_run=str(reward_run.path), out=str(tmp_path / "d"))
    assert not (tmp_path / "d").exists()


def test_resumed_dpo_keeps_the_sft_reference(sft_run, data_dir, tmp_path):
    out = tmp_path / "dpo"
    common = {"data": {"paths": [str(data_dir / "pairs.jsonl")], "validation_split": 0.0}, "out": str(out)}
    first = alignkit.dpo(
        **common, from_run=str(sft_run.path), trainer={"max_steps": 4, "save_steps": 2, "learning_rate": 5e-3, **TINY}
    )
    # as if killed after the step-2 checkpoint
    for leftover in (out / "checkpoints" / "checkpoint-4", out / "adapter"):
        shutil.rmtree(leftover)
    first.update_manifest(status="running")
    run, trainer = run_capturing_trainer(alignkit.dpo, **common, resume=True)
    assert run.complete and run.metrics["resumed_from"].endswith("checkpoint-2") and run.metrics["global_step"] == 4
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    sft_model, _ = lineage.load_run_model(sft_run.path)
    reference = torch.cat(trainer.compute_ref_log_probs(trainer.model, batch))
    torch.testing.assert_close(reference, sequence_logps(sft_model, batch), atol=1e-4, rtol=0)


def test_settings_given_with_resume_that_the_run_would_drop_are_refused(sft_run, reward_run, data_dir, tmp_path):
    """`--resume` continues with the run's own config.yaml: `--from` another run, other data or another learning rate
    given with it were dropped without a word (the run kept its parent while the user took it for the other's)."""
    out = tmp_path / "dpo"
    common = {"data": {"paths": [str(data_dir / "pairs.jsonl")], "validation_split": 0.0}, "out": str(out)}
    first = alignkit.dpo(**common, from_run=str(sft_run.path), trainer={"max_steps": 2, "save_steps": 1, **TINY})
    shutil.rmtree(out / "adapter")
    first.update_manifest(status="interrupted")
    config = (out / "config.yaml").read_text()
    for given, expected in (
        (
            {"from_run": str(reward_run.path)},
            f"resume=True continues {out} with its own config.yaml: from_run={str(reward_run.path.resolve())!r} "
            "differs",
        ),
        ({"data": {"paths": [str(data_dir / "unpaired.jsonl")]}}, "data.paths=["),
        ({"trainer": {"learning_rate": 0.5}}, "trainer.learning_rate=0.5 differs from the run's 5e-05"),
    ):
        with pytest.raises(AlignkitError, match=re.escape(expected)):
            alignkit.dpo(**(common | given), resume=True)
        assert (out / "config.yaml").read_text() == config and runs.Run(out).status == "interrupted"
    # the same parent and data, and a new length, resume
    run = alignkit.dpo(**common, from_run=str(sft_run.path), trainer={"max_steps": 3}, resume=True)
    assert run.complete and run.metrics["global_step"] == 3 and run.resolve(run.manifest["parent"]) == sft_run.path


def test_dpo_precomputes_the_reference_by_default_only_when_training_sees_every_row(sft_run, data_dir, tmp_path):
    common = {
        "data": {"paths": [str(data_dir / "pairs.jsonl")], "validation_split": 0.25},
        "from_run": str(sft_run.path),
    }
    train_rows = N_PAIRS - N_PAIRS // 4
    covering = {"max_steps": math.ceil(train_rows / 4), **TINY}  # one epoch at batch 4
    _, trainer = run_capturing_trainer(alignkit.dpo, **common, out=str(tmp_path / "epoch"), trainer=covering)
    assert trainer.args.precompute_ref_log_probs
    _, trainer = run_capturing_trainer(
        alignkit.dpo, **common, out=str(tmp_path / "part"), trainer={"max_steps": 1, **TINY}
    )
    assert not trainer.args.precompute_ref_log_probs  # a quarter of the rows: scoring them all would not pay


def test_precomputed_reference_trains_exactly_like_the_reference_in_each_step(sft_run, data_dir, tmp_path):
    """The speed-up keeps the training: same loss at every step and the same adapter at the end."""
    trained = {}
    for precompute in (False, True):
        run, trainer = run_capturing_trainer(
            alignkit.dpo,
            data={"paths": [str(data_dir / "pairs.jsonl")], "validation_split": 0.0},
            from_run=str(sft_run.path),
            out=str(tmp_path / f"precompute-{precompute}"),
            trainer={"max_steps": 4, "learning_rate": 5e-3, **TINY, "precompute_ref_log_probs": precompute},
        )
        assert trainer.args.precompute_ref_log_probs == precompute
        losses = [row["loss"] for row in map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines())
                  if "loss" in row]  # fmt: skip
        weights = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
        trained[precompute] = (losses, weights)
    (losses, weights), (pre_losses, pre_weights) = trained[False], trained[True]
    assert len(losses) == 4 and losses == pytest.approx(pre_losses, abs=1e-5)
    assert weights.keys() == pre_weights.keys()
    for name, value in weights.items():
        torch.testing.assert_close(pre_weights[name], value, atol=1e-5, rtol=0)


def test_a_config_trains_the_same_reward_model_whatever_ran_before_in_the_process(tiny_model, tmp_path):
    """The reward model's new head is drawn after seeding: a reward run in the demo (after SFT and sampling drew from
    torch's generator) equals the same config run on its own."""
    path = write_jsonl(tmp_path / "pairs.jsonl", CANONICAL)
    weights = []
    for name, draws in (("fresh", 0), ("after-draws", 1000)):
        torch.rand(draws)  # what other stages take from the generator
        run = alignkit.reward(
            data={"paths": [str(path)], "validation_split": 0.0},
            model={"name": tiny_model},
            out=str(tmp_path / name),
            trainer={"max_steps": 1, **TINY},
        )
        weights.append(load_file(run.path / "adapter" / "adapter_model.safetensors"))
    assert weights[0].keys() == weights[1].keys() and any(key.endswith("score.weight") for key in weights[0])
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], atol=0, rtol=0, msg=key)


def test_dpo_saves_its_parent_when_training_breaks_the_checked_answers(tiny_model, tmp_path):
    """SFT answers "is it valid?" with the right "Yes"; pairs that prefer "No" then make DPO's last step wrong. With
    `checked_prompts`, the run keeps its start (the SFT policy) and saves it; without, it saves the wrong last step."""
    asked = [f"Check number {i}: is it valid?" for i in range(60)]
    yes, no = "Yes, it is valid.", "No, it is not valid."
    sft_file = write_jsonl(
        tmp_path / "sft.jsonl", [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": yes}]}
                                 for q in asked[12:]]
    )  # fmt: skip
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": q, "chosen": no, "rejected": yes} for q in asked[12:]])
    checked = write_jsonl(tmp_path / "checked.jsonl", [{"prompt": q, "reference": "Yes"} for q in asked[:12]])
    tiny = {"per_device_train_batch_size": 8, "logging_steps": 4}
    sft = alignkit.sft(
        data={"paths": [str(sft_file)], "validation_split": 0.0},
        model={"name": tiny_model},
        peft={"method": "full"},  # a LoRA cannot sharpen this tiny model's near-uniform logits
        out=str(tmp_path / "sft"),
        trainer={"max_steps": 100, "learning_rate": 3e-3, **tiny},
    )
    common = {
        "data": {"paths": [str(pairs)], "validation_split": 0.0},
        "from_run": str(sft.path),
        "trainer": {"max_steps": 12, "learning_rate": 1e-2, **tiny},
    }
    kept = alignkit.dpo(**common, out=str(tmp_path / "kept"), checked_prompts=str(checked), checked_max_new_tokens=8)
    last = alignkit.dpo(**common, out=str(tmp_path / "last"))

    steps = kept.metrics["checked_steps"]
    assert steps["0"]["accuracy"] == 1.0 > steps["12"]["accuracy"], steps  # training on the pairs broke the answers
    assert kept.metrics["checked_kept_step"] == 0
    assert str(checked) in kept.manifest["checked_prompts"]
    prompts = generate.load_prompt_items(str(checked))

    def accuracy(run: runs.Run) -> float:
        model, tokenizer = lineage.load_run_model(run.path)
        answers = generate.greedy_replies(model, tokenizer, [p.messages for p in prompts], 8)
        return evaluate.answer_figures(prompts, answers)[0]["accuracy"]

    assert accuracy(kept) == 1.0 > accuracy(last)  # the saved adapter is the kept step's, not the last one's


def test_model_selection_fails_a_refusal_of_a_prompt_with_nothing_to_check(tmp_path):
    """A benign prompt with nothing to check (a definition) passed selection when refused, so a step that had learnt
    to decline everyday requests scored as well as one that answered them."""
    from alignkit import judges, training

    prompts = generate.load_prompt_items(
        str(write_jsonl(tmp_path / "checked.jsonl", [{"prompt": "What is compost?", "skill": "definition"}]))
    )
    answers = {
        "Compost is decayed plant matter that gardeners add to soil.": True,
        "I'm sorry, but I can't help with that request.": False,
        "compost compost compost compost compost compost": False,
    }
    for answer, passes in answers.items():
        check = judges.check(answer, prompts[0])
        assert check["accurate"] is None  # the prompt is not checkable: no model's accuracy counts it
        assert training.passes_check(check) is passes, answer


def test_checked_prompts_are_scored_at_each_evaluation(sft_run, data_dir, tmp_path):
    checked = write_jsonl(tmp_path / "checked.jsonl", [{"prompt": question(i), "reference": 2 * i} for i in range(4)])
    run = alignkit.dpo(
        data={"paths": [str(data_dir / "pairs.jsonl")], "validation_split": 0.25},  # early stopping stays off
        from_run=str(sft_run.path),
        checked_prompts=str(checked),
        checked_max_new_tokens=4,
        out=str(tmp_path / "dpo"),
        trainer={"max_steps": 4, "eval_steps": 2, **TINY},
    )
    steps = {int(step): figures for step, figures in run.metrics["checked_steps"].items()}
    assert list(steps) == [0, 2, 4]
    best_earlier = max([0, 2], key=lambda step: (steps[step]["score"], step))  # the later on a tie
    beyond_chance = steps[4]["p_earlier_better"] < 0.05
    assert run.metrics["checked_kept_step"] == (best_earlier if beyond_chance else 4)


@pytest.mark.parametrize(
    ("rows", "sections", "expected"),
    [
        ([{"prompt": "Hi"}], {}, "has no row with `reference`"),
        ([{"ask": "Hi"}], {}, "line 1"),
        ([{"prompt": "Hi", "reference": "Hello"}], {"trainer": {"load_best_model_at_end": True}}, "would pick by"),
    ],
    ids=["nothing-to-check", "no-prompt-field", "two-selections"],
)
def test_bad_checked_prompts_fail_before_the_run_exists(rows, sections, expected, sft_run, data_dir, tmp_path):
    checked = write_jsonl(tmp_path / "checked.jsonl", rows)
    with pytest.raises(AlignkitError, match=re.escape(expected)):
        alignkit.dpo(
            data={"paths": [str(data_dir / "pairs.jsonl")]},
            from_run=str(sft_run.path),
            checked_prompts=str(checked),
            out=str(tmp_path / "dpo"),
            **sections,
        )
    assert not (tmp_path / "dpo").exists()
