"""Run directories: one per stage run, with resolved config, manifest, metrics, adapter and checkpoints.

Layout (`runs/<stage>-<yyyymmdd-hhmmss>-<id>/`): `config.yaml`, `manifest.json` (versions, git commit, data hashes,
the train and validation rows' counts and digests, parent run, seed, device, precision, status), `metrics.jsonl`
(every logged step), `metrics.json` (final figures), `adapter/` or `model/`, `checkpoints/`, `log.txt`. A run is
complete only once `manifest.json` says `"status": "complete"`, which is written last. Runs record; a run's model
is built by `alignkit/lineage.py`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from alignkit import distributed, logs, models
from alignkit.config import RUN_KEYS, ModelConfig, to_yaml
from alignkit.errors import AlignkitError, command, first_line, option, shown
from alignkit.paths import check_replaceable, known_sha256, saved_split

TRACKED_PACKAGES = ("alignkit", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers")


@dataclass(repr=False)
class Run:
    """A run directory on disk; usable wherever a path is (`os.PathLike`)."""

    path: Path
    fresh: bool = field(default=False, compare=False)  # made by this process's `create` (not resumed)
    replaced: Path | None = field(default=None, compare=False)  # the dir it replaced, kept aside until set up

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def __fspath__(self) -> str:
        """A run is its directory: `from_run=run`, `alignkit.chat(..., run=run)` and `Path(run)` take it as a path."""
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        """What a notebook shows for a returned or listed run: `Run('runs/sft', stage='sft', status='complete')`."""
        try:
            manifest = self.manifest
            return f"Run({str(self.path)!r}, stage={manifest.get('stage')!r}, status={self.status!r})"
        except (OSError, ValueError):  # no manifest yet, or a damaged one: `alignkit runs` says which
            return f"Run({str(self.path)!r})"

    def update_config(self, section: str, values: dict[str, Any]) -> None:
        """Merge `values` into one section of config.yaml, so `--config RUN/config.yaml` reproduces the run as a
        resume changed it."""
        path = self.path / "config.yaml"
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        config[section] = {**(config.get(section) or {}), **values}
        write_text_atomic(path, yaml.safe_dump(config, sort_keys=False))

    def update_trainer_options(self, options: dict[str, Any]) -> None:
        """Record `trainer:` options changed on a resume (its new length) in config.yaml and the manifest."""
        self.update_config("trainer", options)
        self.update_manifest(trainer_args={**self.manifest.get("trainer_args", {}), **options})

    def update_data_paths(self, moved: dict[str, str]) -> None:
        """Record data files found at new places (`moved`: old source -> new) in config.yaml and the manifest."""
        path = self.path / "config.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8")).get("data") or {}
        keys = ("paths", "validation_paths")
        self.update_config("data", {key: [moved.get(source, source) for source in data.get(key) or []] for key in keys})
        self.update_manifest(data={moved.get(k, k): v for k, v in self.manifest.get("data", {}).items()})

    def update_base_path(self, name: str) -> None:
        """Record the base model found at a new place (`name`: the same weights) in config.yaml and the manifest."""
        self.update_config("model", {"name": name})
        manifest = self.manifest
        base = manifest.get("base")
        self.update_manifest(model={**manifest.get("model", {}), "name": name}, base=base and {**base, "name": name})

    @property
    def manifest(self) -> dict[str, Any]:
        return read_json(self.path / "manifest.json")

    @property
    def stage(self) -> str:
        return self.manifest["stage"]

    @property
    def recorded_model_config(self) -> ModelConfig:
        """The base model this run was trained on, as its manifest records it (the path it had then)."""
        recorded = self.manifest.get("model", {})
        return ModelConfig(**{k: v for k, v in recorded.items() if k in ModelConfig.__dataclass_fields__})

    @property
    def model_config(self) -> ModelConfig:
        """The base model this run was trained on, where it is now (`models.base_now`: moved, it is found by the
        sha256 of its weights; gone, one line says how to point at it). A run whose lineage holds a whole model (a
        full fine-tune's `model/`) is built without its base: where the base is gone, the recorded one is returned."""
        return self.base_config(required=not self.holds_whole_model)

    def base_config(self, required: bool = True) -> ModelConfig:
        """`model_config`, refused where the base is not found unless not `required` (the recorded one instead)."""
        recorded, identity = self.recorded_model_config, self.manifest.get("base")
        return models.base_now(recorded, identity, self.path, self.saved_tokenizers, required=required)

    @property
    def holds_whole_model(self) -> bool:
        """Whether a run of this run's lineage saved a whole model (`model/`), which its model is built from."""
        return any((Path(step["run"]) / "model").is_dir() for step in self.lineage)

    @property
    def saved_tokenizers(self) -> list[Path]:
        """The folders of this run's lineage that may hold the tokenizer it was trained with, oldest run first: what
        a base moved since is checked against where the manifest records no sha256 of it (`models.base_now`)."""
        steps = self.lineage or [{"run": str(self.path)}]
        return [Path(step["run"]) / part for step in steps for part in ("tokenizer", "adapter", "model")]

    @property
    def metrics(self) -> dict[str, Any]:
        path = self.path / "metrics.json"
        return read_json(path) if path.exists() else {}

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    @property
    def status(self) -> str:
        """The manifest's status, except that a `running` run whose process on this machine is gone is `stopped`
        (killed, or the machine restarted): it can be resumed, and nothing is training it."""
        status = self.manifest.get("status") or "?"
        owner = self.manifest.get("process") or {}
        if status == "running" and owner.get("host") == platform.node() and not process_alive(owner):
            return "stopped"
        return status

    def training_elsewhere(self) -> int | None:
        """The pid of another live process on this machine that is training the run now, if any."""
        owner = self.manifest.get("process") or {}
        here = owner.get("host") == platform.node() and owner.get("pid") != os.getpid()
        return owner.get("pid") if here and self.status == "running" else None  # `status`: running and alive here

    def mark_running(self) -> None:
        """Record this process as the run's trainer (at creation and at every resume)."""
        self.update_manifest(status="running", process=this_process())

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def lineage(self) -> list[dict[str, Any]]:
        """The runs whose adapters make this model, oldest first (this run last): `{"stage", "run"}` with `run` an
        absolute path. The manifest stores them relative to this run's dir, so runs/ (or a run with its parents)
        can be moved or copied; absolute entries of older runs are read as they are."""
        return [step | {"run": str(self.resolve(step["run"]))} for step in self.manifest.get("lineage", [])]

    @property
    def parent_path(self) -> Path | None:
        parent = self.manifest.get("parent")
        return self.resolve(parent) if parent else None

    def resolve(self, recorded: str) -> Path:
        """A path this run's files record relative to its dir (parent, lineage, `best_checkpoint`, ...) as an
        absolute path; absolute ones of older runs as they are."""
        return (self.path / recorded).resolve()

    def relative(self, target: str | Path) -> str:
        """`target` as this run's files record it: relative to the run dir, so the run can be moved."""
        return relative_to_run(Path(target), self.path)

    def lineage_fault(self) -> tuple[str, str] | None:
        """The first run of this run's parent and lineage, as recorded, that is not the run this one was made from:
        (its recorded path, `missing`) where no run is there (copied or moved without its parents), `replaced`
        where another run is (trained again since, `--overwrite`, or another copied over it: the `id` its manifest
        records differs from the one this run's lineage recorded), `broken` where its manifest is unreadable. Runs
        made before ids were recorded are not compared."""
        manifest = self.manifest
        steps = [{"run": manifest.get("parent")}, *manifest.get("lineage", [])]
        for step in steps:
            if step["run"] and step["run"] != "." and (fault := self.recorded_run_fault(step["run"], step.get("id"))):
                return step["run"], fault
        return None

    def recorded_run_fault(self, recorded: str, recorded_id: str | None) -> str | None:
        """`missing`, `replaced` or `broken` (see `lineage_fault`) for another run this one records (`recorded`,
        relative to this run's dir, with the `id` it had), else None."""
        there = self.resolve(recorded) / "manifest.json"
        if not there.is_file():
            return "missing"
        try:
            return "replaced" if recorded_id and read_json(there).get("id") != recorded_id else None
        except (OSError, ValueError):
            return "broken"

    @property
    def tokenizer_dir(self) -> Path:
        """The tokenizer this run gave its lineage (a chat template added to the base's), if it did."""
        return self.path / "tokenizer"

    def checkpoints(self) -> list[Path]:
        """Every `checkpoint-<step>` dir, oldest step first (finished saving or not)."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [c for c in self.checkpoints_dir.glob("checkpoint-*") if c.name.split("-")[-1].isdigit()]
        return sorted(found, key=checkpoint_step)

    def last_checkpoint(self) -> str | None:
        """Newest checkpoint that finished saving (see `checkpoint_complete`), else None."""
        done = [c for c in self.checkpoints() if checkpoint_complete(c)]
        return str(done[-1]) if done else None

    def discard_unfinished_checkpoints(self) -> list[Path]:
        """Before resuming: remove checkpoints newer than the last complete one (a save cut short by a kill) and the
        metrics.jsonl rows logged after it, so the resumed run rewrites both from the checkpoint on."""
        last = self.last_checkpoint()
        step = checkpoint_step(Path(last)) if last else 0
        removed = [c for c in self.checkpoints() if checkpoint_step(c) > step or not checkpoint_complete(c)]
        for checkpoint in removed:
            logger.warning("removing %s: its save did not finish", checkpoint)
            shutil.rmtree(checkpoint)
        metrics = self.path / "metrics.jsonl"
        if metrics.is_file():
            kept = [line for line in metrics.read_text(encoding="utf-8").splitlines() if logged_step(line) <= step]
            write_text_atomic(metrics, "".join(line + "\n" for line in kept))
        return removed

    def update_manifest(self, **fields: Any) -> None:
        write_json(self.path / "manifest.json", {**self.manifest, **fields})

    def log_metrics(self, row: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def finish(self, metrics: dict[str, Any]) -> Run:
        """Write final metrics, then mark the run complete (last, so a killed run never looks complete)."""
        write_json(self.path / "metrics.json", metrics)
        self.update_manifest(status="complete", finished=now_iso())
        return self

    @contextmanager
    def removed_if_refused(self) -> Iterator[Run]:
        """The set-up of a run `create` just made (loading the model, building the trainer): an `AlignkitError`, a
        Ctrl-C or a crash in it removes the run dir and puts back the one it replaced, so a stage stopped before it
        trained leaves no run behind. A resumed run is left as it was."""
        try:
            yield self
        except BaseException:
            if self.fresh and distributed.is_main():
                detach_log(self)
                shutil.rmtree(self.path, ignore_errors=True)
                if self.replaced is not None:
                    os.replace(self.replaced, self.path)
                self.fresh, self.replaced = False, None
            raise
        if self.replaced is not None:
            shutil.rmtree(self.replaced, ignore_errors=True)
            self.replaced = None


# What a checkpoint must hold to resume from. transformers writes trainer_state.json last, but not atomically, and
# deletes old checkpoints file by file (save_total_limit): a kill can leave any of these missing or cut short.
CHECKPOINT_WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
CHECKPOINT_STATE = ("optimizer.pt", "scheduler.pt")


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[-1])


def checkpoint_complete(checkpoint: Path) -> bool:
    """A checkpoint finished saving: trainer_state.json parses and names this step, weights and optimizer are there."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if state.get("global_step") != checkpoint_step(checkpoint):
        return False
    has_weights = any((checkpoint / name).is_file() for name in CHECKPOINT_WEIGHTS)
    return has_weights and all((checkpoint / name).is_file() for name in CHECKPOINT_STATE)


def logged_step(line: str) -> int:
    """The step of one metrics.jsonl row (a row cut short by a kill counts as after every checkpoint)."""
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError, TypeError):
        return sys.maxsize


