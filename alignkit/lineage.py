"""A run's model rebuilt from its lineage: the base + the adapters of its runs, oldest first, with the lineage's
tokenizer; for a reward run, the same backbone under its one-output head, as a `Scorer`.

The one place models are assembled from run directories (`runs.py` records lineages, `models.py` loads bases). A base
without a chat template is given ChatML by its first run, which saves the tokenizer for the rest (`lineage_tokenizer`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit import distributed, models, runs
from alignkit.config import ModelConfig
from alignkit.errors import AlignkitError, accepts, first_line, option
from alignkit.hardware import Precision, pick_precision

logger = logging.getLogger("alignkit")

REWARD_HEAD = "sequence-classification"  # the reward model: the policy's backbone under a one-output head


def load_run_model(run_dir: str | Path, trainable: bool = False, precision: Precision | None = None) -> tuple[Any, Any]:
    """Base + every adapter of the run's lineage: ancestors merged in memory, the run's own adapter kept as a PeftModel.

    Returns (model, tokenizer): the lineage's tokenizer (`lineage_tokenizer`). The model is in eval mode unless
    `trainable`. A reward run's model is `load_scorer`'s.
    """
    return assemble(runs.open_run(run_dir), precision, "causal-lm", trainable)


def load_inference_model(run_dir: str | Path, precision: Precision | None = None) -> tuple[Any, Any]:
    """`load_run_model` with the run's own adapter merged too: the same model without the adapter's extra matmuls
    on every layer (generation, evaluation, perplexity). Returns (model, tokenizer), in eval mode."""
    model, tokenizer = load_run_model(run_dir, precision=precision)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload().eval()
    return model, tokenizer


@dataclass
class Scorer:
    """A reward model as a function: one float per (prompt, completion), higher is better."""

    model: Any
    tokenizer: Any
    batch_size: int = 8
    progress: str | None = None  # a progress bar's label while scoring; None: quiet (RL scores every step)

    def score(
        self,
        prompts: list[str] | list[list[dict[str, str]]],
        completions: list[str] | list[dict[str, str]] | list[list[dict[str, str]]],
        tools: Sequence[list[dict[str, Any]] | None] | None = None,
    ) -> list[float]:
        """Rewards of each completion (a string, an assistant message, or a list of them) as the reply to its prompt
        (a string: one user turn, or messages). `tools`: each prompt's function schemas, rendered as when its reply
        was generated."""
        conversations = [
            [*as_turns(prompt, "user"), *as_turns(reply, "assistant")]
            for prompt, reply in zip(prompts, completions, strict=True)
        ]
        return self.score_conversations(conversations, tools)

    def score_conversations(
        self, conversations: list[list[dict[str, str]]], tools: Sequence[list[dict[str, Any]] | None] | None = None
    ) -> list[float]:
        """Rewards of whole conversations, tokenized through the chat template exactly as in training (with each
        conversation's `tools`, when given).

        Each distinct conversation is scored once (a candidate sits in several preference pairs), in batches of
        similar length so that little of each batch is padding.
        """
        import torch
        from tqdm.auto import tqdm

        tools = tools or [None] * len(conversations)
        ids = [
            tuple(self.tokenizer.apply_chat_template(c, tools=t or None, tokenize=True, return_dict=True)["input_ids"])
            for c, t in zip(conversations, tools, strict=True)
        ]
        distinct = list(set(ids))
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        scores: dict[tuple[int, ...], float] = {}
        quiet = self.progress is None or not distributed.is_main()  # under accelerate every process scores them all
        bar = tqdm(total=len(distinct), desc=self.progress, unit="conversation", disable=quiet)
        with torch.no_grad(), bar:
            for chunk, batch in models.length_sorted_batches(self.tokenizer, distinct, self.batch_size, device):
                logits = self.model(**batch).logits
                scores |= zip([distinct[i] for i in chunk], logits[:, 0].float().tolist(), strict=True)
                bar.update(len(chunk))
        self.model.train(was_training)
        return [scores[c] for c in ids]


def as_turns(text_or_messages: str | dict[str, str] | list[dict[str, str]], role: str) -> list[dict[str, str]]:
    """A string as one turn of `role`; one message as a list of it; messages as they are."""
    if isinstance(text_or_messages, str):
        return [{"role": role, "content": text_or_messages}]
    if isinstance(text_or_messages, dict):
        return [text_or_messages]
    return text_or_messages


def trained_against(run: runs.Run, reward_run: str | Path) -> bool:
    """Whether `run`, or a run its adapters build on, was trained by RL against the reward model in `reward_run`: that
    model's scores of it are then no independent evidence. Told by the reward run's `id` where both record one (a
    copy elsewhere is the same model; another trained in its place is not), else by its path."""
    target = runs.Run(Path(reward_run))
    target_id = target.manifest.get("id")
    for step in run.lineage:
        manifest = runs.Run(step["run"]).manifest
        used = manifest.get("reward_run")  # set by `alignkit rl` when it scores with a model
        if not used:
            continue
        if manifest.get("reward_run_id") and target_id:
            if manifest["reward_run_id"] == target_id:
                return True
        elif (Path(step["run"]) / used).resolve() == target.path.resolve():
            return True
    return False


def load_scorer(run_dir: str | Path, precision: Precision | None = None, batch_size: int = 8) -> Scorer:
    """The reward model of a finished `alignkit reward` run, ready to score."""
    run = runs.open_run(run_dir)
    if run.stage != "reward":
        raise AlignkitError(
            f"{run.path}: is a {run.stage} run, not a reward model", "pass a run made by alignkit reward"
        )
    model, tokenizer = assemble(run, precision, REWARD_HEAD, trainable=False)
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    return Scorer(model, tokenizer, batch_size)


def assemble(run: runs.Run, precision: Precision | None, head: str, trainable: bool) -> tuple[Any, Any]:
    """(model, tokenizer) of `run` under `head`: its whole model for a full fine-tune, else the base with the
    ancestors merged and the run's own adapter attached."""
    model_cfg = run.model_config
    precision = precision or pick_precision(model_cfg.precision)
    tokenizer, _ = lineage_tokenizer(model_cfg, run.lineage)
    if run.model_dir.is_dir():  # full fine-tune: the run holds the whole model
        model = models.load_base(model_cfg, precision, source=str(run.model_dir), head=head, tokenizer=tokenizer)
    else:
        check_base(run)
        model = load_merged(adapter_runs(run.lineage)[:-1], model_cfg, precision, tokenizer, head=head)
        model = apply_adapter(model, run, trainable=trainable)
    if not trainable:
        model.eval()
    return model, tokenizer


def check_base(run: runs.Run, identity: dict[str, Any] | None = None) -> None:
    """Warn when the run's base model now has other weights than those it was trained on (the sha256 its manifest
    recorded): its adapters would be applied to another model. `identity`: the base's now, where already known."""
    recorded = (run.manifest.get("base") or {}).get("sha256")
    if not recorded:  # a hub id, or an older run: nothing to compare, so the base is not resolved and hashed again
        return
    now = (identity or models.base_identity(run.model_config)).get("sha256")
    if now and recorded != now:
        logger.warning(
            "%s: its base %s now has other weights (sha256 %s...) than it was trained on (%s...): its adapters may "
            "not fit them; point model.name at the weights it was trained on",
            run.path,
            run.model_config.name,
            now[:12],
            recorded[:12],
        )


def lineage_tokenizer(cfg: ModelConfig, lineage: list[dict[str, Any]]) -> tuple[Any, dict[str, Any] | None]:
    """The tokenizer of a model built on `lineage` (manifest steps, oldest first), the same for every run of it: the
    one saved by its earliest run that saved one (`tokenizer/`, where a chat template was added, or a full fine-tune's
    `model/`), else the base's. Second value: what was added to the base's now (None: nothing, or it was saved)."""
    for step in lineage:
        for saved in (Path(step["run"]) / "tokenizer", Path(step["run"]) / "model"):
            if saved.is_dir():
                return models.load_tokenizer(cfg, source=str(saved)), None
    return models.base_tokenizer(cfg)


def adapter_runs(lineage: list[dict[str, Any]]) -> list[runs.Run]:
    """The runs whose adapters make up a model, oldest first.

    A run that kept training its parent's adapter (DPO on the SFT adapter; manifest `adapter_continues`) replaces that
    adapter instead of stacking on it, so the parent's is not applied twice.
    """
    chain: list[runs.Run] = []
    for step in lineage:
        run = runs.open_run(step["run"])
        if run.manifest.get("adapter_continues") and chain:
            chain.pop()
        chain.append(run)
    return chain


def load_merged(
    ancestors: list[runs.Run], model_cfg: ModelConfig, precision: Precision, tokenizer: Any, head: str = "causal-lm"
) -> Any:
    """Base (or the newest full fine-tune among `ancestors`), fitted to `tokenizer`, with the later ancestors' adapters
    merged in memory. With `head=REWARD_HEAD` the policy's causal-LM adapters are merged into the same backbone under
    a fresh one-output head (the reward model's start)."""
    full = [i for i, r in enumerate(ancestors) if r.model_dir.is_dir()]
    start = full[-1] if full else None
    source = str(ancestors[start].model_dir) if start is not None else models.resolve_model(model_cfg.name)
    model = models.load_base(model_cfg, precision, source=source, head=head, tokenizer=tokenizer)
    for ancestor in ancestors[(start + 1) if start is not None else 0 :]:
        model = merge_adapter(model, ancestor, head)
    return model


def merge_adapter(model: Any, run: runs.Run, head: str) -> Any:
    """`model` with a run's adapter merged into its weights (a full fine-tune's run: `model` as is)."""
    if head == "causal-lm" or not run.adapter_dir.is_dir():
        return apply_adapter(model, run, trainable=False).merge_and_unload()
    from peft import PeftConfig, PeftModel

    # Under a classification head: no task-specific peft wrapper (it would look for generation methods), and no
    # trainable token rows of an LM head the classifier has not.
    adapter_config = PeftConfig.from_pretrained(run.adapter_dir)
    adapter_config.task_type = None
    modules = {name for name, _ in model.named_modules()}
    tokens = getattr(adapter_config, "trainable_token_indices", None)
    if isinstance(tokens, dict):
        kept = {name: ids for name, ids in tokens.items() if any(m.endswith(name) for m in modules)}
        adapter_config.trainable_token_indices = kept or None
    return PeftModel.from_pretrained(model, run.adapter_dir, config=adapter_config).merge_and_unload()


def apply_adapter(model: Any, run: runs.Run, trainable: bool) -> Any:
    """Attach a run's saved adapter (or return the run's full model as is)."""
    from peft import PeftModel

    if run.adapter_dir.is_dir():
        try:
            return PeftModel.from_pretrained(model, run.adapter_dir, is_trainable=trainable)
        except (ValueError, RuntimeError, KeyError) as exc:
            fix = "train the adapter on the same base model"
            if accepts("model.name"):  # `evaluate_runs` takes no model
                fix += f", or pick the matching {option('model.name')}"
            raise AlignkitError(
                f"{run.adapter_dir}: adapter does not fit this base model ({first_line(exc)})", fix
            ) from None
    if run.model_dir.is_dir():
        return model
    raise AlignkitError(f"{run.path}: run has neither adapter/ nor model/", "the run is incomplete; train it again")
