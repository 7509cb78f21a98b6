"""The main job: the whole loop on the embedded default, in one process (model files and TRL loaded once).

SFT -> generate candidates -> push to Argilla -> simulated annotators rate through Argilla (a hidden rule + noise,
deterministic given the seed and each record's content) -> pull pairs -> reward model -> DPO [-> next round:
candidates from the DPO policy, the reward model's least certain prompts rated, reward and DPO retrained on every
pair] [-> GRPO, off by default] -> evaluate base, SFT, DPO (and RL) on held-out prompts -> report.json / report.md.

The rule (`careful` by default: not degenerate, then correct against the prompt's reference, then does what was
asked, then concise between answers that pass those checks; `judges.RULES`) reads each prompt's spec from
`datasets/prompts.jsonl`; swap it with `rule=`.
Everything it writes lands under `out/` (`runs/demo/`, a group folder the CLI's `runs`, the playground and the Runs
page list): the run directories (sft, reward, dpo), candidates, pairs, the Argilla data, eval/, the report. A rerun
into the same `out` replaces them (`prepare_out`).
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

import alignkit
from alignkit import evaluate, generate, jsonl, judges, lineage, models, runs
from alignkit.config import ModelConfig
from alignkit.errors import AlignkitError
from alignkit.feedback import client, ordering, pull, push, server, simulate
from alignkit.hardware import pick_precision
from alignkit.paths import bundled_data

console = Console(stderr=True, soft_wrap=True)
DEMO_ANNOTATORS = [("demo-annotator-1", "demo-annotator-1-pw"), ("demo-annotator-2", "demo-annotator-2-pw")]


@dataclass
class DemoConfig:
    """Knobs of the demo loop; defaults fit the whole loop in ~10 minutes on 2 CPU cores with native bf16 (562-567 s
    per seed in benchmarks/results/demo-seeds-2026-12-05-zen4-bf16-0bd7644.json)."""

    out: str = "runs/demo"  # a group folder of runs/: `alignkit runs` and `alignkit serve` list its runs
    model: str = "embedded"  # any model `--model` takes; the tests use a tiny one
    sft_data: str | None = None  # SFT chat file (default: the bundled datasets/sft.jsonl)
    # A finished `alignkit sft` run of `model` to start from instead of training one (the SFT settings, `SFT_SETTINGS`,
    # are then refused unless left at their defaults). The demo's SFT does not depend on its seed, so other seeds or
    # preference settings need not repeat it.
    sft_run: str | None = None
    prompts: str | None = None  # prompt file with specs, rated then held out (default: datasets/prompts.jsonl)
    # more held-out prompts, evaluated only (default with the bundled prompts: the 40 rows of datasets/sft_eval.jsonl)
    extra_eval_prompts: str | None = None
    rule: str = judges.DEFAULT_RULE
    noise: float = 0.1
    # 6, not 4: on the three seeds of 2026-12-04 (an Intel Sapphire Rapids VM), 4 candidates let DPO lose accuracy
    # (seed 0) or add a degenerate answer (seeds 1, 2), all three flagged; with 6 the best-vs-worst pairs are
    # clearer, and accuracy and degeneration held on every seed (benchmarks/results/demo-seeds-2026-12-04-spr*.json).
    candidates: int = 6
    # One of them is the policy's greedy reply, the answer evaluation scores, so the pairs speak about what the
    # policy says rather than only about its samples.
    greedy_candidate: bool = True
    # Rated in the round: 120 of the 200 bundled prompts. Two demos' pairs gave a reward model that ordered a third's
    # unseen pairs better than one demo's (0.794 against 0.669 on average, reward-more-prompts-2026-12-04.jsonl). On
    # three seeds of the 200-prompt file, 120 gave DPO two `better` verdicts and one `flagged`; 60 gave one each of
    # `better`, `no measurable difference` and `flagged` (benchmarks/results/demo-seeds-2026-12-04-prompts120.json,
    # demo-seeds-2026-12-04-prompts200-rate60.json).
    train_prompts: int = 120
    eval_prompts: int = 40  # from the prompt file, after the rated ones
    # After those, prompts for DPO's model selection (`alignkit dpo`'s `checked_prompts`), neither rated nor evaluated:
    # DPO's start, middle and end are checked on them, and an earlier step is saved only if it beats the last beyond
    # chance. Off (0): it costs three generation passes, and on seeds 0, 1 and 2 (2026-12-05, fp32 on an AVX2 CPU)
    # this rule kept the last step each time, so the demo's answers did not change (docs/preference-training.md,
    # where a first rule, "the best-scoring step", picked noise); 40 turns it on.
    checked_prompts: int = 0
    temperature: float = 0.8
    top_p: float = 0.95
    sft_steps: int = 96  # one epoch of datasets/sft.jsonl at batch 4: the skills have to be learnt to be judged
    sft_learning_rate: float = 3e-4
    # At batch 4, about 0.75 of an epoch of the 235-285 training pairs of 6-candidate rankings. Scored on the other
    # seeds' pairs of prompts it never saw (31-35 prompts each), 96 steps gave no more than 48 (0.670 against 0.671
    # on average, benchmarks/results/reward-transfer-2026-12-04.jsonl, rows nomargin and nm96) and took about 55 s
    # longer (hand-written, 2026-12-04: the file holds no times).
    reward_steps: int = 48
    # TRL's margin is the annotators' strength, here the distance of two candidates in a ranking (1-5). From the same
    # start, with and without it the reward model ordered unseen pairs alike (0.658 and 0.660 on average,
    # reward-transfer-2026-12-04.jsonl, rows seeded-margin and seeded-no-margin); off, as the committed three-seed
    # figures were measured (demo-seeds-2026-12-04-seeded.json).
    reward_margin: bool = False
    dpo_steps: int = 16
    # GRPO from the DPO policy against the reward model. Off: 3 steps left every held-out answer byte-identical to
    # DPO's (a hand-written note of 2026-12-01; no results file holds it), and steps that would move the policy do
    # not fit the 10-minute budget on 2 CPU cores.
    rl_steps: int = 0
    # Round 2+: candidates from the DPO policy; annotators rate the `round_records` prompts the reward model is least
    # sure about; reward and DPO retrain on every round's pairs.
    rounds: int = 1
    round_records: int = 16
    max_new_tokens: int = 48
    seed: int = 0
    sft_peft: dict[str, Any] = field(default_factory=dict)  # the SFT stage's `peft:` section (default: LoRA)
    sft: dict[str, Any] = field(default_factory=dict)  # extra `trainer:` keys per stage
    reward: dict[str, Any] = field(default_factory=dict)
    dpo: dict[str, Any] = field(default_factory=dict)
    rl: dict[str, Any] = field(default_factory=dict)


# The demo evaluates each model once, after training: no baseline evaluation, no best-checkpoint reload.
ONE_EVALUATION = {"eval_on_start": False, "load_best_model_at_end": False}
# What the demo's own SFT stage reads, and so what a reused `sft_run` leaves without effect.
SFT_SETTINGS = ("sft_data", "sft_steps", "sft_learning_rate", "sft_peft", "sft")


# The least each count may be: below it the loop fails (or trains a whole epoch: `max_steps=-1`) minutes in.
AT_LEAST = {
    **{"rounds": 1, "candidates": 2, "train_prompts": 1, "eval_prompts": 0, "checked_prompts": 0},
    **{"sft_steps": 1, "reward_steps": 1, "dpo_steps": 1, "rl_steps": 0, "round_records": 1, "max_new_tokens": 1},
}


# The demo's config keys, as its refusal of greedy candidates names them
DEMO_SAMPLING_NAMES = generate.SamplingNames(
    "`temperature`", "`candidates`", "--set temperature=0.8", "`greedy_candidate`", where="demo: "
)


def check(cfg: DemoConfig) -> None:
    """Refuse what the loop would only trip over after SFT, minutes in: a count out of range, an unknown rule, a noise
    that is not a probability, and a stage section (`sft`, `reward`, `dpo`, `rl`: `trainer:` keys; `sft_peft`) that
    its stage would refuse."""
    from alignkit.config import DPOStageConfig, RLStageConfig, check_section
    from alignkit.stages import dpo, reward, rl, sft

    defaults = DemoConfig()
    for name, least in AT_LEAST.items():
        if getattr(cfg, name) < least:
            raise AlignkitError(
                f"demo: `{name}` must be at least {least}, got {getattr(cfg, name)}",
                f"e.g. --set {name}={getattr(defaults, name)}",
            )
    if not 0 <= cfg.noise <= 1:
        raise AlignkitError(f"demo: `noise` is a probability (0 to 1), got {cfg.noise}", "e.g. --noise 0.1")
    judges.rule(cfg.rule)
    sampling = generate.Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens)  # checks them
    generate.check_distinct(cfg.candidates, sampling, DEMO_SAMPLING_NAMES)
    stages = {"sft": sft.RECIPE, "reward": reward.RECIPE, "dpo": dpo.RECIPE, "rl": rl.RECIPE}
    stage_cfgs = {"dpo": DPOStageConfig(), "rl": RLStageConfig()}
    for section, recipe in stages.items():
        _, config_cls = recipe.classes(stage_cfgs.get(section))
        check_section(section, getattr(cfg, section), config_cls)
    if cfg.sft_peft:
        models.peft_config(cfg.sft_peft)


DEMO_MARKER = "alignkit-demo.json"  # written first into a demo's `out`: a rerun may replace what that demo wrote
# What a demo writes into `out`, by name: the runs, prompts, candidates, pairs, eval/ and the report (not argilla/)
DEMO_OUTPUTS = re.compile(
    r"(sft|rl|eval|report\.json|report\.md|(train|heldout|checked)_prompts\.jsonl"
    r"|(reward|dpo)(-round-\d+)?|(candidates|pairs|pairs-best-worst)(-round-\d+)?\.jsonl)"
)


def prepare_out(out: Path, keep: Path | None = None) -> None:
    """`out` made ready for this demo: new or empty, or an earlier demo's, whose outputs (`DEMO_OUTPUTS`) are removed
    so none of its files (a second round's, say) is read as this one's; its Argilla data, the reused SFT run `keep`
    and anything else put there are kept. A folder that holds no demo is refused: runs by the demo's names would be
    replaced (`--out runs` would replace your own `runs/sft`)."""
    if out.exists() and not out.is_dir():
        raise AlignkitError(f"{out}: is a file, not an output directory", "pass a directory path to --out")
    if out.is_dir() and any(out.iterdir()):
        earlier_demo = (out / DEMO_MARKER).is_file() or all(
            (out / f).is_file() for f in ("report.json", "train_prompts.jsonl")
        )
        if not earlier_demo:
            raise AlignkitError(
                f"{out}: holds other things than an earlier demo (no {DEMO_MARKER}), and the demo writes runs by "
                "fixed names (sft, reward, dpo, ...) there",
                "pass a new or empty --out, e.g. runs/demo",
            )
        kept = keep.resolve() if keep else None
        for entry in out.iterdir():
            if DEMO_OUTPUTS.fullmatch(entry.name) and not (kept and kept.is_relative_to(entry.resolve())):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text(json.dumps({"demo": alignkit.__version__}) + "\n", encoding="utf-8")


def run(cfg: DemoConfig) -> dict[str, Any]:
    """Run the loop and return (and write) the report."""
    check(cfg)
    started = time.time()
    if cfg.sft_run:
        defaults = DemoConfig()
        unused = [
            f"{name}={getattr(cfg, name)!r}" for name in SFT_SETTINGS if getattr(cfg, name) != getattr(defaults, name)
        ]
        if unused:
            raise AlignkitError(
                f"sft_run={cfg.sft_run}: {', '.join(unused)} would have no effect: the reused run is trained already",
                "drop those settings, or drop sft_run to train SFT with them",
            )
    reused_sft = finished_sft(cfg.sft_run, cfg.model) if cfg.sft_run else None
    out = Path(cfg.out)
    timings: dict[str, float] = {}

    def step(name: str) -> None:
        timings[name] = round(time.time() - started - sum(timings.values()), 1)
        console.print(f"[bold green]✓[/] {name} ({timings[name]} s)")

    prompts = generate.load_prompt_items(cfg.prompts or str(bundled_data("prompts.jsonl")), "prompts")
    random.Random(cfg.seed).shuffle(prompts)
    train_prompts = prompts[: cfg.train_prompts]
    heldout_prompts = prompts[cfg.train_prompts :][: cfg.eval_prompts]
    checked_prompts = prompts[cfg.train_prompts + cfg.eval_prompts :][: cfg.checked_prompts]
    if not any(p.spec.checkable for p in checked_prompts):  # a prompt file without references: DPO's last step
        checked_prompts = []
    dpo_eval_steps = max(1, cfg.dpo_steps // 2) if checked_prompts else cfg.dpo_steps  # checked mid-way too
    extra = cfg.extra_eval_prompts or (None if cfg.prompts else str(bundled_data("sft_eval.jsonl")))
    heldout_prompts += evaluate.load_eval_prompts(extra, "extra_eval_prompts") if extra else []
    if not heldout_prompts:
        raise AlignkitError(
            f"demo: no prompt left to evaluate: the {len(prompts)} prompts are all rated (train_prompts="
            f"{cfg.train_prompts}) and no extra_eval_prompts are given",
            "lower train_prompts, raise eval_prompts, or pass extra_eval_prompts",
        )
    prepare_out(out, Path(cfg.sft_run) if cfg.sft_run else None)
    write_prompts(out / "train_prompts.jsonl", train_prompts)
    write_prompts(out / "heldout_prompts.jsonl", heldout_prompts)
    if checked_prompts:
        write_prompts(out / "checked_prompts.jsonl", checked_prompts)

    precision = pick_precision()
    if precision.device == "cpu" and precision.dtype == "float32":
        console.print(
            f"[yellow]fp32[/]: {precision.reason}. The demo's ~10 minutes on 2 cores were measured with bf16 "
            "(AMX); in fp32 on 2 AVX2 cores one took 40 minutes (docs/preference-training.md)."
        )

    sft_run = reused_sft or train_sft(cfg, out / "sft")
    step("sft")

    with ExitStack() as stack:
        if os.environ.get("ARGILLA_API_URL"):
            owner, (url, _) = client.connect(), client.server_location()
        else:
            local = stack.enter_context(server.start(data_dir=out / "argilla"))
            owner, url = client.connect(local.url, local.api_key), local.url
        for username, password in DEMO_ANNOTATORS:
            client.add_user(owner, username, password, "annotator", ["demo"])
        step("argilla")
        policy, reward_run, dpo_run, pairs, dpo_pairs, summaries = sft_run, None, None, [], [], []
        for round_number in range(1, cfg.rounds + 1):
            suffix = "" if round_number == 1 else f"-round-{round_number}"
            pulled = collect_round(cfg, out, policy, reward_run, round_number, owner, str(url), int(started), step)
            summaries.append(pulled.summary)
            pairs += pulled.pairs
            if not pairs:
                raise AlignkitError(
                    f"round {round_number} gave no preference pairs (every comparison a tie or a disagreement)",
                    "use more --candidates, a longer max_new_tokens or another rule",
                )
            pairs_file = out / f"pairs{suffix}.jsonl"
            pull.write_pairs(pairs_file, pairs, overwrite=True)
            # The reward model learns from every decided pair; DPO from each prompt's best vs worst candidate (the
            # rule's clearest signal, two epochs in 16 steps): under `careful` it won more than every pair did
            # (docs/preference-training.md)
            dpo_pairs_file = out / f"pairs-best-worst{suffix}.jsonl"
            dpo_pairs = pull.best_vs_worst(pairs)
            pull.write_pairs(dpo_pairs_file, dpo_pairs, overwrite=True)
            reward_run = alignkit.reward(
                data={"paths": [str(pairs_file)], "validation_split": 0.2},
                from_run=str(sft_run.path),
                use_margin=cfg.reward_margin,
                out=str(out / f"reward{suffix}"),
                overwrite=True,
                early_stopping_patience=None,
                # Held-out accuracy is scored once at the end (metrics.json); no Trainer evaluation in between.
                # lr 3e-4: at 1e-3 it memorised its ~100 pairs (prompt-disjoint accuracy 0.41 / 0.87 / 0.48 on the
                # three seeds' pairs of 2026-12-03; 0.52 / 0.97 / 0.68 at 3e-4; docs/preference-training.md).
                trainer={"max_steps": cfg.reward_steps, "learning_rate": 3e-4, "eval_strategy": "no", **ONE_EVALUATION}
                | cfg.reward,
            )
            step(f"reward{suffix}")
            dpo_run = policy = alignkit.dpo(
                data={"paths": [str(dpo_pairs_file)], "validation_split": 0.1},
                from_run=str(sft_run.path),
                out=str(out / f"dpo{suffix}"),
                overwrite=True,
                early_stopping_patience=None,
                # DPO plus the NLL of the chosen answers (TRL's "sft" loss), at a constant lr of 1e-4: on seed 0's
                # pairs, plain DPO at 3e-4 made answers shorter and wrong (held-out accuracy 0.50 -> 0.30);
                # this kept accuracy and degeneration level (docs/preference-training.md).
                **({"checked_prompts": str(out / "checked_prompts.jsonl")} if checked_prompts else {}),
                checked_max_new_tokens=cfg.max_new_tokens,
                trainer={"max_steps": cfg.dpo_steps, "eval_steps": dpo_eval_steps}
                | {"learning_rate": 1e-4, "lr_scheduler_type": "constant"}
                | {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 1.0]}
                | ONE_EVALUATION
                | cfg.dpo,
            )
            step(f"dpo{suffix}")
    assert reward_run is not None and dpo_run is not None
    rl_run = None
    if cfg.rl_steps:
        rl_run = alignkit.rl(
            data={"paths": [str(out / "train_prompts.jsonl")]},
            from_run=str(dpo_run.path),
            reward_run=str(reward_run.path),
            out=str(out / "rl"),
            overwrite=True,
            early_stopping_patience=None,
            trainer={"max_steps": cfg.rl_steps, "max_completion_length": cfg.max_new_tokens} | cfg.rl,
        )
        step("rl")

    policies = {"sft": sft_run, "dpo": dpo_run, **({"rl": rl_run} if rl_run else {})}
    evaluation = evaluate_policies(policies, reward_run, heldout_prompts, cfg, out / "eval")
    step("eval")
    aligned = "rl" if rl_run else "dpo"
    headline = evaluation["comparisons"]["dpo vs sft"]
    figures = evaluation["runs"]
    report = {
        "reward_accuracy": reward_run.metrics.get("pairwise_accuracy"),  # validation prompts never trained on
        "reward_shared_prompts": reward_run.metrics.get("shared_prompts"),
        "reward_eval_pairs": reward_run.metrics.get("scored_pairs"),
        "reward_eval_prompts": reward_run.metrics.get("eval_prompts"),
        "reward_accuracy_interval": reward_run.metrics.get("accuracy_interval_95"),  # resampling prompts
        "win_rate_vs_sft": headline["oracle"]["win_rate"],
        "win_rate_vs_sft_interval": headline["oracle"]["interval_95"],
        "win_rate_vs_sft_reward_model": headline["reward_model"]["win_rate"],
        "verdict": headline["verdict"],  # better / no measurable difference / flagged / worse
        "accuracy": {name: f["accuracy"] for name, f in figures.items()},
        "checked_prompts": {name: f["checked_prompts"] for name, f in figures.items()},  # accuracy's denominators
        "degenerate_rate": {name: f["degenerate_rate"] for name, f in figures.items()},
        "mean_words": {name: f["mean_words"] for name, f in figures.items()},
        "forgetting_ppl_ratio": figures[aligned]["forgetting"]["ppl_ratio"],
        "alarms": {subject: found for subject, found in evaluation["alarms"].items() if found},
        "seconds_total": round(time.time() - started, 1),
        "seconds_per_stage": timings,
        "pairs": summaries[0] if len(summaries) == 1 else {"rounds": summaries, "pairs": len(pairs)},
        "dpo_pairs": len(dpo_pairs),
        # what DPO's model selection scored on the checked prompts at each step, and the step it saved
        "dpo_checked_steps": dpo_run.metrics.get("checked_steps"),
        "dpo_kept_step": dpo_run.metrics.get("checked_kept_step"),
        "evaluation": evaluation,
        "rl": rl_summary(rl_run) if rl_run else None,
        "runs": {
            "sft": str(sft_run.path),
            "reward": str(reward_run.path),
            "dpo": str(dpo_run.path),
            **({"rl": str(rl_run.path)} if rl_run else {}),
        },
        "config": asdict(cfg),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "report.md").write_text(
        f"# alignkit demo (rule `{cfg.rule}`, seed {cfg.seed})\n\n"
        f"Reward model, prompt-disjoint held-out pairs: accuracy {report['reward_accuracy']:.3f} "
        f"({reward_held_out(report)}). "
        f"Plots: `eval/accuracy.png`, `eval/win_rate.png`; every answer: `eval/answers.jsonl`.\n\n"
        f"DPO's model selection: {dpo_selection(report)}.\n\n"
        + evaluate.report_markdown(evaluation, images="eval/").removeprefix("# alignkit evaluation\n"),
        encoding="utf-8",
    )
    return report


def dpo_selection(report: dict[str, Any]) -> str:
    """Which DPO step was saved and what each checked step scored (accuracy, degenerate rate), as the console and
    report.md print it."""
    steps = report["dpo_checked_steps"]
    if not steps:
        return "off (no checked prompts), the last step saved"
    scored = ", ".join(f"{step}: {f['accuracy']:.3f} / {f['degenerate_rate']:.3f}" for step, f in steps.items())
    return f"step {report['dpo_kept_step']} saved; accuracy / degenerate rate on the checked prompts by step: {scored}"


def train_sft(cfg: DemoConfig, run_dir: Path) -> runs.Run:
    """The demo's SFT stage on `cfg.sft_data` (default: the bundled chats), into `run_dir`."""
    return alignkit.sft(
        data={"paths": [cfg.sft_data or str(bundled_data("sft.jsonl"))], "validation_split": 0.05},
        model={"name": cfg.model},
        **({"peft": cfg.sft_peft} if cfg.sft_peft else {}),
        out=str(run_dir),
        overwrite=True,
        early_stopping_patience=None,
        trainer={"max_steps": cfg.sft_steps, "eval_steps": cfg.sft_steps, **ONE_EVALUATION}
        | {"learning_rate": cfg.sft_learning_rate, "lr_scheduler_type": "constant"}
        | cfg.sft,
    )


def finished_sft(path: str, model: str) -> runs.Run:
    """The finished SFT run at `path`, refused unless it was trained on `model` (the base the demo evaluates)."""
    run = runs.open_run(path)
    if run.stage != "sft":
        raise AlignkitError(f"sft_run={path}: is a {run.stage} run, not an SFT run", "pass a run of `alignkit sft`")
    trained_on = run.model_config.name
    if trained_on != model and not (Path(model).exists() and Path(trained_on).resolve() == Path(model).resolve()):
        raise AlignkitError(
            f"sft_run={path}: was trained on model {trained_on!r}, the demo's model is {model!r}",
            f"pass --model {trained_on}, or drop sft_run to train SFT on {model}",
        )
    return run


def reward_held_out(report: dict[str, Any]) -> str:
    """What the reward accuracy rests on, as the console and report.md print it: its 95 % interval over prompts and
    the held-out pairs and prompts."""
    low, high = report["reward_accuracy_interval"]
    pairs, prompts = report["reward_eval_pairs"], report["reward_eval_prompts"]
    return f"[{low:.3f}, {high:.3f}] resampling prompts; {pairs} pairs from {prompts} prompts"


def collect_round(
    cfg: DemoConfig,
    out: Path,
    policy: runs.Run,
    reward_run: runs.Run | None,
    round_number: int,
    owner: Any,
    url: str,
    stamp: int,
    step: Callable[[str], None],
) -> pull.PullResult:
    """One collection round: candidates from the current policy, pushed to Argilla (after round 1 ordered by the
    reward model's uncertainty, and only the `round_records` least certain prompts rated), rated, pulled."""
    name = "candidates.jsonl" if round_number == 1 else f"candidates-round-{round_number}.jsonl"
    candidates_file = generate.run(
        str(out / "train_prompts.jsonl"),
        str(out / name),
        n=cfg.candidates,
        from_run=str(policy.path),
        sampling=generate.Sampling(
            cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.seed + round_number - 1, cfg.greedy_candidate
        ),
        # 128 sequences per call. 60 prompts x 4 x 48 tokens on 2 CPU cores (hand-timed once each, 2026-12-02): 53 s at
        # 20 per call, 54 s at 30, 49 s at all 60; 32 keeps the KV cache modest for larger models.
        batch_size=32,
        overwrite=True,
    )
    suffix = "" if round_number == 1 else f"-round-{round_number}"
    step(f"generate{suffix}")
    scorer = ordering.reward_scorer(str(reward_run.path)) if reward_run else None
    dataset = f"demo-round-{round_number}-{stamp}"
    push.push(str(candidates_file), dataset, "demo", round_number, 2, cfg.seed, client=owner, scorer=scorer)
    limit = None if round_number == 1 else cfg.round_records
    answer_key = simulate.load_answer_key(str(out / "train_prompts.jsonl"))
    for i, (username, password) in enumerate(DEMO_ANNOTATORS):
        session = client.annotator_session(username, password, url=url)
        simulate.rate_all(session, dataset, cfg.rule, cfg.noise, cfg.seed + i, limit, answer_key)
    pulled = pull.pull(dataset, "demo", client=owner)
    step(f"annotate{suffix}")
    return pulled


def rl_summary(rl_run: runs.Run) -> dict[str, Any]:
    """The short GRPO's figures: steps, reward at the first and last step, KL to its reference (the DPO policy)."""
    keys = ("global_step", "reward_start", "reward_end", "kl", "completion_length_end")
    return {key: rl_run.metrics.get(key) for key in keys}


def evaluate_policies(
    policies: dict[str, runs.Run], reward_run: runs.Run, prompts: list[judges.Prompt], cfg: DemoConfig, out: Path
) -> dict[str, Any]:
    """Base and each policy answer the held-out prompts greedily; `evaluate.evaluate_models` checks and compares them
    (each with the one before it: sft vs base, dpo vs sft, rl vs dpo) and writes eval/."""
    base_cfg = ModelConfig(name=cfg.model)

    def load_base() -> tuple[Any, Any]:
        return models.load_base(base_cfg, pick_precision()), models.load_tokenizer(base_cfg)

    general = evaluate.read_texts(bundled_data("general_heldout.jsonl"), limit=40)  # a stable perplexity in seconds
    to_evaluate = [
        ("base", load_base),
        *((name, functools.partial(lineage.load_inference_model, run.path)) for name, run in policies.items()),
    ]
    on_scorer = [name for name, run in policies.items() if lineage.trained_against(run, reward_run.path)]
    results, rows = evaluate.evaluate_models(
        to_evaluate,
        prompts,
        general,
        lineage.load_scorer(reward_run.path),
        cfg.rule,
        cfg.max_new_tokens,
        trained_on_scorer=on_scorer,
    )
    evaluate.write_report(out, results, rows, overwrite=True)  # a rerun of the demo replaces its eval/
    return results


def write_prompts(path: Path, prompts: list[judges.Prompt]) -> None:
    """The round's prompts with their specs and tools, in the prompt-file format `generate` reads."""
    rows = [
        {"prompt": p.messages, **json.loads(p.spec.to_json()), **({"tools": p.tools} if p.tools else {})}
        for p in prompts
    ]
    jsonl.write_jsonl(path, rows, overwrite=True)