def plan_path(stage: str, cfg: Any) -> Path:
    """Where the run will live: `--out`, the resumed run, or a new `runs/<stage>-<time>-<id>`; checked, not made.

    Under `accelerate launch` the main process decides and checks; every process gets its answer.
    """
    return distributed.from_main(lambda: _plan_path(stage, cfg))


def _plan_path(stage: str, cfg: Any) -> Path:
    if cfg.resume:
        return find_resumable(stage, cfg).path
    path = (
        Path(cfg.out)
        if cfg.out
        else Path(cfg.runs_dir) / f"{stage}-{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    )
    if path.exists() and not path.is_dir():
        raise AlignkitError(f"{path}: exists and is not a directory", f"pass another {option('out')}")
    if path.is_dir() and any(path.iterdir()) and not cfg.overwrite:
        raise AlignkitError(
            f"{path}: output directory exists and is not empty",
            f"pass {option('resume', True)} to continue it, {option('overwrite', True)} to replace it, or another "
            f"{option('out')}",
        )
    check_replaceable(path, "manifest.json", "a run directory")
    return path


def create(
    stage: str,
    cfg: Any,
    path: Path,
    data_files: list[str],
    parent: Run | None = None,
    tokenizer: Any = None,
    skipped_rows: dict[str, int] | None = None,
    **manifest: Any,
) -> Run:
    """Create (or, with `cfg.resume`, reopen) the run directory and write its config and manifest, and `tokenizer`
    as `tokenizer/` when the run makes its lineage's tokenizer (see `lineage.lineage_tokenizer`).

    The manifest's `data` gives each data file's sha256; with `skipped_rows` (`data.skip_bad_rows`: data file ->
    rows left out as failing the checks) each file's entry is `{"sha256", "skipped_rows"}` (`data_sha256` reads both).

    Only the main process writes; the others wait until the directory is there. Set the run up inside
    `run.removed_if_refused()`.
    """
    run = Run(path)
    if not distributed.is_main():
        distributed.wait_for_everyone()
        return run
    try:
        return _create(stage, cfg, run, data_files, parent, tokenizer, skipped_rows, **manifest)
    finally:
        distributed.wait_for_everyone()


def _create(
    stage: str,
    cfg: Any,
    run: Run,
    data_files: list[str],
    parent: Run | None,
    tokenizer: Any,
    skipped_rows: dict[str, int] | None,
    **manifest: Any,
) -> Run:
    path = run.path
    if cfg.resume:
        run.mark_running()
        attach_log(run)
        run.discard_unfinished_checkpoints()
        logger.info("resuming %s from %s", run.path, run.last_checkpoint() or "the start")
        run.update_manifest(distributed=distributed.manifest())  # this launch's; each part's in `training_parts`
        return run
    # Built beside the target and renamed into place: the run dir exists only with its config and manifest.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "config.yaml").write_text(to_yaml(recorded_config(cfg, path)), encoding="utf-8")
    ancestors = parent.lineage if parent else []
    write_json(
        tmp / "manifest.json",
        {
            "stage": stage,
            "status": "running",
            "process": this_process(),
            "created": now_iso(),
            "seed": cfg.seed,
            "model": dataclasses.asdict(cfg.model),
            "id": secrets.token_hex(8),  # tells this run from one trained again in its place (`lineage_fault`)
            "parent": relative_to_run(parent.path, path) if parent else None,
            "lineage": [
                step | {"run": relative_to_run(Path(step["run"]), path), "id": Run(step["run"]).manifest.get("id")}
                for step in ancestors
            ]
            + [{"stage": stage, "run": "."}],
            "data": data_entries(data_files, skipped_rows),
            "git_commit": git_commit(),
            "versions": package_versions(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "distributed": distributed.manifest(),
            **manifest,
        },
    )
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp / "tokenizer")
    if path.exists():  # plan_path allowed it: empty, or --overwrite; kept aside until the run is set up
        run.replaced = path.with_name(f".{path.name}.replaced-{os.getpid()}")
        shutil.rmtree(run.replaced, ignore_errors=True)
        os.replace(path, run.replaced)
    os.replace(tmp, path)
    run.fresh = True
    attach_log(run)
    return run


def data_entries(data_files: list[str], skipped_rows: dict[str, int] | None) -> dict[str, Any]:
    """The manifest's `data`: each local data file's sha256, with the rows left out of it where rows were skipped."""
    entries: dict[str, Any] = {}
    for source in data_files:
        local = saved_split(source)[0]
        if local.exists():
            digest = known_sha256(local)
            skipped = skipped_rows.get(source, 0) if skipped_rows is not None else None
            entries[source] = digest if skipped is None else {"sha256": digest, "skipped_rows": skipped}
    return entries


def data_sha256(entry: Any) -> str | None:
    """A data file's sha256 as the manifest's `data` records it: the entry, or its `sha256` where rows were skipped."""
    return entry.get("sha256") if isinstance(entry, dict) else entry


def recorded_config(cfg: Any, path: Path) -> Any:
    """`cfg` as the run at `path` records it in config.yaml: other runs relative to it (`config.RUN_KEYS`), no `out`."""
    other_runs = {key: relative_to_run(Path(getattr(cfg, key)), path) for key in RUN_KEYS if getattr(cfg, key, None)}
    return dataclasses.replace(cfg, out=None, **other_runs)


def this_process() -> dict[str, Any]:
    return {"host": platform.node(), "pid": os.getpid(), "started": process_start(os.getpid())}


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, Linux), so that a later process given the same pid is not
    taken for it; None where /proc does not say."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def process_alive(owner: dict[str, Any]) -> bool:
    """Whether the process `owner` records (`this_process`) still runs: its pid, and where known its start time."""
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    started = owner.get("started")
    return started is None or process_start(pid) in (None, started)


