"""The `alignkit` command: one sub-command per stage, a thin layer over the Python API (no logic here).

alignkit modules are imported inside the commands, for start-up time: `alignkit --help` and each command load only
what they need. This entry point and `alignkit/__init__.py` may import any module that way; every other module's
imports form an acyclic graph (`tests/unit/test_imports.py`).
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from alignkit.errors import CLI, AlignkitError, calling, running_command

app = typer.Typer(
    help="alignkit: SFT -> generate -> rate (Argilla) -> reward -> DPO/RL -> evaluate, on one PEFT-adapted base.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
feedback_app = typer.Typer(
    help="Preference collection in Argilla: server, users, push, pull, review, simulate.",
    no_args_is_help=True,
)
app.add_typer(feedback_app, name="feedback")
console = Console(stderr=True, soft_wrap=True)  # a long line wraps in the terminal, never inside a figure

Data = Annotated[
    list[str] | None, typer.Option("--data", help="Data file or dir (repeatable): jsonl/json/csv/parquet/txt.")
]
Model = Annotated[
    str | None, typer.Option("--model", help="`embedded`, a local HF model dir, a .gguf file or a hub id.")
]
FromRun = Annotated[str | None, typer.Option("--from", help="Parent run directory to start from.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML config file.")]
Sets = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config key: --set trainer.learning_rate=2e-5.")
]
Out = Annotated[str | None, typer.Option("--out", help="Run directory (default runs/<stage>-<time>-<id>).")]
Epochs = Annotated[float | None, typer.Option("--epochs", help="Training epochs.")]
MaxSteps = Annotated[int | None, typer.Option("--max-steps", help="Stop after N optimizer steps.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out (or the latest unfinished one).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out directory.")]
OverwriteFile = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")]
ResumeFile = Annotated[
    bool, typer.Option("--resume", help="Continue an interrupted run from the rows it saved in OUT.partial.")
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Server data dir (default $ALIGNKIT_ARGILLA_DATA_DIR, else ~/.cache/alignkit/argilla-data)."
    ),
]


# What runs under `accelerate launch`: the training stages (TRL's trainers split the batches) and `generate` (the
# processes split the prompts). Any other command would do its whole work once per process, all writing one output.
LAUNCHABLE = ("pretrain", "sft", "reward", "dpo", "rl", "generate")


@app.callback()
def options(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show library warnings and trainer logs (anywhere on the line).")
    ] = False,
) -> None:
    """Library warnings, load reports and trainer log dicts go to the run's log.txt (`alignkit.logs`)."""
    from alignkit import distributed

    if distributed.world_size() > 1 and ctx.invoked_subcommand not in LAUNCHABLE:
        raise AlignkitError(
            f"alignkit {ctx.invoked_subcommand} runs in one process, not under accelerate launch "
            f"({distributed.world_size()} processes would each do all of it and write the same output)",
            f"run it without accelerate launch, which is for {', '.join(LAUNCHABLE)}",
        )
    record_flags(ctx)


def record_flags(ctx: typer.Context) -> None:
    """Record the flags of the command about to run, so a fix names only flags it has (`errors.accepts`); of a group
    (`feedback`, `feedback review`), none: its own callback records those of its command."""
    command = ctx.command.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
    if command is None or hasattr(command, "commands"):  # a group's own flags are not its commands'
        running_command(None)
    else:
        running_command(frozenset(opt for param in command.params for opt in getattr(param, "opts", ())))


feedback_app.callback()(record_flags)


def main() -> None:
    """Console-script entry point: user-fixable errors are one red line and exit code 2, never a traceback."""
    from alignkit import distributed, logs

    if "--verbose" in sys.argv[1:]:  # accepted after the sub-command too
        sys.argv.remove("--verbose")
        os.environ["ALIGNKIT_VERBOSE"] = "1"
    logs.quiet_terminal()
    try:
        with calling(CLI):  # the commands call the Python API: its errors name the flags
            app()
    except AlignkitError as exc:
        fix = f" [dim]— fix: {escape(exc.hint)}[/]" if exc.hint else ""
        line = f"[bold red]error:[/] {escape(exc.message)}{fix}"
        # under `accelerate launch` every process usually hits the same error: one line, not one per process
        distributed.say_once(lambda: console.print(line, soft_wrap=True))
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C reaches every process of a launched run: said by the first on each machine
        if distributed.is_local_main():
            console.print(
                "[yellow]interrupted[/]: continue a training run, generate/synth (rows saved in OUT.partial) or eval "
                "(answers saved in OUT/answers.jsonl.partial) with --resume"
            )
        sys.exit(130)
    finally:  # what calls `main` in-process next (a test, a script) is not this command
        running_command(None)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def stage_values(
    data: list[str] | None,
    model: str | None,
    from_run: str | None,
    out: str | None,
    epochs: float | None,
    max_steps: int | None,
    resume: bool,
    overwrite: bool,
) -> dict[str, Any]:
    """The common training options as a partial config (only what was given)."""
    values: dict[str, Any] = {"resume": resume, "overwrite": overwrite}
    trainer: dict[str, Any] = {}
    if data:
        values["data"] = {"paths": data}
    if model:
        values["model"] = {"name": model}
    if from_run:
        values["from_run"] = from_run
    if out:
        values["out"] = out
    if epochs is not None:
        trainer["num_train_epochs"] = epochs
    if max_steps is not None:
        trainer["max_steps"] = max_steps
    if trainer:
        values["trainer"] = trainer
    return values


