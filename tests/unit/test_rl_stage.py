"""Online RL (GRPO, RLOO) on a tiny random model: rewards from a reward model run and from rules, the reference being
the parent policy, run directories, reloading the trained policy, and bad settings failing before any work."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from trl.trainer.utils import use_adapter

import alignkit
from alignkit import AlignkitError, lineage, runs
from alignkit.config import RLStageConfig
from alignkit.paths import bundled_data
from alignkit.stages import rl
from tests.conftest import run_capturing_trainer, run_cli, write_jsonl

TINY = {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 4, "logging_steps": 1}
RL_TINY = {"max_steps": 2, "max_completion_length": 12, "learning_rate": 1e-2}
QUESTIONS = [[{"role": "user", "content": f"What is {i} plus {i}?"}] for i in range(12)]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rl")
    pairs = [
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": f"It is {2 * i}."}],
            "rejected": [{"role": "assistant", "content": f"It is {2 * i + 1}, I think, but I am not sure."}],
        }
        for i, prompt in enumerate(QUESTIONS)
    ]
    write_jsonl(root / "chat.jsonl", [{"messages": p["prompt"] + p["chosen"]} for p in pairs])
    write_jsonl(root / "pairs.jsonl", pairs)
    write_jsonl(root / "prompts.jsonl", [{"prompt": p} for p in QUESTIONS])
    return root


@pytest.fixture(scope="module")
def sft_run(tiny_model: str, root: Path) -> runs.Run:
    return alignkit.sft(
        data={"paths": [str(root / "chat.jsonl")]},
        model={"name": tiny_model},
        out=str(root / "sft"),
        trainer={"max_steps": 3, "learning_rate": 1e-2, **TINY},
    )


@pytest.fixture(scope="module")
def reward_run(sft_run: runs.Run, root: Path) -> runs.Run:
    return alignkit.reward(
        data={"paths": [str(root / "pairs.jsonl")], "validation_split": 0.0},
        from_run=str(sft_run.path),
        out=str(root / "reward"),
        trainer={"max_steps": 2, "learning_rate": 1e-2, **TINY},
    )


def logps(model: Any, tokenizer: Any) -> torch.Tensor:
    """Log-probabilities a model gives every next token of fixed chat texts."""
    texts = [[*q, {"role": "assistant", "content": "It is four, I think."}] for q in QUESTIONS[:4]]
    ids = torch.tensor([tokenizer.apply_chat_template(t, tokenize=True, return_dict=True)["input_ids"] for t in texts])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)


def assert_complete_rl_run(run: runs.Run, stages: list[str], rewards: list[str]) -> None:
    assert run.complete
    manifest = run.manifest
    assert [step["stage"] for step in manifest["lineage"]] == stages and manifest["rewards"] == rewards
    assert (run.path / "adapter" / "adapter_model.safetensors").is_file()
    assert not [p for p in (run.path / "adapter").iterdir() if p.is_dir()], "only the trained adapter is saved"
    assert (run.path / "config.yaml").is_file() and (run.path / "metrics.jsonl").read_text().strip()
    metrics = run.metrics
    assert metrics["global_step"] == 2 and metrics["train_runtime"] > 0 and metrics["train_tokens"] > 0
    for key in ("reward_start", "reward_end", "kl_start", "kl", "kl_mean"):
        assert isinstance(metrics[key], float), key
    assert set(metrics["reward_functions"]) == set(rewards)
    assert metrics["kl_start"] == pytest.approx(0.0, abs=1e-6), "policy == reference before the first update"


@pytest.fixture(scope="module")
def grpo_result(sft_run: runs.Run, reward_run: runs.Run, root: Path) -> tuple[runs.Run, Any]:
    return run_capturing_trainer(
        alignkit.rl,
        from_run=str(sft_run.path),
        reward_run=str(reward_run.path),
        rewards={"reward_model": 1.0, "concise": 0.1},
        out=str(root / "grpo"),
        trainer={**RL_TINY, **TINY},
    )


def test_grpo_with_the_reward_model_trains_the_parent_adapter_against_a_frozen_copy(grpo_result, sft_run, reward_run):
    run, trainer = grpo_result
    assert_complete_rl_run(run, ["sft", "rl"], ["reward_model", "concise"])
    manifest = run.manifest
    assert run.resolve(manifest["adapter_continues"]) == sft_run.path.resolve() and manifest["method"] == "grpo"
    assert not Path(manifest["adapter_continues"]).is_absolute()  # relative: runs/ can move
    assert (run.path / manifest["reward_run"]).resolve() == reward_run.path.resolve()  # relative: runs/ can move
    assert lineage.trained_against(run, reward_run.path) and not lineage.trained_against(sft_run, reward_run.path)
    copy = Path(shutil.copytree(reward_run.path, reward_run.path.parent / "reward-copy"))
    assert lineage.trained_against(run, copy)  # the same model elsewhere: its scores are no independent evidence
    assert manifest["reward_weights"] == [1.0, 0.1]
    assert trainer.args.steps_per_generation == 2, "both steps' completions sampled at once"
    assert list(manifest["data"]) == [str(bundled_data("prompts.jsonl"))]
    bundled = bundled_data("prompts.jsonl").read_text(encoding="utf-8").splitlines()
    assert run.metrics["train_prompts"] == len(bundled), "the bundled prompts by default"
    by_function = run.metrics["reward_functions"]
    weighted = by_function["reward_model"]["start"] + 0.1 * by_function["concise"]["start"]
    assert run.metrics["reward_start"] == pytest.approx(weighted, abs=1e-4)

    sft_model, tokenizer = lineage.load_run_model(sft_run.path)
    policy = trainer.model
    assert "ref" in policy.peft_config, "TRL's frozen copy of the parent adapter"
    with use_adapter(policy, adapter_name="ref"):
        reference = logps(policy, tokenizer)
    torch.testing.assert_close(reference, logps(sft_model, tokenizer), atol=1e-5, rtol=0)
    trained = logps(policy, tokenizer)
    assert (trained - reference).abs().max() > 1e-3, "the policy moved away from the reference"
    reloaded, _ = lineage.load_run_model(run.path)
    torch.testing.assert_close(logps(reloaded, tokenizer), trained, atol=1e-5, rtol=0)


def test_the_kl_in_metrics_is_the_last_steps_not_the_last_sampling_steps(grpo_result):
    """GRPO logs its reward on the steps that sample (one in `steps_per_generation`) and its KL on every step: the
    run's `kl` was read off the sampling steps only, 0.0 (the first step's) for a run of one sampling batch, however
    far the policy had moved."""
    run, trainer = grpo_result
    logged = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    kls = [row["kl"] for row in logged if "kl" in row]
    assert trainer.args.steps_per_generation == len(kls) == 2, "one sampling batch, a KL on each of its steps"
    assert run.metrics["kl"] == kls[-1] > 0, "the policy moved away from the reference at step 1"
    assert run.metrics["kl_mean"] == pytest.approx(sum(kls) / len(kls))


def test_the_reward_model_reward_is_the_scorer(grpo_result, reward_run):
    _, trainer = grpo_result
    reward_model = trainer.reward_funcs[0]
    completions = [[{"role": "assistant", "content": text}] for text in ("It is 2.", "It is 3, I think.")]
    expected = lineage.load_scorer(reward_run.path).score(QUESTIONS[1:3], completions)
    assert reward_model(prompts=QUESTIONS[1:3], completions=completions) == pytest.approx(expected, abs=1e-5)


def test_grpo_with_a_rule_reward_and_a_new_adapter_on_the_merged_parent(sft_run, root, tmp_path):
    run, trainer = run_capturing_trainer(
        alignkit.rl,
        from_run=str(sft_run.path),
        rewards=["concise"],
        data={"paths": [str(root / "prompts.jsonl")]},
        peft={"method": "lora", "r": 4, "lora_alpha": 8},
        out=str(tmp_path / "grpo"),
        trainer={**RL_TINY, **TINY},
    )
    assert_complete_rl_run(run, ["sft", "rl"], ["concise"])
    assert run.manifest["adapter_continues"] is None and run.metrics["train_prompts"] == len(QUESTIONS)
    sft_model, tokenizer = lineage.load_run_model(sft_run.path)
    with use_adapter(trainer.model, adapter_name=None):  # TRL's reference for a new adapter: adapters disabled
        reference = logps(trainer.model, tokenizer)
    torch.testing.assert_close(reference, logps(sft_model, tokenizer), atol=1e-4, rtol=0)
    reloaded, _ = lineage.load_run_model(run.path)
    torch.testing.assert_close(logps(reloaded, tokenizer), logps(trainer.model, tokenizer), atol=1e-4, rtol=0)


REWARD_MODULE = """
import json
import shutil