def relative_to_run(target: Path, run_dir: Path) -> str:
    """`target` as a path relative to `run_dir` (`../sft`), as manifests store their parents."""
    return Path(os.path.relpath(target.resolve(), run_dir.resolve())).as_posix()


def find_resumable(stage: str, cfg: Any) -> Run:
    if cfg.out:
        path = Path(cfg.out)
        if not (path / "manifest.json").is_file():
            raise AlignkitError(
                f"{path}: no run to resume here (no manifest.json)", f"drop {option('resume', True)} to start a new run"
            )
        run = Run(path)
    else:
        found = list_runs(Path(cfg.runs_dir))
        candidates = [r for r in found if r.stage == stage and not r.complete and not r.training_elsewhere()]
        if not candidates:
            raise AlignkitError(
                f"no unfinished {stage} run in {cfg.runs_dir}/ to resume", f"pass {option('out', 'RUN_DIR')}"
            )
        run = candidates[-1]
    if run.stage != stage:
        raise AlignkitError(
            f"{run.path}: is a {run.stage} run, not {stage}",
            f"resume it with `{command(run.stage, resume=True, out=run.path)}`",
        )
    if run.complete:
        raise AlignkitError(f"{run.path}: run is already complete", f"start a new run with another {option('out')}")
    if pid := run.training_elsewhere():
        raise AlignkitError(f"{run.path}: process {pid} is training this run now", "wait for it, or stop it first")
    check_lineage(run)
    check_reward_run(run)
    return run