def show_run(run: Any) -> None:
    """Short summary of a finished run (the full record is in its directory); under accelerate, the main process's."""
    from alignkit import distributed

    if not distributed.is_main():
        return
    metrics = run.metrics
    table = Table(title=f"{run.stage} run complete", show_header=False)
    shown = (
        "global_step",
        "train_loss",
        "eval_loss_start",
        "eval_loss",
        "eval_perplexity_start",  # pretrain: of the validation text
        "eval_perplexity",
        "pairwise_accuracy",
        "eval_rewards/accuracies",
        "reward_start",  # rl: the mean reward of the first and last logged steps, and the KL to the reference
        "reward_end",
        "kl",
    )
    for key in (*shown, "train_tokens", "train_runtime"):
        if metrics.get(key) is not None:
            value = metrics[key]
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    table.add_row("run directory", str(run.path))
    print_table(table)


class StageCommand(typer.core.TyperCommand):
    """A training command: a flag it lacks is one line (not click's usage box), and another tool's flag (TRL's
    `--learning_rate`, `--lora_r`) names alignkit's key for it (`config.flag_key`), with the value given."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        known = {opt for param in self.get_params(ctx) for opt in getattr(param, "opts", ())}  # --help too
        for arg in itertools.takewhile(lambda arg: arg != "--", args):
            flag = arg.partition("=")[0]
            if flag.startswith("--") and flag not in known:
                raise unknown_flag(str(self.name), flag, args, known)
        return super().parse_args(ctx, args)


def unknown_flag(stage: str, flag: str, args: list[str], known: set[str]) -> AlignkitError:
    """The error for `flag`, which `alignkit STAGE` lacks: alignkit's key for it where it is another tool's, else
    the nearest flag."""
    import difflib

    from alignkit.config import STAGE_CONFIGS, flag_key, is_switch
    from alignkit.errors import Placeholder, option

    found = flag_key(STAGE_CONFIGS[stage], flag)
    if found is None:
        nearest = difflib.get_close_matches(flag, sorted(known), n=1)
        return AlignkitError(
            f"alignkit {stage} has no flag {flag}",
            f"did you mean {nearest[0]}?" if nearest else f"see alignkit {stage} --help",
        )
    key, note = found
    if not key:
        return AlignkitError(f"alignkit {stage} has no flag {flag}", note)
    at = next(i for i, arg in enumerate(args) if arg.partition("=")[0] == flag)
    given = args[at].partition("=")[2] or (args[at + 1 : at + 2] or [None])[0]
    bare = given is None or given.startswith("--")
    if note:
        fix = f"{option(key, Placeholder('...'))} ({note})"
    elif not bare:
        fix = option(key, given)
    elif is_switch(STAGE_CONFIGS[stage], key):  # `--gradient_checkpointing` alone: a switch turned on
        fix = option(key, True)
    else:
        fix = f"{option(key, Placeholder('VALUE'))} ({flag} was given no value: write the one for `{key}` as VALUE)"
    return AlignkitError(f"alignkit {stage} has no flag {flag}: its setting is config key `{key}`", fix)


def train_command(name: str, api: Callable[..., Any], help_text: str) -> None:
    @app.command(name, help=help_text, cls=StageCommand)
    def command(
        data: Data = None,
        model: Model = None,
        from_run: FromRun = None,
        config: ConfigFile = None,
        set_: Sets = None,
        out: Out = None,
        epochs: Epochs = None,
        max_steps: MaxSteps = None,
        resume: Resume = False,
        overwrite: Overwrite = False,
    ) -> None:
        values = stage_values(data, model, from_run, out, epochs, max_steps, resume, overwrite)
        show_run(api()(str(config) if config else None, set_, **values))


def api_named(name: str) -> Callable[[], Callable[..., Any]]:
    """The Python API function of a stage, imported only when the command runs (keeps `--help` fast)."""

    def api() -> Callable[..., Any]:
        import alignkit

        return getattr(alignkit, name)

    return api


train_command(
    "pretrain", api_named("pretrain"), "Continued pretraining on raw domain text (next-token loss, LoRA adapter)."
)
train_command("sft", api_named("sft"), "Supervised fine-tuning on chat data with TRL's SFTTrainer (LoRA by default).")


train_command("reward", api_named("reward"), "Reward model (classification head + LoRA) from preference pairs.")
train_command("dpo", api_named("dpo"), "DPO and variants (loss_type ipo/robust/...; method=kto|simpo|orpo) from SFT.")


@app.command(
    "rl",
    help="Online RL (GRPO; method=rloo) of a policy run against a reward model and/or rule rewards.",
    cls=StageCommand,
)
def rl_command(
    data: Data = None,
    model: Model = None,
    from_run: FromRun = None,
    reward: Annotated[
        str | None, typer.Option("--reward", help="Reward run: enables the `reward_model` reward.")
    ] = None,
    config: ConfigFile = None,
    set_: Sets = None,
    out: Out = None,
    epochs: Epochs = None,
    max_steps: MaxSteps = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    values = stage_values(data, model, from_run, out, epochs, max_steps, resume, overwrite)
    if reward:
        values["reward_run"] = reward
    show_run(api_named("rl")()(str(config) if config else None, set_, **values))


@app.command("generate", help="Sample N distinct candidates per prompt from a run (or the base model) to JSONL.")
def generate_command(
    prompts: Annotated[str, typer.Option("--prompts", help="Prompts file: rows with prompt/instruction/messages.")],
    out: Annotated[str, typer.Option("--out", help="Output JSONL file.")],
    from_run: FromRun = None,
    model: Model = None,
    n: Annotated[int, typer.Option("--n", help="Candidates per prompt.")] = 4,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.8,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling.")] = 0.95,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens per candidate.")] = 128,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per generate call.")] = 16,
    limit: Annotated[int | None, typer.Option(help="Only the first N prompts.")] = None,
    overwrite: OverwriteFile = False,
    backend: Annotated[str, typer.Option(help="transformers | vllm (CUDA GPUs, vllm installed).")] = "transformers",
    greedy_first: Annotated[
        bool, typer.Option("--greedy-first", help="The first candidate is the greedy reply, the others sampled.")
    ] = False,
    resume: ResumeFile = False,
) -> None:
    candidates = api_named("candidates")()
    sampling = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed}
    path = candidates(
        prompts,
        out,
        n,
        from_run,
        model,
        **sampling,
        batch_size=batch_size,
        limit=limit,
        overwrite=overwrite,
        greedy_first=greedy_first,
        backend=backend,
        resume=resume,
    )
    from alignkit import distributed

    if distributed.is_main():
        console.print(f"candidates written to {path}")


@app.command("synth", help="Self-instruct synthetic SFT rows: new tasks from seed tasks, answered and filtered.")
def synth_command(
    seeds: Annotated[str, typer.Option("--seeds", help="Seed tasks: rows with prompt/instruction/messages.")],
    out: Annotated[str, typer.Option("--out", help="Output JSONL of SFT rows (with `synth` provenance).")],
    n: Annotated[int, typer.Option("--n", help="Rows to keep.")] = 100,
    from_run: FromRun = None,
    model: Model = None,
    shots: Annotated[int, typer.Option("--shots", help="Seed tasks shown per new task.")] = 3,
    max_attempts: Annotated[int | None, typer.Option("--max-attempts", help="Tasks to try (default 4n).")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens per answer.")] = 96,
    temperature: Annotated[float, typer.Option(help="Answer sampling temperature.")] = 0.7,
    task_temperature: Annotated[
        float, typer.Option("--task-temperature", help="Sampling temperature of the new tasks.")
    ] = 1.0,
    task_max_new_tokens: Annotated[int, typer.Option("--task-max-new-tokens", help="Tokens per new task.")] = 64,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling of tasks and answers.")] = 0.95,
    max_similarity: Annotated[
        float, typer.Option("--max-similarity", help="Drop tasks this ROUGE-L-similar to a seed or kept task.")
    ] = 0.7,
    allow_truncated: Annotated[
        bool, typer.Option("--allow-truncated", help="Keep answers cut off at --max-new-tokens.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Tasks per generate call.")] = 8,
    overwrite: OverwriteFile = False,
    resume: ResumeFile = False,
) -> None:
    import json

    from alignkit import synth

    filters = synth.Filters(max_similarity=max_similarity, allow_truncated=allow_truncated)
    summary = synth.run(
        from_run,
        model,
        seeds,
        n,
        out,
        seed,
        max_new_tokens,
        overwrite,
        shots=shots,
        max_attempts=max_attempts,
        batch_size=batch_size,
        temperature=temperature,
        task_temperature=task_temperature,
        top_p=top_p,
        task_max_new_tokens=task_max_new_tokens,
        filters=filters,
        resume=resume,
    )
    table = Table("figure", "value", title=f"synth → {out}")
    for key in ("kept", "resumed", "wanted", "attempts", "rounds", "unused"):
        if key != "resumed" or summary[key]:
            table.add_row(key, str(summary[key]))
    for check, count in summary["rejected"].items():
        table.add_row(f"rejected: {check}", str(count))
    print_table(table)
    Path(out).with_suffix(".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if summary["kept"] < n:
        console.print(f"[yellow]kept {summary['kept']} of {n}: raise --max-attempts, or use a stronger model[/]")


@app.command("eval", help="Evaluate the base and runs on held-out prompts: checked accuracy, degeneration, win-rates.")
def eval_command(
    run_dirs: Annotated[
        list[str],
        typer.Option("--runs", help="Run dirs (repeatable), each compared with the one before (or see --baseline)."),
    ],
    out: Annotated[
        str, typer.Option("--out", help="Directory for eval.json, answers.jsonl, report.md and plots.")
    ] = "eval",
    prompts: Annotated[str | None, typer.Option(help="Held-out prompts (default: bundled sft_eval.jsonl).")] = None,
    general: Annotated[str | None, typer.Option(help="General text for the forgetting check.")] = None,
    reward: Annotated[str | None, typer.Option("--reward", help="Reward run: judge win-rate, score answers.")] = None,
    rule: Annotated[str, typer.Option(help="Oracle rule judge (careful, concise, ...).")] = "careful",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens per answer.")] = 64,
    limit: Annotated[int | None, typer.Option(help="Only the first N prompts.")] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier evaluation in the --out directory.")
    ] = False,
    baseline: Annotated[
        str | None,
        typer.Option("--baseline", help="Compare every other model with this one: `base` or a --runs run."),
    ] = None,
    compare: Annotated[
        list[str] | None,
        typer.Option("--compare", help="A comparison to make, 'RUN vs BASELINE' (repeatable; `base` is the base)."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue an interrupted evaluation from the answers saved in OUT/answers.jsonl.partial."
        ),
    ] = False,
) -> None:
    import alignkit
    from alignkit import evaluate

    results = alignkit.evaluate_runs(
        run_dirs, out, prompts, general, reward, rule, max_new_tokens, limit, overwrite, baseline, compare or (), resume
    )
    table = Table(
        "model", "accuracy", "checked", "degenerate", "mean words", "general ppl", "forgetting", title="evaluation"
    )
    for name, figures in results["runs"].items():
        flag = "yes" if figures["forgetting"]["forgetting"] else "no"
        accuracy = "–" if figures["accuracy"] is None else f"{figures['accuracy']:.3f}"
        table.add_row(
            name,
            accuracy,
            str(figures["checked_prompts"]),  # the same prompts for every model
            f"{figures['degenerate_rate']:.3f}",
            f"{figures['mean_words']:.1f}",
            f"{figures['general_ppl']:.2f}",
            f"{flag} ({figures['forgetting']['ppl_ratio']:.3f}×)",
        )
    print_table(table)
    for name, comparison in results["comparisons"].items():
        if "oracle" in comparison:
            c = comparison["oracle"]
            low, high = c["interval_95"]
            console.print(
                f"{name}{evaluate.lineage_note(comparison)}: oracle win-rate {c['win_rate']:.3f} "
                f"[{low:.3f}, {high:.3f}], KL {comparison['kl_along_answers']:.3f}: {comparison['verdict']}",
                soft_wrap=True,
            )
    for note in (evaluate.cut_off_note(results), evaluate.unchecked_note(results)):
        if note:
            console.print(note, soft_wrap=True)
    print_alarms(results["alarms"])
    if reused := sum(figures.get("reused_answers", 0) for figures in results["runs"].values()):
        console.print(f"reused {reused} answers of the evaluation this one replaced (same models, prompts and tokens)")
    console.print(f"report: {Path(out) / 'report.md'}")


def print_alarms(alarms: dict[str, list[str]]) -> None:
    """Reward-hacking alarms, loud: a flagged model is not an improvement, whatever its win-rate."""
    for subject, found in alarms.items():
        for alarm in found:
            console.print(f"[bold red]ALARM[/] {subject}: {alarm}", soft_wrap=True)


def print_table(table: Table) -> None:
    """A table to stdout at its full width: in a narrower terminal (or a log's 80 columns) its lines wrap there
    rather than rich squeezing the columns and cutting figures to `0.9…`."""
    out = Console()
    full = Measurement.get(out, out.options.update_width(10_000), table).maximum
    Console(width=max(out.width, full)).print(table)


@app.command(
    "serve", help="Start Argilla and the Streamlit apps (annotate, playground), print their URLs; Ctrl-C stops all."
)
def serve_command(
    app_names: Annotated[
        list[str] | None, typer.Option("--app", help="App to start (repeatable): annotate, playground.")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port of the first app (default 8501 or a free one).")] = None,
    argilla_port: Annotated[int | None, typer.Option("--argilla-port", help="Port of the local Argilla.")] = None,
    data_dir: DataDir = None,
    jupyter: Annotated[bool, typer.Option(help="Also start JupyterLab on notebooks/.")] = False,
) -> None:
    from alignkit import serve

    serve.run(app_names or list(serve.APPS), port, argilla_port, data_dir, jupyter)


server_app = typer.Typer(
    help="The local Argilla server (SQLite + in-process search), bound to 127.0.0.1.", callback=record_flags
)
feedback_app.add_typer(server_app, name="server")


@server_app.command("start", help="Start Argilla in the foreground (installs its venv on first use); Ctrl-C stops it.")
def server_start(
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = None,
    data_dir: DataDir = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url", help="A real Redis instead of fakeredis.")] = None,
) -> None:
    from alignkit import processes
    from alignkit.feedback import server

    try:
        local = server.start(data_dir=data_dir, port=port, redis_url=redis_url)
    except server.StoppedWhileStarting:
        console.print("Argilla stopped (`alignkit feedback server stop`) before it was ready")
        return
    with local:
        console.print(f"Argilla: {local.url}  (owner `{server.DEMO_OWNER_USERNAME}`, demo credentials: local use only)")
        if hint := server.other_shells_hint(data_dir):
            console.print(hint, soft_wrap=True)
        crashed = local.wait()
        if crashed is None:
            console.print("Argilla stopped (`alignkit feedback server stop`)")
            return
        raise AlignkitError(
            f"Argilla's {crashed.name} stopped (code {crashed.process.returncode})",
            f"see {crashed.log}:\n{processes.tail(crashed.log)}",
        )


@server_app.command("status", help="Whether the local server runs, and where.")
def server_status(data_dir: DataDir = None) -> None:
    from alignkit.feedback import server

    state = server.status(data_dir)
    if state is None:
        console.print("no local Argilla server running")
        raise typer.Exit(1)
    console.print(f"Argilla: {state['url']} ({'healthy' if state['healthy'] else 'not answering'})")
    if hint := server.other_shells_hint(data_dir):
        console.print(hint, soft_wrap=True)


@server_app.command("stop", help="Stop the local server (from any shell).")
def server_stop(data_dir: DataDir = None) -> None:
    from alignkit.feedback import server

    console.print("stopped" if server.stop(data_dir) else "no local Argilla server was running")


@app.command("export", help="Merge a run's adapters into its base: a plain HF model dir (safetensors), or GGUF.")
def export_command(
    run_dir: Annotated[str, typer.Argument(help="Finished run directory (sft, dpo, rl, pretrain or reward).")],
    out: Annotated[str, typer.Option("--out", help="Output model directory.")],
    dtype: Annotated[str, typer.Option(help="auto (the run's training precision) | fp32 | bf16 | fp16.")] = "auto",
    gguf: Annotated[bool, typer.Option("--gguf", help="Also write a GGUF file (needs llama.cpp's converter).")] = False,
    gguf_type: Annotated[str, typer.Option("--gguf-type", help="GGUF tensor type: f16, bf16, q8_0, f32.")] = "f16",
    overwrite: Overwrite = False,
) -> None:
    from alignkit import export

    path = export.export(run_dir, out, dtype=dtype, gguf=gguf, gguf_type=gguf_type, overwrite=overwrite)
    console.print(f"exported to {path} (a plain transformers model dir: from_pretrained loads it)")


users_app = typer.Typer(help="Annotators: add and list Argilla users.", no_args_is_help=True, callback=record_flags)
feedback_app.add_typer(users_app, name="users")
Dataset = Annotated[str, typer.Option("--dataset", help="Argilla dataset (one per collection round).")]
Workspace = Annotated[str, typer.Option("--workspace", help="Argilla workspace.")]


PASSWORD_ENV = "ALIGNKIT_PASSWORD"


def read_secret(path: Path, what: str) -> str:
    """The first line of a secret file (a password file, a credentials file), one clear line when unreadable."""
    try:
        lines = path.expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AlignkitError(f"{path}: cannot read the {what} ({type(exc).__name__})", "pass a readable file") from None
    if not lines or not lines[0].strip():
        raise AlignkitError(f"{path}: the {what} is empty", f"write the {what} on its first line")
    return lines[0].strip()


@users_app.command("add", help="Create a user (annotator by default) and add it to workspaces.")
def users_add(
    username: str,
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="File whose first line is the password (for scripts).")
    ] = None,
    role: Annotated[str, typer.Option(help="annotator | admin | owner.")] = "annotator",
    workspace: Annotated[list[str] | None, typer.Option("--workspace", help="Workspace (repeatable).")] = None,
) -> None:
    """The password (at least 8 characters) comes from `--password-file`, else `$ALIGNKIT_PASSWORD`, else a hidden
    prompt; never from the command line, where shell history and the process list would keep it."""
    from alignkit.feedback import client

    if password_file is not None:
        password = read_secret(password_file, "password")
    else:
        password = os.environ.get(PASSWORD_ENV) or typer.prompt(
            f"password for {username}", hide_input=True, confirmation_prompt=True
        )
    client.add_user(client.connect(), username, password, role, workspace or ["alignkit"])
    console.print(f"user {username} ({role}) ready in {', '.join(workspace or ['alignkit'])}")


@users_app.command("list", help="Users with their roles and workspaces.")
def users_list() -> None:
    from alignkit.feedback import client

    table = Table("username", "role", "workspaces")
    for row in client.list_users(client.connect()):
        table.add_row(row["username"], row["role"], ", ".join(row["workspaces"]))
    print_table(table)


PUSH_LEFT_OUT = {
    "already_in_dataset": "prompts left as they are (their candidates are in the dataset already)",
    "skipped_fewer_candidates": "prompts skipped (fewer candidates than the others)",
}


@feedback_app.command("push", help="Push candidates (from `alignkit generate`) to Argilla as one rating round.")
def feedback_push(
    candidates: Annotated[str, typer.Option("--candidates", help="JSONL from `alignkit generate`.")],
    dataset: Dataset,
    workspace: Workspace = "alignkit",
    round_number: Annotated[
        int | None,
        typer.Option("--round", help="Collection round number (default: 1; with --append, the dataset's round)."),
    ] = None,
    min_submitted: Annotated[int, typer.Option("--min-submitted", help="Annotators per record (overlap).")] = 1,
    append: Annotated[
        bool,
        typer.Option(
            help="Add records to an existing dataset; prompts whose candidates it holds already are left as rated."
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the per-record A/B shuffle.")] = 0,
    reward: Annotated[
        str | None, typer.Option("--reward", help="Reward run: least-sure pairs first; its pick stored as a hint.")
    ] = None,
) -> None:
    from alignkit.feedback import ordering, push

    scorer = ordering.reward_scorer(reward) if reward else None
    summary = push.push(candidates, dataset, workspace, round_number, min_submitted, seed, append, scorer=scorer)
    left = [f"{summary[key]} {what}" for key, what in PUSH_LEFT_OUT.items() if summary[key]]
    console.print(
        f"pushed {summary['records']} records to {workspace}/{dataset} (round {summary['round']}, "
        f"{summary['candidates_per_record']} candidates each, {summary['min_submitted']} annotator(s) per record"
        + "".join(f"; {line}" for line in left)
        + f"). Annotators rate them in `alignkit serve`; then: alignkit feedback pull --dataset {dataset} "
        f"--workspace {workspace} --out PAIRS.jsonl",
        soft_wrap=True,
    )


@feedback_app.command("pull", help="Pull submitted ratings as preference pairs, with agreement.")
def feedback_pull(
    dataset: Dataset,
    out: Annotated[str, typer.Option("--out", help="Output JSONL of preference pairs.")],
    workspace: Workspace = "alignkit",
    ties: Annotated[str, typer.Option(help="drop | keep (margin 0).")] = "drop",
    min_agreement: Annotated[
        float, typer.Option("--min-agreement", help="Drop pairs below this majority share.")
    ] = 0.0,
    min_annotators: Annotated[int, typer.Option("--min-annotators", help="Skip records rated by fewer.")] = 1,
    pairs: Annotated[
        str, typer.Option("--pairs", help="all (every decided pair) | best-worst (one per record, the widest).")
    ] = "all",
    overwrite: OverwriteFile = False,
) -> None:
    import alignkit

    result = alignkit.pull(dataset, out, workspace, ties, min_agreement, min_annotators, overwrite, pairing=pairs)
    table = Table("figure", "value", title=f"pulled {dataset}")
    for key, value in result.summary.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    print_table(table)
    console.print(f"pairs written to {out} (figures: {Path(out).with_suffix('.summary.json')})", soft_wrap=True)


review_app = typer.Typer(
    help="Review rounds: annotators accept, edit or reject SFT rows (e.g. from synth).", callback=record_flags
)
feedback_app.add_typer(review_app, name="review")


@review_app.command("push", help="Push SFT rows (e.g. from `alignkit synth`) to Argilla as a review round.")
def review_push(
    data: Annotated[str, typer.Option("--data", help="Chat rows ending with the response to review.")],
    dataset: Dataset,
    workspace: Workspace = "alignkit",
    min_submitted: Annotated[int, typer.Option("--min-submitted", help="Reviewers per record (overlap).")] = 1,
    append: Annotated[bool, typer.Option(help="Add records to an existing review dataset.")] = False,
) -> None:
    from alignkit.feedback import push

    summary = push.push_review(data, dataset, workspace, min_submitted=min_submitted, append=append)
    console.print(f"pushed {summary['records']} records to {workspace}/{dataset} for review ({summary})")


@review_app.command("pull", help="Pull the accepted rows of a review round (edits applied) as SFT rows.")
def review_pull(
    dataset: Dataset,
    out: Annotated[str, typer.Option("--out", help="Output JSONL of accepted SFT rows.")],
    workspace: Workspace = "alignkit",
    min_reviews: Annotated[int, typer.Option("--min-reviews", help="Skip records reviewed by fewer.")] = 1,
    overwrite: OverwriteFile = False,
) -> None:
    from alignkit.feedback import pull
    from alignkit.jsonl import check_output_file, write_jsonl

    check_output_file(Path(out), overwrite)  # before asking Argilla for anything
    rows = pull.pull_review(dataset, workspace, min_reviews=min_reviews)
    write_jsonl(Path(out), rows, overwrite=overwrite)
    edited = sum(row["review"]["edited"] for row in rows)
    console.print(f"{len(rows)} accepted rows ({edited} edited) written to {out}")


@feedback_app.command("simulate", help="Oracle annotators rate through Argilla's API with a rule plus noise.")
def feedback_simulate(
    dataset: Dataset,
    annotator: Annotated[
        list[str] | None,
        typer.Option("--annotator", help="A username, asked for its password (repeatable); or username:password."),
    ] = None,
    annotators_file: Annotated[
        Path | None, typer.Option("--annotators-file", help="File of username:password lines (for scripts).")
    ] = None,
    rule: Annotated[str, typer.Option(help="careful | concise | verbose | no_lists | exclamation.")] = "careful",
    noise: Annotated[float, typer.Option(help="Probability an annotator flips the rule's answer.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Noise seed.")] = 0,
    limit: Annotated[int | None, typer.Option(help="At most N responses per annotator.")] = None,
    answer_key: Annotated[
        str | None,
        typer.Option(
            "--answer-key",
            help="Prompt (or candidates) file whose rows carry skill / reference / must_contain / decline: what the "
            "annotators check answers against.",
        ),
    ] = None,
) -> None:
    import alignkit

    logins = [login_of(entry, "--annotator") for entry in annotator or []]
    if annotators_file is not None:
        read_secret(annotators_file, "annotators file")  # one clear line when missing or empty
        lines = annotators_file.expanduser().read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if line.strip():
                logins.append(login_of(line.strip(), f"{annotators_file}:line {number}", ask=False))
    if not logins:
        raise AlignkitError("no annotators given", "pass --annotator NAME (repeatable) or --annotators-file FILE")
    done = alignkit.simulate_ratings(dataset, logins, rule, noise, seed, limit, answer_key=answer_key)
    for username, count in done.items():
        console.print(f"{username}: {count} responses submitted")


def login_of(entry: str, where: str, ask: bool = True) -> tuple[str, str]:
    """(username, password) from `username:password`, or from a bare username and a hidden prompt (`ask`)."""
    username, sep, password = entry.partition(":")
    if not username or (sep and not password) or (not sep and not ask):
        raise AlignkitError(f"{where} {entry.split(':')[0]!r}: expected username:password")
    return username, password if sep else typer.prompt(f"password for {username}", hide_input=True)


@app.command("runs", help="List run directories with their lineage and key metrics.")
def list_runs(
    runs_dir: Annotated[Path | None, typer.Option("--dir", help="Where runs live (default: runs).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    import json

    from alignkit import dashboard

    if runs_dir is not None and not runs_dir.is_dir():  # a missing default runs/ only means no run yet
        raise AlignkitError(f"--dir {runs_dir}: no such directory", "pass the folder your runs are in")
    runs_dir = runs_dir or Path("runs")
    rows = dashboard.run_rows(runs_dir)  # a broken run is listed as `broken`, never a traceback
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print(f"no runs in {runs_dir}/")
        return
    table = Table()
    for column in ("run", "stage", "status", "lineage", "data", "steps", "eval loss", "created"):
        table.add_column(column, overflow="fold")
    for row in rows:
        loss = f"{row['eval_loss']:.4f}" if row.get("eval_loss") is not None else ""
        step = str(row.get("global_step") or "")
        method = row.get("method")
        stage = f"{row['stage']} ({method})" if method and method != row["stage"] else row["stage"]
        about = row.get("error") or row.get("lineage", "")  # a broken run: what is wrong with it
        created = row["created"][:16].replace("T", " ")  # to the minute: the full ISO stamp wrapped over 3 lines
        cells = (row["run"], stage, row["status"], about, row.get("data"), step, loss, created)
        table.add_row(*(str(c or "") for c in cells))
    print_table(table)


@app.command("demo", help="The main job: SFT -> generate -> Argilla -> simulated ratings -> reward -> DPO -> eval.")
def demo(
    out: Annotated[str | None, typer.Option("--out", help="Where runs, data, Argilla and report.json go.")] = None,
    model: Model = None,
    rule: Annotated[str | None, typer.Option(help="Hidden preference of the simulated annotators.")] = None,
    noise: Annotated[float | None, typer.Option(help="Chance an annotator flips the rule.")] = None,
    sft_steps: Annotated[int | None, typer.Option("--sft-steps", help="SFT optimizer steps.")] = None,
    reward_steps: Annotated[int | None, typer.Option("--reward-steps", help="Reward-model optimizer steps.")] = None,
    dpo_steps: Annotated[int | None, typer.Option("--dpo-steps", help="DPO optimizer steps.")] = None,
    rl_steps: Annotated[int | None, typer.Option("--rl-steps", help="Short GRPO after DPO; 0 skips it.")] = None,
    rounds: Annotated[
        int | None,
        typer.Option("--rounds", help="2+: rate the DPO policy's answers the reward model is least sure of."),
    ] = None,
    config: ConfigFile = None,
    sets: Sets = None,
) -> None:
    from alignkit import demo as loop
    from alignkit.config import load_config

    flags = {"out": out, "model": model, "rule": rule, "noise": noise, "sft_steps": sft_steps}
    flags |= {"reward_steps": reward_steps, "dpo_steps": dpo_steps, "rl_steps": rl_steps, "rounds": rounds}
    cfg = load_config(loop.DemoConfig, config, {k: v for k, v in flags.items() if v is not None}, sets)
    out = cfg.out
    report = loop.run(cfg)
    table = Table("figure", "value", title="alignkit demo: the closed loop")
    low, high = report["win_rate_vs_sft_interval"]
    table.add_row(
        "reward accuracy (prompt-disjoint)", f"{report['reward_accuracy']:.3f} ({loop.reward_held_out(report)})"
    )
    table.add_row("DPO vs SFT win-rate (oracle)", f"{report['win_rate_vs_sft']:.3f} [{low:.3f}, {high:.3f}]")
    table.add_row("DPO vs SFT win-rate (reward model)", f"{report['win_rate_vs_sft_reward_model']:.3f}")
    table.add_row("DPO vs SFT verdict", str(report["verdict"]))
    table.add_row("DPO model selection", loop.dpo_selection(report))
    for key in ("accuracy", "degenerate_rate", "mean_words"):
        table.add_row(key, "  ".join(f"{name} {value:.3f}" for name, value in report[key].items() if value is not None))
    table.add_row("forgetting ppl ratio", f"{report['forgetting_ppl_ratio']:.3f}")
    table.add_row("pairs from Argilla", str(report["pairs"]["pairs"]))
    table.add_row("seconds_total", str(report["seconds_total"]))
    for name, path in report["runs"].items():
        table.add_row(f"{name} run", path)
    table.add_row("report", f"{Path(out) / 'report.md'} (every answer: {Path(out) / 'eval' / 'answers.jsonl'})")
    print_table(table)
    print_alarms(report["alarms"])
    for example in report["evaluation"]["examples"]:  # one per skill, where SFT and DPO differ
        if example["sft"] == example["dpo"]:
            continue
        Console().print(
            f"[bold]{example['skill']}:[/] {escape(example['prompt'])}\n  [bold]SFT:[/] {escape(example['sft'])}\n"
            f"  [bold]DPO:[/] {escape(example['dpo'])}"
        )


if __name__ == "__main__":
    main()
