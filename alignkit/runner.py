"""The one stage runner: resume -> validate -> plan -> create -> load -> train -> save -> finish, for every training
stage. A stage module declares only what is its own, as a `Recipe`: its TRL trainer and config, how its rows load,
its model head, whether it continues its parent's policy (and with it the reference), its trainer defaults and
checks, its manifest fields, how its trainer is built, and its final metrics.

Everything is validated (data files, config keys, trainer arguments, the model) before the run directory exists;
a stage refused while it loads the model leaves none behind (`Run.removed_if_refused`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit import data, distributed, hardware, lineage, models, runs, training
from alignkit.config import EMBEDDED_MODEL, TrainStageConfig
from alignkit.data import preferences
from alignkit.errors import AlignkitError, command, first_line, option

Rows = list[dict[str, Any]]


@dataclass
class Plan:
    """What the runner settled for one run; a recipe's hooks read it. `run`, `args`, `model` and `tokenizer` are
    filled in as the runner gets to them (`build` and `final_metrics` see them all)."""

    cfg: Any
    path: Path  # the run directory to be
    parent: runs.Run | None
    train_rows: Rows
    eval_rows: Rows
    files: list[str]
    trainer_cls: type[Any]
    config_cls: type[Any]
    continues: bool  # the stage keeps training its parent's adapter (TRL freezes a copy as the reference)
    peft_config: Any  # the new adapter's peft config; None when it continues or trains every weight
    validation: str  # where the validation rows came from (`data.load_split`)
    run: runs.Run | None = None
    args: Any = None
    model: Any = None
    tokenizer: Any = None
    left_out: dict[str, int] = dataclasses.field(default_factory=dict)  # examples TRL dropped as too long, by split
    cut: dict[str, int] = dataclasses.field(default_factory=dict)  # examples TRL kept but cut at max_length, by split

    @property
    def full(self) -> bool:
        """Every weight trains (`peft.method: full`)."""
        return self.peft_config is None and not self.continues


def row_counts(plan: Plan) -> dict[str, Any]:
    left_out = {"examples_too_long": plan.left_out} if plan.left_out else {}
    left_out |= {"examples_cut": plan.cut} if plan.cut else {}
    counts = {"train_rows": len(plan.train_rows), "eval_rows": len(plan.eval_rows), "validation": plan.validation}
    return counts | left_out


def pairs_origin(plan: Plan) -> dict[str, Any]:
    """The manifest's `pairs_origin`: the pulled datasets, rounds and candidate runs of a preference stage's rows."""
    found = preferences.pairs_origin(plan.train_rows + plan.eval_rows, plan.path)
    return {"pairs_origin": found} if found else {}


@dataclass(frozen=True)
class Recipe:
    """What a stage declares; `run` does the rest."""

    stage: str
    classes: Callable[[Any], tuple[type[Any], type[Any]]]  # cfg -> (TRL trainer, its config class)
    # (cfg, data files, how to treat failing rows: `data.skip_bad_rows`) -> rows, each file validated
    load_rows: Callable[[Any, list[str], data.BadRows], Rows]
    build: Callable[[Plan], Any]  # -> the TRL trainer
    head: str = "causal-lm"  # or lineage.REWARD_HEAD
    # `data.streaming`: (cfg, `data.skip_bad_rows`) -> `data.load_split`'s four values, the training rows a
    # `data.TextStream`
    load_stream: Callable[[Any, data.BadRows], tuple[Any, Rows, list[str], str]] | None = None
    needs_policy: bool = False  # `--from` a policy is required, and its adapter is continued unless `peft:` is set
    prepare: Callable[[Any], Any] = lambda cfg: cfg  # checks and defaults of cfg before any data loads
    trainer_defaults: Callable[[Plan], dict[str, Any]] = lambda plan: {}  # under the user's `trainer:` keys
    check: Callable[[Plan, Any], None] = lambda plan, args: None  # what TRL would only refuse once training starts
    manifest: Callable[[Plan], dict[str, Any]] = lambda plan: {}
    counts: Callable[[Plan], dict[str, Any]] = row_counts  # figures of the data, into metrics.json
    final_metrics: Callable[[Any, Plan], dict[str, Any]] | None = None  # (trainer, plan) -> figures of the model
    # False where `final_metrics` scores the validation rows itself: TRL's last evaluation would score them again
    final_evaluation: bool = True


def run(recipe: Recipe, cfg: TrainStageConfig) -> runs.Run:
    """Train `recipe`'s stage with `cfg` and return the finished run (resumed with `cfg.resume`)."""
    cfg, resume_changes = training.resolve_resume(recipe.stage, cfg)
    cfg = recipe.prepare(cfg)
    parent = parent_run(recipe, cfg.from_run, cfg.model.name)
    if parent:
        cfg = dataclasses.replace(cfg, model=training.parent_model_config(cfg.model, parent))
    bad_rows = data.BadRows(skip=cfg.data.skip_bad_rows)
    train_rows, eval_rows, files, validation = load_data(recipe, cfg, bad_rows)
    rows = {"train": data.rows_digest(train_rows), "validation": data.rows_digest(eval_rows)}
    training.check_rows_as_started(resume_changes.run, rows, validation)  # before a stage shuffles them (KTO)
    path = runs.plan_path(recipe.stage, cfg)
    precision = hardware.pick_precision(cfg.model.precision)
    continues = recipe.needs_policy and not cfg.peft and parent is not None and parent.adapter_dir.is_dir()
    task_type = "CAUSAL_LM" if recipe.head == "causal-lm" else "SEQ_CLS"
    peft_config = None if continues else models.peft_config(cfg.peft, task_type=task_type)  # a bad `peft:` fails
    trainer_cls, config_cls = recipe.classes(cfg)
    plan = Plan(
        cfg, path, parent, train_rows, eval_rows, files, trainer_cls, config_cls, continues, peft_config, validation
    )
    trainer_cfg = dataclasses.replace(cfg, trainer=recipe.trainer_defaults(plan) | cfg.trainer)
    plan.args = training.trainer_args(config_cls, trainer_cfg, str(path / "checkpoints"), bool(eval_rows), precision)
    accumulation = training.resumed_accumulation(runs.Run(path), plan.args) if cfg.resume else None
    if accumulation:  # resumed on another number of processes: the same rows per step (config.yaml keeps its own)
        trainer_cfg.trainer["gradient_accumulation_steps"] = accumulation
        plan.args = training.trainer_args(
            config_cls, trainer_cfg, str(path / "checkpoints"), bool(eval_rows), precision
        )
    recipe.check(plan, plan.args)
    models.resolve_model(cfg.model.name)  # an unknown (or moved) base fails before the run dir exists
    manifest = recipe.manifest(plan) | precision.manifest | {"validation": validation, "rows": rows}
    if recipe.needs_policy:  # `lineage.adapter_runs` applies this run's adapter in place of the parent's
        manifest["adapter_continues"] = runs.relative_to_run(parent.path, path) if continues and parent else None
    resume_changes.record()  # every check has passed: the resume goes ahead
    skipped = bad_rows.skipped if bad_rows.skip else None
    plan.run = training.create_run(
        recipe.stage, cfg, path, files, parent, plan.args, peft_config, skipped_rows=skipped, **manifest
    )
    if parent and not continues:  # a continued parent's model is built by `lineage.assemble`, which checks it
        lineage.check_base(parent, plan.run.manifest.get("base"))

    with plan.run.removed_if_refused():
        # A reward model's new head is drawn from torch's generator as the model loads, before the trainer seeds
        # it: seed here, or one config trains another model after whatever ran before in the process (the demo's
        # reward model, after SFT and sampling). TRL seeds first only when it loads the model itself.
        from transformers import set_seed

        set_seed(plan.args.seed)
        if continues:
            assert parent is not None
            plan.model, plan.tokenizer = lineage.load_run_model(parent.path, trainable=True, precision=precision)
        else:
            plan.model, plan.tokenizer, plan.peft_config = training.load_trainable(
                cfg, plan.run, precision, head=recipe.head
            )
        with preparing(len(plan.train_rows) + len(plan.eval_rows)):
            rows = plan.eval_rows if isinstance(plan.train_rows, data.TextStream) else plan.train_rows + plan.eval_rows
            data.check_template_renders(plan.tokenizer, rows, ", ".join(plan.files))
            trainer = build_with_adapter(recipe, plan)
        training.trainable_tokens_for_trl(trainer.model)
        training.add_callbacks(trainer, plan.run, cfg, has_eval=bool(eval_rows))
    final = recipe.final_metrics
    try:
        return training.train_and_save(
            trainer,
            plan.run,
            recipe.counts(plan),
            final_metrics=(lambda t: final(t, plan)) if final else None,
            final_evaluation=recipe.final_evaluation,
        )
    except BaseException as error:  # Ctrl-C included: the run says how it ended; `--resume` continues either
        if distributed.is_main():
            ended = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            plan.run.update_manifest(status=ended, error=first_line(error) if ended == "failed" else None)
        if isinstance(error, KeyboardInterrupt):  # Jupyter shows the note under the interrupted cell's traceback
            last = plan.run.last_checkpoint()
            kept = f"its last checkpoint ({Path(last).name})" if last else "no checkpoint yet"
            resume = command(recipe.stage, resume=True, out=plan.run.path)
            error.add_note(f"alignkit: {plan.run.path} interrupted, {kept} kept; continue it with {resume}")
        raise
    finally:  # the run's log.txt takes nothing of what the process does next (another stage, chatting with it)
        runs.detach_log(plan.run)