def check_reward_run(run: Run) -> None:
    """Refuse to resume an rl run whose reward run (`--reward`) is another run than the one it started training
    against (trained again in its place, or another copied over it: the `reward_run_id` its manifest records differs):
    the resumed steps would chase another reward. A missing one is said where it is opened."""
    recorded = run.manifest.get("reward_run")
    if recorded and run.recorded_run_fault(recorded, run.manifest.get("reward_run_id")) == "replaced":
        raise AlignkitError(
            f"reward run {recorded} of {run.path} is another run than the one {run.path} was trained against "
            "(trained again or replaced since): the resumed steps would learn another reward",
            f"put back the reward run it was trained against, or start a new rl run with another {option('out')}",
        )


def open_run(path: str | Path, require_complete: bool = True) -> Run:
    """A run directory given by the user (`--from`), checked for being a finished run."""
    if not isinstance(path, str | os.PathLike):
        raise AlignkitError(f"{shown(path)}: not a run directory", "pass its path (a str, a Path or a Run)")
    run = Run(Path(path))
    if not run.path.exists():
        raise AlignkitError(f"{run.path}: does not exist", "pass a run directory (`alignkit runs` lists them)")
    if not (run.path / "manifest.json").is_file():
        raise AlignkitError(f"{run.path}: not a run directory (no manifest.json)", "pass a directory under runs/")
    try:
        manifest = run.manifest
    except ValueError:  # not JSON, not text, or not an object
        raise AlignkitError(f"{run.path}/manifest.json: unreadable", "the run was damaged; pick another run") from None
    check_lineage(run)
    if require_complete and manifest.get("status") != "complete":
        raise AlignkitError(
            f"{run.path}: run did not finish (status {manifest.get('status')!r})",
            f"resume it with `{command(manifest.get('stage', '<stage>'), resume=True, out=run.path)}`",
        )
    return run


