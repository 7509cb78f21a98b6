"""The docs as a new user copies from them: every `alignkit ...` command line in README.md and docs/*.md names a real
command with options it accepts, its `--set` keys are keys of that stage's config, and the bundled YAML configs
load."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from alignkit import models
from alignkit.cli import app
from alignkit.config import STAGE_CONFIGS, config_class, load_config
from alignkit.demo import DemoConfig

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "datasets" / "README.md"]
STAGES = STAGE_CONFIGS  # each training command's config


def command_lines() -> list[tuple[str, str]]:
    """(where, the arguments after `alignkit`) of every command line in the docs' code blocks and inline code."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
        lines = [line.strip() for block in blocks for line in block.splitlines()]
        lines += re.findall(r"`(alignkit [^`]+)`", text)
        for line in lines:
            for part in line.split("&&"):
                part = re.sub(r"\s+#.*$", "", part.strip())  # a trailing shell comment
                match = re.match(r"^(?:.*-m alignkit\.cli|alignkit)\s+(.+)$", part)
                if match:
                    found.append((f"{doc.relative_to(REPO)}: {part}", match.group(1)))
    return found


def resolve(args: list[str]) -> tuple[Any, list[str], list[str]]:
    """The (Typer-built click) command the arguments name, the sub-command path, and the arguments left."""
    command = typer.main.get_command(app)
    path = []
    while args and args[0] in getattr(command, "commands", {}):
        path.append(args[0])
        command = command.commands[args.pop(0)]
    return command, path, args


LINES = command_lines()


def test_the_docs_show_command_lines():
    assert len(LINES) > 60  # the parsing above still finds the README's and docs' examples


@pytest.mark.parametrize(("where", "arguments"), LINES, ids=[where for where, _ in LINES])
def test_every_documented_command_line_uses_a_real_command_and_its_options(where, arguments):
    args = shlex.split(arguments.replace("[", "").replace("]", ""))
    command, path, rest = resolve(args)
    if hasattr(command, "commands"):  # `alignkit <stage> ...`, `alignkit feedback ...`: a placeholder or prose
        assert not rest or rest[0].startswith(("<", "...", "--help")), f"{where}: no command {rest[0]!r}"
        return
    options = {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
    for arg in rest:
        if arg.startswith("--") and arg not in ("--verbose", "--help"):
            assert arg.split("=")[0] in options, f"{where}: `alignkit {' '.join(path)}` has no option {arg}"
    sets = [rest[i + 1] for i, arg in enumerate(rest[:-1]) if arg == "--set" and "=" in rest[i + 1]]
    stage = STAGES.get(path[0]) if path else None
    if path == ["demo"]:
        load_config(DemoConfig, overrides=[s for s in sets if not s.endswith("=...")])
    elif stage is not None:
        check_stage_sets(stage, [s for s in sets if not s.endswith("=...")], where)


def check_stage_sets(stage: type[Any], sets: list[str], where: str) -> None:
    """`--set` values load into the stage's config, and its `trainer.`/`peft.` keys are fields of the TRL / peft
    config they are passed to (`learning_rate=...` alone is the docs' example of the did-you-mean error)."""
    sets = [s for s in sets if not s.startswith("learning_rate=")]
    load_config(stage, overrides=sets)
    trainer_fields = {f.name for cls in stage.TRAINER_CONFIGS for f in dataclasses.fields(config_class(cls))}
    peft_fields = {f.name for f in dataclasses.fields(config_class("peft:LoraConfig"))}
    for item in sets:
        key = item.partition("=")[0]
        section, _, leaf = key.partition(".")
        if section == "trainer":
            assert leaf in trainer_fields, f"{where}: {key} is no field of {stage.TRAINER_CONFIGS}"
        elif section == "peft":
            assert leaf in peft_fields | {"method"}, f"{where}: {key} is no field of peft's LoraConfig"


@pytest.mark.parametrize("name", ["sft", "pretrain"])
def test_the_bundled_configs_load_and_their_peft_keys_are_the_defaults_users_read(name, monkeypatch):
    monkeypatch.chdir(REPO)  # the configs name datasets/ relative to the repository
    cfg = load_config(STAGES[name], REPO / "configs" / f"{name}.yaml")
    assert all(Path(path).is_file() for path in cfg.data.paths)
    # a key the YAML spells out equals alignkit's default for it: the file documents the defaults, not other ones
    resolved = models.resolved_peft(cfg.peft)
    assert {key: resolved[key] for key in models.PEFT_DEFAULTS["lora"]} == models.PEFT_DEFAULTS["lora"]