def load_data(recipe: Recipe, cfg: Any, bad_rows: data.BadRows) -> tuple[Any, Rows, list[str], str]:
    """`data.load_split` of the stage's rows (those failing the checks left out and counted in `bad_rows` with
    `data.skip_bad_rows`), or its stream with `data.streaming` (refused where it has none)."""
    if not cfg.data.streaming:
        return data.load_split(cfg.data, lambda paths: recipe.load_rows(cfg, paths, bad_rows))
    if recipe.load_stream is None:
        raise AlignkitError(
            f"config: data.streaming is for `alignkit pretrain`'s text, not {recipe.stage} rows",
            "drop data.streaming (or set it false)",
        )
    return recipe.load_stream(cfg, bad_rows)


@contextlib.contextmanager
def preparing(rows: int) -> Iterator[None]:
    """A spinner with the time so far while the rows are rendered and TRL tokenizes (and packs) them: over a minute
    on a file of tens of MB. Gone once training starts; nothing is drawn where stderr is not a terminal, nor by the
    other processes of a distributed run. It stands for datasets' bars, one per map/filter step (eight in a notebook
    cell), which are off meanwhile unless the user set HF_DATASETS_DISABLE_PROGRESS_BARS (the CLI turns them off)."""
    from datasets.config import HF_DATASETS_DISABLE_PROGRESS_BARS
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from datasets import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    hide_bars = HF_DATASETS_DISABLE_PROGRESS_BARS is None and not are_progress_bars_disabled()
    if hide_bars:
        disable_progress_bars()
    try:
        if not distributed.is_main():
            yield
            return
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
            progress.add_task(f"preparing {rows:,} rows for training (tokenizing)", total=None)
            yield
    finally:
        if hide_bars:
            enable_progress_bars()