def check_lineage(run: Run) -> None:
    """Refuse a run whose parent or an earlier ancestor is not the run it was made from (`Run.lineage_fault`): its
    model would be built, or its training resumed, on other weights than it started from."""
    manifest = run.manifest
    if fault := run.lineage_fault():
        recorded, kind = fault
        which = "parent" if recorded == manifest.get("parent") else "ancestor"
        if kind == "missing":
            raise AlignkitError(
                f"{which} run {recorded} of {run.path} is missing",
                "copy it alongside: a run finds its lineage relative to its own dir",
            )
        if kind == "broken":
            raise AlignkitError(f"{which} run {recorded} of {run.path}: manifest.json unreadable", "it was damaged")
        raise AlignkitError(
            f"{which} run {recorded} of {run.path} is another run than the one {run.path} was trained on (trained "
            "again or replaced since): its model would be built on the wrong weights",
            f"put back the run it was trained on, or train {manifest.get('stage', 'it')} again from the new one",
        )


def open_policy(path: str | Path, model_name: str | None = None, key: str = "from_run") -> Run:
    """A finished run given as a policy (`key`: the option that named it): a reward run is refused (its model scores
    answers, it does not write them), and so is a `model_name` (`--model`; None: not given) other than the run's base,
    which would otherwise be ignored: a run's model is its own base with its adapters. The same base at a new place
    (same weights) is taken: the run's model is built on it (`models.take_moved_base`)."""
    run = open_run(path)
    if run.stage == "reward":
        raise AlignkitError(f"{run.path}: is a reward model, not a policy", f"pass {option(key)} an sft (or dpo) run")
    if model_name is not None:  # the same base, perhaps at a new place (its weights' sha256 is checked)
        models.take_moved_base(
            run.recorded_model_config, run.manifest.get("base"), model_name, run.path, run.saved_tokenizers
        )
    return run


