"""The main job end to end on a tiny model: SFT -> generate -> Argilla -> simulated ratings -> reward -> DPO -> eval,
in a setting small enough for CI where rating can only help: the aligned policy must beat its parent."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from alignkit import demo, runs
from alignkit.errors import AlignkitError
from benchmarks import demo_seeds
from tests.conftest import write_jsonl

pytestmark = pytest.mark.argilla


@pytest.fixture
def remote_argilla(argilla_server, monkeypatch):
    """The session's server, reached as if it were a remote deployment (the ARGILLA_API_URL path)."""
    monkeypatch.setenv("ARGILLA_API_URL", argilla_server.url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.api_key)
    return argilla_server


def learnable_files(root: Path) -> tuple[Path, Path]:
    """A task a tiny model learns in seconds, where the rated loop must fix what SFT got wrong: SFT data answers
    "is it valid?" with the wrong "No" 7 times in 10 (so SFT's greedy answer is wrong, yet its samples hold the right
    one), and the prompt file's reference is "Yes"."""
    sft_rows = [
        {
            "messages": [
                {"role": "user", "content": f"Check number {i}: is it valid?"},
                {"role": "assistant", "content": "Yes, it is valid." if k < 3 else "No, it is not valid."},
            ]
        }
        for i in range(100, 140)
        for k in range(10)
    ]
    prompts = [{"prompt": f"Check number {i}: is it valid?", "skill": "yes_no", "reference": "Yes"} for i in range(24)]
    return write_jsonl(root / "sft.jsonl", sft_rows), write_jsonl(root / "prompts.jsonl", prompts)


def test_the_rated_loop_makes_a_learnable_policy_better_than_its_parent(tmp_path, tiny_model, remote_argilla):
    sft_data, prompts = learnable_files(tmp_path)
    tiny = {"per_device_train_batch_size": 8, "logging_steps": 5}
    cfg = demo.DemoConfig(
        out=str(tmp_path / "demo"),
        model=tiny_model,
        sft_data=str(sft_data),
        prompts=str(prompts),
        candidates=3,
        train_prompts=12,
        eval_prompts=12,
        sft_steps=100,
        reward_steps=16,  # at 4 its win-rate (0.58) disagreed with the oracle's (1.0) once the candidates changed
        dpo_steps=16,
        rl_steps=1,
        max_new_tokens=16,
        # a full fine-tune: a LoRA cannot sharpen this tiny model's near-uniform logits; DPO then adds a LoRA on it
        sft_peft={"method": "full"},
        sft=tiny | {"learning_rate": 3e-3},
        reward=tiny | {"learning_rate": 1e-2},
        dpo=tiny | {"learning_rate": 1e-2},
        rl={"learning_rate": 1e-4},
    )
    report = demo.run(cfg)
    saved = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert saved["seconds_total"] == report["seconds_total"] > 0
    # the relations that make it alignment: the aligned policy beats its parent and loses no accuracy
    assert saved["accuracy"]["dpo"] > saved["accuracy"]["sft"], saved["accuracy"]
    assert saved["win_rate_vs_sft"] > 0.5 and saved["win_rate_vs_sft_interval"][0] > 0.5
    assert saved["degenerate_rate"]["dpo"] <= saved["degenerate_rate"]["sft"]
    assert "dpo vs sft" not in saved["alarms"], saved["alarms"]
    assert saved["verdict"] == "better"
    assert saved["reward_shared_prompts"] == 0  # the reward model is scored on prompts it never trained on
    assert saved["reward_eval_pairs"] >= saved["reward_eval_prompts"] >= 1  # and says how many
    low, high = saved["reward_accuracy_interval"]
    assert low <= saved["reward_accuracy"] <= high
    assert set(saved["evaluation"]["comparisons"]) == {"sft vs base", "dpo vs sft", "rl vs dpo"}
    assert saved["evaluation"]["trained_on_reward_model"] == ["rl"]  # its verdict weighs the reward model's alarms
    answers = (tmp_path / "demo" / "eval" / "answers.jsonl").read_text().splitlines()
    assert len(answers) == 4 * cfg.eval_prompts  # base, sft, dpo, rl: every answer saved

    def saved_prompts(name: str) -> set[str]:
        return {json.dumps(json.loads(row)["prompt"]) for row in (tmp_path / "demo" / name).read_text().splitlines()}

    held, rated = saved_prompts("heldout_prompts.jsonl"), saved_prompts("train_prompts.jsonl")
    evaluated = {json.dumps(row["prompt"]) for row in map(json.loads, answers) if row["run"] == "sft"}
    assert held == evaluated and len(held) == cfg.eval_prompts and not held & rated  # the held-out prompts, saved
    checked = demo_seeds.met(demo_seeds.seed_figures(saved))  # the three-seed benchmark reads the same report
    assert (
        checked["accuracy"]
        and checked["degenerate_rate"]
        and "| 0 |" in demo_seeds.table({"seeds": {"0": demo_seeds.seed_figures(saved)}})
    )
    report_md = (tmp_path / "demo" / "report.md").read_text()
    assert "resampling prompts" in report_md  # the reward accuracy's interval, over prompts
    assert "| dpo vs sft | oracle |" in report_md and (tmp_path / "demo" / "eval" / "accuracy.png").is_file()

    assert saved["pairs"]["pairs"] > 0 and saved["pairs"]["annotators"] == 2
    dpo_pairs = (tmp_path / "demo" / "pairs-best-worst.jsonl").read_text().splitlines()
    assert 0 < saved["dpo_pairs"] == len(dpo_pairs) <= cfg.train_prompts  # DPO: one pair per prompt at most
    assert set(saved["seconds_per_stage"]) == {"sft", "generate", "argilla", "annotate", "reward", "dpo", "rl", "eval"}
    assert saved["rl"]["global_step"] == 1 and saved["rl"]["kl"] is not None
    for stage, path in saved["runs"].items():
        run = runs.Run(path)
        assert run.complete and run.stage == stage
    lineage = [step["stage"] for step in runs.Run(saved["runs"]["dpo"]).manifest["lineage"]]
    assert lineage == ["sft", "dpo"]