def build_with_adapter(recipe: Recipe, plan: Plan) -> Any:
    """`recipe.build`, where TRL puts the new adapter on the model: a `peft.target_modules` naming no layer of this
    model is a config error, said in one line."""
    from peft.utils.error import NoMatchingPeftModuleError

    try:
        return recipe.build(plan)
    except NoMatchingPeftModuleError as error:
        raise AlignkitError(
            f"config: peft.target_modules matches no layer of {plan.cfg.model.name}: {first_line(error)}",
            "name this model's layers (e.g. q_proj,v_proj) or use all-linear",
        ) from None


def trl_trainer(plan: Plan, to_dataset: Callable[[Rows], Any], **extra: Any) -> Any:
    """The plan's TRL trainer on its rows as `to_dataset` makes them; `extra`: the method's own arguments (reward
    functions, ...). Without `peft_config` when the stage continues its parent's adapter."""
    train, evaluation = to_dataset(plan.train_rows), to_dataset(plan.eval_rows) if plan.eval_rows else None
    try:
        trainer = plan.trainer_cls(
            model=plan.model,
            args=plan.args,
            train_dataset=train,
            eval_dataset=evaluation,
            processing_class=plan.tokenizer,
            peft_config=plan.peft_config,
            **extra,
        )
    except ValueError as error:
        # DPO scores its rows with the reference while it is built: with every row dropped as too long, it fails
        # there, on an empty list, before `rows_left_out` can say why
        if getattr(plan.args, "precompute_ref_log_probs", False) and "non-empty list" in str(error):
            raise training.all_too_long(plan.args) from None
        raise
    plan.left_out = training.rows_left_out(trainer, len(train), len(evaluation or []))
    plan.cut = training.examples_cut(trainer, train, evaluation)
    return trainer


def parent_run(recipe: Recipe, from_run: str | None, model_name: str) -> runs.Run | None:
    """The `--from` run: a policy on the same base (`runs.open_policy`); required where the stage trains a policy
    further. `model_name`: the config's base (the embedded default counts as not given)."""
    if not from_run:
        if recipe.needs_policy:
            raise AlignkitError(
                f"{recipe.stage} starts from a policy: no {option('from_run')} run given",
                f"pass {option('from_run')} an sft (or dpo) run",
            )
        return None
    return runs.open_policy(from_run, None if model_name == EMBEDDED_MODEL else model_name)