def policy_source(run: Run) -> dict[str, str]:
    """How the candidates a run writes (`generate`, `synth`) name it: its path now, its `id` (the same wherever runs/
    is moved or copied: `same_policy`) and its base model."""
    return {
        "run": str(run.path.resolve()),
        "run_id": run.manifest.get("id") or "",
        "model": run.manifest["model"]["name"],
    }


def same_policy(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two candidates' sources (`policy_source`) name one policy: the same run `id` where both record one (a
    run moved or copied keeps it, one trained again in its place does not), else the same run path, else the same
    model."""
    if one.get("run_id") and other.get("run_id"):
        return one["run_id"] == other["run_id"]
    return (one.get("run") or one.get("model") or "") == (other.get("run") or other.get("model") or "")


MODEL_PARTS = ("adapter", "model", "tokenizer")  # the folders of a run its model is built from


def lineage_digests(run: Run, digest: Callable[[Path], str] = known_sha256) -> list[list[str]]:
    """`[part, sha256]` of each run of `run`'s lineage, oldest first, for each of its `MODEL_PARTS` folders: what tells
    the model it builds from another (a run trained again or resumed has other files), not where the runs are."""
    return [
        [part, digest(Path(step["run"]) / part)]
        for step in run.lineage
        for part in MODEL_PARTS
        if (Path(step["run"]) / part).is_dir()
    ]


def policy_key(source: dict[str, Any]) -> str:
    """What a candidate's source (`policy_source`) is grouped by: its run `id` where recorded (the same wherever
    runs/ is moved or copied, and another for a run trained again in its place), else its run path, else its model."""
    return str(source.get("run_id") or source.get("run") or source.get("model") or "")


def with_run_id(source: dict[str, Any]) -> dict[str, Any]:
    """`source` (`policy_source`) with the `id` of the run at its `run` path where it records none (written before
    runs had ids: older pulls, generate files, playground feedback), so it is told by id as the newer ones are; as it
    is where no run is there any more (moved since): then only its path tells it."""
    if source.get("run_id") or not source.get("run"):
        return source
    try:
        run_id = read_json(Path(source["run"]) / "manifest.json").get("id")
    except (OSError, ValueError):
        return source
    return source | {"run_id": run_id} if isinstance(run_id, str) and run_id else source


def policy_in_file(source: dict[str, Any], folder: Path) -> dict[str, str]:
    """A policy (`policy_source`, its run path absolute) as a file in `folder` names it (a pairs file, a manifest's
    `pairs_origin`): its run's `run_id`, with the run's path relative to `folder` as a hint (read from any working
    directory, and the same after the project moved whole), else its model."""
    named = {key: str(source[key]) for key in ("run_id", "run") if source.get(key)}
    if "run" in named:
        named["run"] = relative_to_run(Path(named["run"]), folder)
    return named or {"model": str(source.get("model") or "")}


def policy_from_file(entry: str | dict[str, Any], folder: Path) -> dict[str, Any]:
    """A policy as a file in `folder` names it (`policy_in_file`; a run path alone in older pulls) with its run path
    absolute and a `run_id` where one can be found (`with_run_id`). Pulls before paths were relative to their file
    wrote them relative to the working directory: one that leads to no run from `folder` (none, or one with another id
    than recorded) is read from there."""
    named = {"run": entry} if isinstance(entry, str) else dict(entry)
    if not named.get("run"):
        return named
    recorded = Path(named["run"]).expanduser()

    def the_run(where: Path) -> bool:  # a run is there: the one recorded, where the file records its id
        if not (where / "manifest.json").is_file():
            return False
        return not named.get("run_id") or named["run_id"] == with_run_id({"run": str(where)}).get("run_id")

    found = next((where for where in (folder / recorded, recorded.resolve()) if the_run(where)), folder / recorded)
    return with_run_id(named | {"run": str(found.resolve())})


def looks_like_path(run: str) -> bool:
    """Whether a policy's `run` as a data file gives it is meant as a run path (`runs/sft`, `./sft`, `~/runs/sft`)
    rather than a label of the user's own ("gpt-4o", "embedded")."""
    return "/" in run or "\\" in run or run.startswith((".", "~"))