def test_second_round_rates_the_dpo_policys_least_certain_prompts(tmp_path, tiny_model, remote_argilla):
    finished_sft = demo.train_sft(demo.DemoConfig(model=tiny_model, sft_steps=1), tmp_path / "sft-of-an-earlier-demo")
    settings = {"model": tiny_model}
    cfg = demo.DemoConfig(
        out=str(tmp_path / "demo"),
        sft_run=str(finished_sft.path),  # started from, not trained again
        candidates=3,
        train_prompts=8,
        eval_prompts=4,
        reward_steps=1,
        dpo_steps=1,
        rl_steps=0,
        max_new_tokens=24,
        rounds=2,
        round_records=3,
        # The round mechanics, not the rule, are under test: an untrained model's answers are all degenerate, which
        # `careful` ties; `concise` still orders them by length, so both rounds give pairs.
        rule="concise",
        **settings,
    )
    report = demo.run(cfg)
    first, second = report["pairs"]["rounds"]
    assert second["rated_records"] == 3 < first["rated_records"]
    assert report["pairs"]["pairs"] == first["pairs"] + second["pairs"]
    assert {"generate-round-2", "annotate-round-2", "reward-round-2", "dpo-round-2"} <= set(report["seconds_per_stage"])
    candidates = [
        json.loads(line) for line in (tmp_path / "demo" / "candidates-round-2.jsonl").read_text().splitlines()
    ]
    dpo_round_1 = str(runs.Run(tmp_path / "demo" / "dpo").path.resolve())
    assert all(c["run"] == dpo_round_1 for row in candidates for c in row["candidates"])
    lineage = [step["stage"] for step in runs.Run(report["runs"]["dpo"]).manifest["lineage"]]
    assert lineage == ["sft", "dpo"] and report["runs"]["dpo"].endswith("dpo-round-2")
    assert report["runs"]["sft"] == str(finished_sft.path) and not (tmp_path / "demo" / "sft").exists()
    assert runs.Run(report["runs"]["dpo"]).parent_path.resolve() == finished_sft.path.resolve()
    with pytest.raises(AlignkitError, match="is a dpo run, not an SFT run"):
        demo.finished_sft(report["runs"]["dpo"], tiny_model)
    with pytest.raises(AlignkitError, match="the demo's model is 'embedded'"):
        demo.finished_sft(str(finished_sft.path), "embedded")
    elsewhere = tmp_path / "not-written"
    with pytest.raises(AlignkitError, match=r"sft_steps=1 would have no effect: the reused run is trained already"):
        demo.run(dataclasses.replace(cfg, out=str(elsewhere), sft_steps=1))
    assert not elsewhere.exists(), "refused before anything is written"
