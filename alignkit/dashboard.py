"""What the Runs page shows, without a UI: runs with lineage, their metric curves, eval figures and config diffs."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from alignkit import runs
from alignkit.errors import AlignkitError

# metrics.jsonl keys plotted on the Runs page, by what they mean (TRL's names differ per trainer)
CURVES = {
    "loss": ("loss",),
    "validation loss": ("eval_loss",),
    "reward accuracy": ("eval_rewards/accuracies", "rewards/accuracies", "eval_accuracy"),
    "KL": ("kl", "objective/kl", "eval_kl"),
    "reward": ("reward", "rewards/chosen", "eval_rewards/margins"),
}


def run_rows(runs_dir: str | Path) -> list[dict[str, Any]]:
    """One row per run directory (oldest first): name, stage, status, lineage, parent, key metrics (an unfinished
    run's from its last complete checkpoint); runs with an unreadable file are listed with status `broken` and the
    `error`, runs whose parent (or an earlier ancestor) is not where they record it with `parent missing`, and those
    whose parent was trained again (or replaced) since with `parent replaced`."""
    rows = []
    for path in runs.run_dirs(runs_dir):
        name = runs.run_name(path, runs_dir)
        run = runs.Run(path)
        try:
            manifest, metrics = run.manifest, run.metrics or checkpoint_figures(run)
        except (OSError, ValueError) as exc:
            where = Path(exc.filename).name if isinstance(exc, OSError) and exc.filename else ""
            error = f"{where}: {exc.strerror}" if where else str(exc)
            rows.append(
                {"run": name, "path": str(path), "stage": "?", "status": "broken", "created": "", "error": error}
            )
            continue
        base = Path(manifest.get("model", {}).get("name", "?")).name
        rows.append(
            {
                "run": name,
                "path": str(path),
                "stage": manifest.get("stage"),
                "method": manifest.get("method"),  # dpo: dpo | kto | simpo | orpo; rl: grpo | rloo
                "status": f"parent {fault[1]}" if (fault := run.lineage_fault()) else run.status,
                "lineage": " → ".join([base] + [step["stage"] for step in manifest.get("lineage", [])]),
                "base": base,
                "parent": runs.run_name(path / manifest["parent"], runs_dir) if manifest.get("parent") else None,
                "created": manifest.get("created", ""),
                "data": ", ".join(data_names(manifest.get("data") or {})),
                **{k: metrics.get(k) for k in ("global_step", "train_loss", "eval_loss", "pairwise_accuracy")},
            }
        )
        if manifest.get("stage") == "rl":  # GRPO/RLOO's loss is ~0 by construction (normalised advantages)
            rows[-1] |= {"eval_loss": None, "reward_end": metrics.get("reward_end")}
    return sorted(rows, key=lambda r: r["created"])


def data_names(recorded: dict[str, str]) -> list[str]:
    """The data a run trained on, as its manifest records them (absolute paths, or hub ids): local files by name, so
    a DPO run on two rounds' pairs says so in a table row."""
    return [Path(source).name if Path(source).is_absolute() else source for source in recorded]


def checkpoint_figures(run: runs.Run) -> dict[str, Any]:
    """The step and last validation loss of a run's last complete checkpoint (its trainer_state.json): how far an
    unfinished run got, which it has no metrics.json to say."""
    last = run.last_checkpoint()
    if last is None:
        return {}
    state = runs.read_json(Path(last) / "trainer_state.json")
    evals = [row["eval_loss"] for row in state.get("log_history", []) if "eval_loss" in row]
    return {"global_step": state.get("global_step"), "eval_loss": evals[-1] if evals else None}


def lineage_dot(rows: list[dict[str, Any]]) -> str:
    """A Graphviz graph: base model(s) → runs, each run under its parent (drawn by the browser)."""
    lines = ["digraph runs {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fillcolor="#f0f2f6"];']
    for base in sorted({r.get("base") for r in rows if r.get("base")}):
        lines.append(f'  "base:{base}" [label="{base}\\n(base)", fillcolor="#dbe9f6"];')
    for row in rows:
        if row["status"] == "broken":
            continue
        label = f"{row['stage']}\\n{row['run']}"
        colour = "" if row["status"] == "complete" else ', fillcolor="#fde2e2"'
        lines.append(f'  "{row["run"]}" [label="{label}"{colour}];')
        source = row["parent"] if row.get("parent") else f"base:{row['base']}"
        lines.append(f'  "{source}" -> "{row["run"]}";')
    lines.append("}")
    return "\n".join(lines)


def curves(
    run_dirs: Sequence[str | Path], names: Sequence[str] | None = None
) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{curve name: {run label: [(step, value)]}} from each run's metrics.jsonl, for the curves in `CURVES` (or
    `names`: those curves, or keys of metrics.jsonl such as `grad_norm`); runs are labelled by `run_labels`."""
    wanted = {name: CURVES.get(name, (name,)) for name in names} if names is not None else CURVES
    found: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for run_dir, label in zip(run_dirs, run_labels(run_dirs), strict=True):
        path = Path(run_dir) / "metrics.jsonl"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by a killed run
            for name, keys in wanted.items():
                key = next((k for k in keys if isinstance(row.get(k), int | float)), None)
                if key is not None and row.get("step") is not None:
                    found.setdefault(name, {}).setdefault(label, []).append((row["step"], row[key]))
    return found


def run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """Each run's name in a legend: its directory's name, with as many parent dirs as it takes to tell runs of one
    name apart (`exp-a/sft`, `exp-b/sft`): two runs under one label would be drawn as one line."""
    paths = [Path(run_dir).resolve() for run_dir in run_dirs]
    for depth in range(1, max((len(path.parts) for path in paths), default=1)):
        labels = ["/".join(path.parts[-depth:]) for path in paths]
        if len(set(labels)) == len(set(paths)):
            return labels
    return [str(path) for path in paths]


def eval_results(places: list[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable `eval.json` in the given dirs (and one level below them), newest first."""
    files: set[Path] = set()
    for place in map(Path, places):
        if place.is_dir():
            files |= {*place.glob("eval.json"), *place.glob("*/eval.json")}
    results = []
    for path in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            results.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue
    return results


def eval_tables(results: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per-run rows: perplexity, forgetting, words, reward; per-comparison rows: win-rates and KL) of an eval.json."""
    per_run = []
    for name, figures in results.get("runs", {}).items():
        forgetting = figures.get("forgetting") or {}
        per_run.append(
            {
                "run": name,
                "general ppl": figures.get("general_ppl"),
                "ppl ratio vs base": forgetting.get("ppl_ratio"),
                "forgetting": forgetting.get("forgetting"),
                "mean words": figures.get("mean_words"),
                "reward mean": figures.get("reward_mean"),
            }
        )
    comparisons = []
    for name, comparison in results.get("comparisons", {}).items():
        comparisons.append(
            {
                "comparison": name,
                "win-rate (oracle)": (comparison.get("oracle") or {}).get("win_rate"),
                "win-rate (reward model)": (comparison.get("reward_model") or {}).get("win_rate"),
                # `kl_to_baseline` of older files was a log-ratio on greedy answers, no KL: not shown as one
                "KL along answers": comparison.get("kl_along_answers"),
            }
        )
    return per_run, comparisons


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def config_diff(first: str | Path, second: str | Path) -> list[dict[str, Any]]:
    """The config keys whose values differ between two runs (dotted keys, as `--set` takes them)."""
    a, b = (
        flatten(yaml.safe_load((Path(p) / "config.yaml").read_text(encoding="utf-8")) or {}) for p in (first, second)
    )
    return [
        {"key": key, Path(first).name: a.get(key), Path(second).name: b.get(key)}
        for key in sorted(a.keys() | b.keys())
        if a.get(key) != b.get(key)
    ]


def read_config(run_dir: str | Path) -> dict[str, Any]:
    return yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8")) or {}


def plot_curves(run_dirs: str | Path | Sequence[str | Path], names: Sequence[str] | None = None) -> Any:
    """A matplotlib figure of the runs' logged curves (`CURVES`, or those in `names`: curves or keys of the runs'
    metrics.jsonl), one panel per curve. `run_dirs`: run directories (or `Run`s), or one."""
    import matplotlib.pyplot as plt

    if isinstance(run_dirs, str | os.PathLike):
        run_dirs = [run_dirs]
    for run_dir in run_dirs:
        if not Path(run_dir).is_dir():
            raise AlignkitError(f"{run_dir}: does not exist", "pass a run directory (`alignkit runs` lists them)")
    found = curves(run_dirs, names)
    unknown = [name for name in names or [] if name not in CURVES and name not in found]
    if unknown:  # a known curve these runs do not log (no validation split) is left out; a name no run logs is a typo
        raise AlignkitError(
            f"no curve {', '.join(map(repr, unknown))} in these runs",
            f"curves: {', '.join(CURVES)}, or a key of their metrics.jsonl (e.g. 'grad_norm', 'learning_rate')",
        )
    fig, axes = plt.subplots(1, max(1, len(found)), figsize=(4 * max(1, len(found)), 3), squeeze=False)
    for ax, (name, per_run) in zip(axes[0], found.items(), strict=False):
        for run_name, points in per_run.items():
            ax.plot([step for step, _ in points], [value for _, value in points], marker=".", label=run_name)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    return fig