def policy_reader(data_path: str) -> Callable[[str | dict[str, Any]], dict[str, Any]]:
    """`policy_from_file` for the policies a data file at `data_path` names (a pairs file's `candidates_from`, a
    candidates file's `run`), from the file's folder; each distinct one read once (a file's rows name a few)."""
    folder = Path(data_path).expanduser().resolve()
    folder = folder if folder.is_dir() else folder.parent
    found: dict[str, dict[str, Any]] = {}

    def policy(entry: str | dict[str, Any]) -> dict[str, Any]:
        key = json.dumps(entry, sort_keys=True)
        if key not in found:
            found[key] = policy_from_file(entry, folder)
        return found[key]

    return policy


def lineage_stamp(run: Run) -> tuple[tuple[int, int], ...]:
    """What tells a run's model apart from the one a dir held before: the inode and modification time of the manifest
    of each run of its lineage (rewritten atomically whenever one is trained again: `--overwrite`, `--resume`). Models
    cached by run path (`alignkit.chat`, the playground) compare it to load a retrained run afresh."""
    stamps = []
    for step in run.lineage or [{"run": str(run.path)}]:
        stat = (Path(step["run"]) / "manifest.json").stat()
        stamps.append((stat.st_ino, stat.st_mtime_ns))
    return tuple(stamps)


