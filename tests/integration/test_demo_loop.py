"""The main job end to end on a tiny model: SFT -> generate -> Argilla -> simulated ratings -> reward -> DPO -> eval."""

from __future__ import annotations

import json

import pytest

from alignkit import demo, runs

pytestmark = pytest.mark.argilla


@pytest.fixture
def remote_argilla(argilla_server, monkeypatch):
    """The session's server, reached as if it were a remote deployment (the ARGILLA_API_URL path)."""
    monkeypatch.setenv("ARGILLA_API_URL", argilla_server.url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.api_key)
    return argilla_server


def test_demo_loop_writes_report_with_every_figure(tmp_path, tiny_model, remote_argilla):
    cfg = demo.DemoConfig(
        out=str(tmp_path / "demo"),
        model=tiny_model,
        candidates=3,
        train_prompts=12,
        sft_steps=2,
        reward_steps=2,
        dpo_steps=2,
        rl_steps=1,
        eval_prompts=6,
        max_new_tokens=24,
    )
    report = demo.run(cfg)
    saved = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert saved["seconds_total"] == report["seconds_total"] > 0
    for key in ("reward_accuracy", "win_rate_vs_sft", "forgetting_ppl_ratio"):
        assert 0 <= saved[key] <= 1 or key == "forgetting_ppl_ratio", key
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
    cfg = demo.DemoConfig(
        out=str(tmp_path / "demo"),
        model=tiny_model,
        candidates=3,
        train_prompts=8,
        eval_prompts=4,
        sft_steps=1,
        reward_steps=1,
        dpo_steps=1,
        rl_steps=0,
        max_new_tokens=24,
        rounds=2,
        round_records=3,
    )
    report = demo.run(cfg)
    first, second = report["pairs"]["rounds"]
    assert second["rated_records"] == 3 < first["rated_records"]
    assert report["pairs"]["pairs"] == first["pairs"] + second["pairs"]
    assert {"generate-round-2", "annotate-round-2", "reward-round-2", "dpo-round-2"} <= set(report["seconds_per_stage"])
    candidates = [
        json.loads(line) for line in (tmp_path / "demo" / "candidates-round-2.jsonl").read_text().splitlines()
    ]
    dpo_round_1 = str(runs.Run(tmp_path / "demo" / "runs" / "dpo").path.resolve())
    assert all(c["run"] == dpo_round_1 for row in candidates for c in row["candidates"])
    lineage = [step["stage"] for step in runs.Run(report["runs"]["dpo"]).manifest["lineage"]]
    assert lineage == ["sft", "dpo"] and report["runs"]["dpo"].endswith("dpo-round-2")