def exact_sum(prompts, completions, answer, **kwargs):
    with open("seen.jsonl", "a") as seen:
        for prompt, value in zip(prompts, answer):
            seen.write(json.dumps({"question": prompt[-1]["content"], "answer": value}) + "\\n")
    return [1.0 if str(value) in completion[-1]["content"] else 0.0 for completion, value in zip(completions, answer)]
"""


def test_grpo_with_a_reward_function_of_your_own_that_reads_a_column_of_the_prompts(sft_run, tmp_path, monkeypatch):
    """TRL users bring their own reward functions (an import path, as TRL's scripts take them); the function gets the
    prompt file's other columns (`answer` here), each row's own."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_rewards.py").write_text(REWARD_MODULE)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": q, "answer": 2 * i} for i, q in enumerate(QUESTIONS)])
    run = alignkit.rl(
        from_run=str(sft_run.path),
        rewards={"my_rewards.exact_sum": 1.0, "concise": 0.1},
        data={"paths": [str(prompts)]},
        out=str(tmp_path / "grpo"),
        trainer={**RL_TINY, **TINY},
    )
    assert_complete_rl_run(run, ["sft", "rl"], ["my_rewards.exact_sum", "concise"])
    seen = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
    assert seen and all(row["question"] == f"What is {row['answer'] // 2} plus {row['answer'] // 2}?" for row in seen)

    mixed = [{"prompt": QUESTIONS[0], "answer": 0}, {"prompt": QUESTIONS[1], "answer": "two"}]
    with pytest.raises(AlignkitError, match=r"give each extra column .* one type in every row"):
        rl.to_dataset(rl.load_rows(RLStageConfig(), [str(write_jsonl(tmp_path / "mixed.jsonl", mixed))]))
    for path, expected in (
        ("no_such_module.reward", "cannot import no_such_module (ModuleNotFoundError"),
        ("my_rewards:missing", "my_rewards has no function missing"),
    ):
        with pytest.raises(AlignkitError, match=re.escape(expected)):
            alignkit.rl(from_run=str(sft_run.path), rewards=[path], out=str(tmp_path / "refused"))
        assert not (tmp_path / "refused").exists()


