"""alignkit: generate -> rate -> pairs -> reward -> DPO/RL -> rate again, on one PEFT-adapted base model.

The Python API mirrors the CLI: each stage takes an optional YAML config, `key=value` overrides and keyword sections,
and returns a `Run` with `.path` and `.metrics` (its model: `alignkit.lineage.load_run_model(run.path)`). The rest of
the loop (candidates, Argilla rounds, simulated ratings, evaluation, chatting with a run) has one function each here
too; the CLI and the notebooks call these.

    run = alignkit.sft(data={"paths": ["datasets/sft.jsonl"]}, trainer={"max_steps": 20})
    alignkit.chat("What is compost?", run=run.path)

Each function imports the alignkit modules it needs when called, for start-up time: `import alignkit` loads almost
nothing. This facade and `cli.py` may import any module that way; every other module's imports, at the top or inside
functions, form an acyclic graph (`tests/unit/test_imports.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignkit.errors import AlignkitError, python_api

if TYPE_CHECKING:
    from collections.abc import Sequence

    from alignkit.feedback.pull import PullResult
    from alignkit.playground import ModelPool
    from alignkit.runs import Run

__version__ = "0.1.0"
__all__ = [
    "AlignkitError",
    "candidates",
    "chat",
    "dpo",
    "evaluate_runs",
    "export_run",
    "list_runs",
    "open_run",
    "pretrain",
    "pull",
    "push",
    "reward",
    "rl",
    "sft",
    "simulate_ratings",
]


def __getattr__(name: str) -> Any:
    """`alignkit.lineage`, `alignkit.dashboard`, ...: a submodule imported on first use, as the docs write it
    (`alignkit.lineage.load_run_model(run.path)`), in a kernel where nothing has imported it yet."""
    import importlib
    import importlib.util

    if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


@python_api
def sft(config: str | Path | None = None, overrides: list[str] | None = None, **sections: Any) -> Run:
    """Supervised fine-tuning on chat files (`data={"paths": [...]}`, any format of the README's table); returns the
    finished `Run`. `config`: a YAML file; `overrides`: `key=value` strings as `--set` takes them; `sections`: the
    fields of `config.SFTStageConfig` (`data`, `model`, `peft`, `trainer` for TRL's `SFTConfig`, `from_run`, `out`,
    `resume`, `overwrite`, ...), in that order of precedence: config, sections, overrides."""
    from alignkit.config import SFTStageConfig, load_config
    from alignkit.stages import sft as stage

    return stage.run(load_config(SFTStageConfig, config, sections, overrides, values_from="arguments"))


@python_api
def pretrain(config: str | Path | None = None, overrides: list[str] | None = None, **sections: Any) -> Run:
    """Continued pretraining on raw text files; returns the finished `Run`. Arguments as `sft`'s, the sections being
    the fields of `config.PretrainStageConfig`."""
    from alignkit.config import PretrainStageConfig, load_config
    from alignkit.stages import pretrain as stage

    return stage.run(load_config(PretrainStageConfig, config, sections, overrides, values_from="arguments"))


@python_api
def reward(config: str | Path | None = None, overrides: list[str] | None = None, **sections: Any) -> Run:
    """A reward model from preference pairs, on a policy run (`from_run`); returns the finished `Run` (score answers
    with `lineage.load_scorer(run)`). Arguments as `sft`'s, the sections being the fields of
    `config.RewardStageConfig` (`trainer` for TRL's `RewardConfig`)."""
    from alignkit.config import RewardStageConfig, load_config
    from alignkit.stages import reward as stage

    return stage.run(load_config(RewardStageConfig, config, sections, overrides, values_from="arguments"))


@python_api
def dpo(config: str | Path | None = None, overrides: list[str] | None = None, **sections: Any) -> Run:
    """DPO (`method`: kto, simpo, orpo) on preference pairs, continuing a policy run (`from_run`, also the reference);
    returns the finished `Run`. Arguments as `sft`'s, the sections being the fields of `config.DPOStageConfig`
    (`trainer` for TRL's `DPOConfig`, ...)."""
    from alignkit.config import DPOStageConfig, load_config
    from alignkit.stages import dpo as stage

    return stage.run(load_config(DPOStageConfig, config, sections, overrides, values_from="arguments"))


@python_api
def rl(config: str | Path | None = None, overrides: list[str] | None = None, **sections: Any) -> Run:
    """Online RL (`method`: grpo, rloo) of a policy run (`from_run`) against a reward run (`reward_run`) and/or rule
    rewards (`rewards`); returns the finished `Run`. Arguments as `sft`'s, the sections being the fields of
    `config.RLStageConfig` (`trainer` for TRL's `GRPOConfig` / `RLOOConfig`)."""
    from alignkit.config import RLStageConfig, load_config
    from alignkit.stages import rl as stage

    return stage.run(load_config(RLStageConfig, config, sections, overrides, values_from="arguments"))


@python_api
def open_run(path: str | Path) -> Run:
    """A finished run directory (`.path`, `.metrics`, `.manifest`; its model: `lineage.load_run_model(run.path)`)."""
    from alignkit import runs

    return runs.open_run(path)


@python_api
def list_runs(runs_dir: str | Path | None = None) -> list[Run]:
    """Every run directory under `runs_dir` (default `runs`, where a missing one only means no run yet), oldest
    first; a `runs_dir` given that does not exist is refused (a typo is not "no runs")."""
    from alignkit import runs

    if runs_dir is not None and not Path(runs_dir).expanduser().is_dir():
        raise AlignkitError(f"runs_dir={str(runs_dir)!r}: no such directory", "pass the folder your runs are in")
    return runs.list_runs(Path(runs_dir or "runs").expanduser())


_chat_models: ModelPool | None = None


@python_api
def chat(
    messages: str | list[dict[str, str]],
    run: str | Path | None = None,
    model: str = "embedded",
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 0.95,
    seed: int = 0,
) -> str:
    """One reply from a run (or the bare base `model`), as the playground gives it; models stay loaded between calls.
    `temperature=0` is greedy. A reward run, or a `model` beside a run other than its base, is refused."""
    from alignkit import playground, runs
    from alignkit.config import EMBEDDED_MODEL
    from alignkit.generate import Sampling

    global _chat_models
    _chat_models = _chat_models or playground.ModelPool()
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    messages = playground.checked_messages(messages)
    if run is not None:
        runs.open_policy(run, None if model == EMBEDDED_MODEL else model, key="run")
    key = str(run) if run is not None else playground.BASE_PREFIX + model
    sampling = Sampling(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    return playground.reply(_chat_models, key, messages, sampling)


@python_api
def candidates(
    prompts: str | Path,
    out: str | Path,
    n: int = 4,
    from_run: str | Path | None = None,
    model: str | None = None,
    temperature: float = 0.8,
    top_p: float = 0.95,
    max_new_tokens: int = 128,
    seed: int = 0,
    batch_size: int = 16,
    limit: int | None = None,
    overwrite: bool = False,
    greedy_first: bool = False,
    backend: str = "transformers",
    resume: bool = False,
) -> Path:
    """`alignkit generate`: N distinct candidates per prompt from a run (or the base) to a JSONL file; with
    `greedy_first`, the first is the greedy reply (the answer evaluation sees) and the other N-1 are sampled.
    `resume` continues an interrupted generation (`out.partial`); `backend`: transformers or vllm."""
    from alignkit import generate

    sampling = generate.Sampling(temperature, top_p, max_new_tokens, seed, greedy_first)
    run_dir = str(from_run) if from_run is not None else None
    return generate.run(
        str(prompts), str(out), n, run_dir, model, sampling, batch_size, limit, overwrite, backend, resume
    )


@python_api
def push(
    candidates_file: str | Path,
    dataset: str,
    workspace: str = "alignkit",
    min_submitted: int = 1,
    round_number: int | None = None,
    seed: int = 0,
    append: bool = False,
    reward_run: str | Path | None = None,
    client: Any = None,
) -> dict[str, Any]:
    """`alignkit feedback push`: one Argilla dataset per collection round; `reward_run` orders it (active learning)."""
    from alignkit.feedback import ordering
    from alignkit.feedback import push as rounds

    scorer = ordering.reward_scorer(str(reward_run)) if reward_run else None
    return rounds.push(
        str(candidates_file), dataset, workspace, round_number, min_submitted, seed, append, client, scorer
    )


@python_api
def simulate_ratings(
    dataset: str,
    annotators: list[tuple[str, str]],
    rule: str = "careful",
    noise: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    url: str | None = None,
    answer_key: str | Path | None = None,
) -> dict[str, int]:
    """`alignkit feedback simulate`: oracle annotators (username, password) rate through Argilla with a rule plus
    noise, checking answers against `answer_key` (a prompt or candidates file with prompt specs); returns responses
    submitted per annotator."""
    from alignkit.feedback import client, simulate

    key = simulate.load_answer_key(str(answer_key)) if answer_key else None
    done = {}
    for username, password in annotators:
        session = client.annotator_session(username, password, url)
        done[username] = simulate.rate_all(session, dataset, rule, noise, seed, limit, key)
    return done


@python_api
def pull(
    dataset: str,
    out: str | Path,
    workspace: str = "alignkit",
    ties: str = "drop",
    min_agreement: float = 0.0,
    min_annotators: int = 1,
    overwrite: bool = False,
    client: Any = None,
    pairing: str = "all",
) -> PullResult:
    """`alignkit feedback pull`: submitted ratings -> preference pairs in `out` (JSONL) and `out`.summary.json;
    `pairing="best-worst"` keeps one pair per record, the widest."""
    import json

    from alignkit.feedback import pull as rounds
    from alignkit.jsonl import check_output_file

    check_output_file(Path(out), overwrite)  # before the server is asked
    result = rounds.pull(dataset, workspace, ties, min_agreement, min_annotators, client, pairing)
    rounds.check_decided(result, workspace, min_agreement)
    rounds.write_pairs(Path(out), result.pairs, overwrite=overwrite)
    Path(out).with_suffix(".summary.json").write_text(json.dumps(result.summary, indent=2) + "\n")
    return result


@python_api
def evaluate_runs(
    runs: list[str | Path],
    out: str | Path = "eval",
    prompts: str | Path | None = None,
    general: str | Path | None = None,
    reward_run: str | Path | None = None,
    rule: str | None = "careful",
    max_new_tokens: int = 64,
    limit: int | None = None,
    overwrite: bool = False,
    baseline: str | Path | None = None,
    compare: Sequence[str] = (),
    resume: bool = False,
) -> dict[str, Any]:
    """`alignkit eval`: the base and every run answer held-out prompts (default: bundled sft_eval.jsonl); each is
    compared with the one before it, or with `baseline` (`"base"` or one of `runs`), and/or as `compare` names
    (`"runs/dpo-b vs runs/dpo-a"`): win-rates with intervals, KL, verdicts; alarms are each model's against its
    nearest evaluated ancestor; all are compared with the base for forgetting. Writes eval.json, answers.jsonl,
    report.md and plots to `out`: a new or empty directory, or with `overwrite` an earlier evaluation's, replaced
    whole. Answers are saved in `out` as they are made: `resume=True` continues an interrupted evaluation."""
    from alignkit import evaluate
    from alignkit.paths import bundled_data

    return evaluate.run_eval(
        [str(r) for r in runs],
        str(out),
        str(prompts or bundled_data("sft_eval.jsonl")),
        str(general or bundled_data("general_heldout.jsonl")),
        str(reward_run) if reward_run else None,
        rule,
        max_new_tokens,
        limit=limit,
        overwrite=overwrite,
        baseline=str(baseline) if baseline else None,
        compare=list(compare),
        resume=resume,
    )


@python_api
def export_run(
    run: str | Path,
    out: str | Path,
    dtype: str = "auto",
    gguf: bool = False,
    gguf_type: str = "f16",
    overwrite: bool = False,
) -> Path:
    """`alignkit export`: the run's model (its base with every adapter of its lineage merged) saved to `out` as a
    plain transformers model dir (safetensors; `from_pretrained` loads it), in `dtype` (auto: the run's training
    precision | fp32 | bf16 | fp16); `gguf` also writes a GGUF file of `gguf_type`. Returns `out`."""
    from alignkit import export

    return export.export(run, out, dtype=dtype, gguf=gguf, gguf_type=gguf_type, overwrite=overwrite)