def same_base(run: Run, other: Run) -> bool:
    """Whether two runs were trained on one base model: the same weights where both manifests record their sha256,
    else the same model name or path."""
    ours, theirs = (r.manifest.get("base") or {} for r in (run, other))
    if ours.get("sha256") and theirs.get("sha256"):
        return ours["sha256"] == theirs["sha256"]
    names = (r.recorded_model_config.name for r in (run, other))
    return len({Path(name).expanduser().resolve() for name in names}) == 1


def distinct_names(paths: Sequence[str | Path], taken: Collection[str] = ()) -> list[str]:
    """A name per run dir: the shortest tail of its path that no other path ends with and that is not `taken`
    (`runs/a/sft`, `runs/b/sft` -> `a/sft`, `b/sft`; `runs/sft`, `runs/dpo` -> `sft`, `dpo`). Paths must differ."""
    parts = [Path(p).resolve().parts for p in paths]
    names = []
    for i, own in enumerate(parts):
        others = [other for j, other in enumerate(parts) if j != i]
        for length in range(1, len(own) + 1):
            tail = own[-length:]
            if all(other[-length:] != tail for other in others) and Path(*tail).as_posix() not in taken:
                break
        names.append(Path(*tail).as_posix())
    return names


def run_dirs(runs_dir: str | Path) -> list[Path]:
    """Every run directory under `runs_dir`, sorted by path: its children that hold a manifest.json, and those of
    its group folders one level down (`runs/demo/sft`: the demo writes its runs as one group). Hidden ones (those
    `create` builds or keeps aside) are skipped; a broken manifest is still listed, for the caller to report."""
    runs_dir = Path(runs_dir)

    def children(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    found = []
    for path in children(runs_dir) if runs_dir.is_dir() else []:
        if (path / "manifest.json").is_file():
            found.append(path)
        else:
            found += [p for p in children(path) if (p / "manifest.json").is_file()]
    return found


def run_name(path: Path, runs_dir: str | Path) -> str:
    """How a run is shown: its path under `runs_dir` (`sft`, or `demo/sft` in a group folder), else its folder name."""
    try:
        return path.resolve().relative_to(Path(runs_dir).resolve()).as_posix()
    except ValueError:
        return path.name


def list_runs(runs_dir: Path) -> list[Run]:
    """Every readable run under `runs_dir` (`run_dirs`), oldest first."""
    found = []
    for path in run_dirs(runs_dir):
        try:
            found.append((Run(path).manifest.get("created", ""), Run(path)))
        except (OSError, ValueError):
            continue
    return [run for _, run in sorted(found, key=lambda pair: pair[0])]


logger = logging.getLogger("alignkit")


def attach_log(run: Run) -> None:
    """Send alignkit's and the libraries' log records to the run's log.txt (`logs.to_file`)."""
    logs.to_file(run.path / "log.txt")


def detach_log(run: Run) -> None:
    """Stop writing to the run's log.txt (its stage ended, or the run dir is about to be removed)."""
    logs.stop_file(run.path / "log.txt")


def git_commit() -> str | None:
    """Commit of the alignkit checkout in use (None when installed from a wheel)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def read_json(path: Path) -> dict[str, Any]:
    """A run file's JSON object; a `ValueError` naming the file for anything else (damaged, or another content)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # not JSON, or not text
        raise ValueError(f"{path.name}: not JSON ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: expected a JSON object, got {type(data).__name__}")
    return data


def jsonable(value: Any) -> Any:
    """`value` with sets as sorted lists, enums as their values and other objects as strings: what JSON can hold."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return getattr(value, "value", str(value))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write: a reader never sees half a file."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write a temp file beside `path`, flush it to disk, then rename it over `path`: all or nothing."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