def test_rloo_trains_against_the_parent_policy(sft_run, root, tmp_path):
    run, trainer = run_capturing_trainer(
        alignkit.rl,
        method="rloo",
        from_run=str(sft_run.path),
        rewards=["concise"],
        data={"paths": [str(root / "prompts.jsonl")]},
        out=str(tmp_path / "rloo"),
        trainer={**RL_TINY, **TINY},
    )
    assert_complete_rl_run(run, ["sft", "rl"], ["concise"])
    assert run.manifest["method"] == "rloo" and type(trainer).__name__ == "RLOOTrainer"
    # `alignkit runs` names the method, and shows no eval loss (RLOO's is ~0 by construction)
    listed = run_cli("runs", "--dir", str(tmp_path), env={"COLUMNS": "200"})
    assert listed.returncode == 0 and "rl (rloo)" in listed.stdout and "0.0000" not in listed.stdout
    sft_model, tokenizer = lineage.load_run_model(sft_run.path)
    with use_adapter(trainer.model, adapter_name="ref"):
        reference = logps(trainer.model, tokenizer)
    torch.testing.assert_close(reference, logps(sft_model, tokenizer), atol=1e-5, rtol=0)


def test_completions_are_sampled_for_several_steps_unless_too_few_or_the_user_sizes_the_batch():
    trainer = {"per_device_train_batch_size": 8, "num_generations": 4}  # two prompts per step
    assert rl.steps_per_generation(trainer, train_prompts=100) == rl.GENERATE_FOR_STEPS
    assert rl.steps_per_generation(trainer, train_prompts=5) == 2, "TRL's sampler would drop a batch of 4 steps"
    assert rl.steps_per_generation(trainer, train_prompts=1) == 1
    assert rl.steps_per_generation(trainer | {"max_steps": 3}, train_prompts=100) == 3, "no unused completions"
    # TRL counts batches: 2 optimizer steps of 2 batches each are 4 batches to sample for
    assert rl.steps_per_generation(trainer | {"max_steps": 2, "gradient_accumulation_steps": 2}, 100) == 4
    # 2 completions a step, 4 per prompt: 3 steps' 6 completions are no whole number of groups, 2 steps' are
    small = {"per_device_train_batch_size": 2, "num_generations": 4}
    assert rl.steps_per_generation(small | {"max_steps": 3}, train_prompts=100) == 2
    assert rl.steps_per_generation(small, train_prompts=100) == 4
    cfg = RLStageConfig(rewards=["concise"], trainer={"generation_batch_size": 16})
    assert "steps_per_generation" not in rl.trainer_defaults(cfg, None, False, 100), "TRL takes only one of the two"


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"from_run": None, "rewards": ["concise"]}, "no `from_run` run given"),
        ({"rewards": ["consice"]}, "unknown reward `consice`"),
        ({}, "rl needs a reward"),
        ({"rewards": ["reward_model"]}, "has reward_model but no reward run"),
        ({"reward_run": "SFT", "rewards": ["reward_model"]}, "is a sft run, not a reward model"),
        ({"from_run": "REWARD", "rewards": ["concise"]}, "is a reward model, not a policy"),
        ({"rewards": {"concise": "high"}}, "weight of reward `concise` must be a number"),
        ({"rewards": {"concise": 1}, "trainer": {"reward_weights": [0.5]}}, "and in trainer.reward_weights ([0.5])"),
        ({"method": "ppo", "rewards": ["concise"]}, "unknown rl method `ppo`"),
        ({"rewards": ["concise"], "peft": {"method": "full"}}, "peft.method=full and trainer.beta > 0"),
        ({"rewards": ["concise"], "trainer": {"num_generations": 3, "steps_per_generation": 1}}, "divisible by num_"),
        ({"rewards": ["concise"], "trainer": {"num_generation": 3}}, "did you mean trainer={'num_generations': ...}"),
    ],
    ids=[
        "no-parent",
        "unknown-reward",
        "no-reward",
        "reward-model-without-run",
        "reward-run-not-a-reward-model",
        "parent-is-a-reward-model",
        "weight-not-a-number",
        "weights-given-twice",
        "unknown-method",
        "full-with-kl",
        "batch-not-divisible",
        "typo",
    ],
)
def test_bad_rl_settings_fail_before_the_run_directory_exists(sections, expected, sft_run, reward_run, tmp_path):
    out = tmp_path / "rl"
    named = {"SFT": str(sft_run.path), "REWARD": str(reward_run.path)}
    values = {"from_run": str(sft_run.path), **sections}
    values = {k: named.get(v, v) if isinstance(v, str) else v for k, v in values.items()}
    with pytest.raises(AlignkitError, match=re.escape(expected)):
        alignkit.rl(out=str(out), **values)
    assert not out.exists()


@pytest.mark.parametrize(
    ("prompt", "field"),
    [
        ([*QUESTIONS[0], {"role": "assistant", "content": "It is 0."}], "prompt[1].role"),
        ([{"role": "system", "content": "Be brief."}], "prompt[0].role"),
    ],
    ids=["answer-included", "system-only"],
)
def test_a_prompt_list_not_ending_with_a_user_turn_is_refused(prompt, field, sft_run, tmp_path):
    """A prompt holding its answer was sampled from after that answer (and a system-only one with no question):
    the policy trained on replies to the wrong context, without a word."""
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": prompt}] * 4)
    out = tmp_path / "rl"
    expected = f"line 1: field `{field}`: the prompt must end with a user turn"
    with pytest.raises(AlignkitError, match=re.escape(expected)):
        alignkit.rl(data={"paths": [str(prompts)]}, from_run=str(sft_run.path), rewards=["concise"], out=str(out))
    assert not out.exists()


def test_the_summary_of_an_rl_run_shows_its_reward_and_kl(grpo_result, capsys):
    """The console table after `alignkit rl` showed a loss only: nothing said whether the reward moved."""
    from alignkit import cli

    cli.show_run(grpo_result[0])
    shown = capsys.readouterr().out
    assert all(f"│ {key} " in shown for key in ("reward_start", "reward_end", "kl")), shown


def test_resuming_rl_against_a_reward_run_trained_again_in_its_place_is_refused(sft_run, root):
    """The lineage's ids covered the parents only: an rl run resumed after its `--reward` run was trained again in
    place (`--overwrite`) went on against another reward model, without a word."""

    def train_reward(overwrite: bool = False) -> runs.Run:
        return alignkit.reward(
            data={"paths": [str(root / "pairs.jsonl")], "validation_split": 0.0},
            from_run=str(sft_run.path),
            out=str(root / "reward-again"),
            overwrite=overwrite,
            trainer={"max_steps": 1, **TINY},
        )

    reward = train_reward()
    shutil.copytree(reward.path, root / "reward-it-trained-against")
    rl_run = alignkit.rl(
        from_run=str(sft_run.path),
        reward_run=str(reward.path),
        out=str(root / "grpo-resumed"),
        trainer={**RL_TINY, **TINY, "max_steps": 1, "save_steps": 1},
    )
    rl_run.update_manifest(status="interrupted")
    train_reward(overwrite=True)
    with pytest.raises(AlignkitError) as refused:
        alignkit.rl(out=str(rl_run.path), resume=True, trainer={"max_steps": 2})
    assert "reward run ../reward-again of" in str(refused.value) and "another run than the one" in str(refused.value)
    assert rl_run.metrics["global_step"] == 1 and rl_run.manifest["status"] == "interrupted"
    assert not lineage.trained_against(rl_run, reward.path)  # the model now there is not the one it trained against

    shutil.rmtree(reward.path)
    shutil.copytree(root / "reward-it-trained-against", reward.path)  # a copy of the very run is that run
    resumed = alignkit.rl(out=str(rl_run.path), resume=True, trainer={"max_steps": 2})
    assert resumed.complete and resumed.metrics["global_step"] == 2


def test_an_rl_run_with_weighted_rewards_resumes_with_its_own_config(sft_run, reward_run, root):
    """config.yaml records `rewards` with their weights and the trainer.reward_weights made from them: `--resume`
    (and `--config RUN/config.yaml`) was refused, "weights given both in `rewards` and in trainer.reward_weights"."""
    rl_run = alignkit.rl(
        from_run=str(sft_run.path),
        reward_run=str(reward_run.path),
        rewards={"reward_model": 1.0, "concise": 0.1},
        out=str(root / "grpo-weighted"),
        trainer={**RL_TINY, **TINY, "max_steps": 1, "save_steps": 1},
    )
    rl_run.update_manifest(status="interrupted")
    resumed = alignkit.rl(out=str(rl_run.path), resume=True, trainer={"max_steps": 2})
    assert resumed.complete and resumed.metrics["global_step"] == 2
    assert resumed.manifest["reward_weights"] == [1.0, 0.1]
