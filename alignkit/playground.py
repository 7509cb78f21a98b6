"""What the playground does, without a UI: list the models to chat with, load them once, stream replies, build a
few-shot (in-context learning) baseline, and send feedback on replies to Argilla.

Models: every run under a runs dir (broken ones listed with the reason, never a traceback) plus the bare base.
Runs that are one LoRA adapter on a base (SFT, and DPO/RL that kept training it) share one copy of that base in a
`ModelPool`: their adapters are loaded into it and switched per reply; other runs (stacked adapters, full fine-tunes)
are loaded whole and merged (`lineage.load_inference_model`). One lock serialises generation, since the active
adapter and the seeded RNG are process-wide. Where llama.cpp can serve a model (`alignkit/llamacpp.py`: a GGUF base,
LoRA adapters, `llama-cpp-python` installed), it answers instead: one reply decodes several times faster there.

Feedback: "which answer is better?" becomes a record of the collection rounds' own schema
(`argilla_schema.preference_settings(2)`, built by `push.records_for_round`) with the user's answer as a submitted
response, in the dataset `playground` (so `alignkit feedback pull --dataset playground` turns it into pairs);
a thumbs up/down on one reply becomes an accept/reject record of the review rounds' schema in `playground-replies`
(`feedback review pull` turns the accepted ones into SFT rows). A record's id is its user and content, so answering
the same replies again replaces the answer instead of adding a contradicting record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from alignkit import hardware, lineage, llamacpp, models, runs
from alignkit.config import EMBEDDED_MODEL, ModelConfig
from alignkit.data import BadRows, load_chat
from alignkit.errors import AlignkitError, first_line
from alignkit.feedback import argilla_schema as schema
from alignkit.feedback.client import annotator_session, connect
from alignkit.feedback.push import records_for_round, review_records, round_dataset, stable_seed
from alignkit.generate import Sampling
from alignkit.jsonl import prompt_id

logger = logging.getLogger("alignkit")
BASE_PREFIX = "base:"
PREFERENCE_DATASET = "playground"
REPLIES_DATASET = "playground-replies"
DEFAULT_WORKSPACE = "alignkit"
Messages = list[dict[str, str]]


@dataclass(frozen=True)
class ModelChoice:
    """A model the playground offers: a run directory, or the bare base (`key` = "base:<model name>")."""

    key: str
    label: str
    stage: str
    lineage: list[str] = field(default_factory=list)  # e.g. ["embedded", "sft", "dpo"]
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # why it cannot be loaded (an `AlignkitError` message and fix)

    @property
    def usable(self) -> bool:
        return self.error is None


KEY_METRICS = ("eval_loss", "train_loss", "pairwise_accuracy", "eval_rewards/accuracies", "global_step")


def base_choice(model_name: str = EMBEDDED_MODEL) -> ModelChoice:
    """The bare base model; a local path that holds no model is a broken choice saying why (before any chat)."""
    choice = ModelChoice(key=BASE_PREFIX + model_name, label=f"base · {Path(model_name).name}", stage="base")
    try:
        models.check_local_model(model_name)
    except AlignkitError as exc:
        return replace(choice, label=f"{choice.label} (broken)", error=error_line(exc))
    return choice


def model_choices(runs_dir: str | Path, base_model: str = EMBEDDED_MODEL) -> list[ModelChoice]:
    """The base, then every run directory under `runs_dir` (newest first); broken runs carry their error. A run's key
    is its absolute path: the same run whether the runs directory is typed relative or absolute."""
    runs_dir = os.path.abspath(runs_dir)
    choices = [run_choice(p, runs.run_name(p, runs_dir)) for p in runs.run_dirs(runs_dir)]
    return [base_choice(base_model), *sorted(choices, key=lambda c: c.metrics.get("_created", ""), reverse=True)]


def run_choice(path: Path, name: str | None = None) -> ModelChoice:
    """A run as a choice: its lineage and key metrics, or the reason it cannot be loaded. `name`: how it is shown
    (default: its folder name)."""
    name = name or path.name
    try:
        run = runs.open_run(path)
        manifest = run.manifest
        chain = lineage.adapter_runs(run.lineage)  # every ancestor must still be there and complete
        if not chain or not (chain[-1].adapter_dir.is_dir() or chain[-1].model_dir.is_dir()):
            raise AlignkitError(f"{path}: run has neither adapter/ nor model/", "the run is incomplete; train it again")
        if not any(r.model_dir.is_dir() for r in chain):  # adapters only: they load onto the base model
            models.check_local_model(run.model_config.name)
        metrics = run.metrics
    except AlignkitError as exc:
        return ModelChoice(key=str(path), label=f"{name} (broken)", stage="?", error=error_line(exc))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        error = f"{path}: unreadable run ({type(exc).__name__}: {exc}) — fix: pick another run or train it again"
        return ModelChoice(key=str(path), label=f"{name} (broken)", stage="?", error=error)
    if manifest["stage"] == "reward":
        error = f"{path}: is a reward model (it scores answers, it does not chat) — fix: pick a policy run"
        return ModelChoice(key=str(path), label=f"reward · {name}", stage="reward", error=error)
    base = Path(manifest.get("model", {}).get("name", "?")).name
    shown = {k: metrics[k] for k in KEY_METRICS if metrics.get(k) is not None}
    return ModelChoice(
        key=str(path),
        label=f"{manifest['stage']} · {name}",
        stage=manifest["stage"],
        lineage=[base] + [step["stage"] for step in manifest.get("lineage", [])],
        metrics={**shown, "_created": manifest.get("created", "")},
    )


def base_of(run_dir: str) -> str:
    """The choice key of the bare base model a run was trained on (the few-shot baseline's model)."""
    return BASE_PREFIX + runs.open_run(run_dir).model_config.name


@dataclass
class Handle:
    """A loaded model ready to answer: which object, which adapter to activate (None = the bare base)."""

    model: Any
    tokenizer: Any
    adapter: str | None = None
    shared: bool = False  # a shared base whose active adapter is switched per reply
    engine: llamacpp.LlamaCppModel | None = None  # llama.cpp answers instead of `model`


ENGINES = ("auto", "transformers", "llama.cpp")


class ModelPool:
    """Models loaded once per process (the app keeps one pool in `st.cache_resource`).

    `engine`: auto (on a machine without a CUDA GPU, llama.cpp where it can serve the model; else transformers) |
    transformers | llama.cpp (an error for a model it cannot serve). `ALIGNKIT_ENGINE` sets the default.
    """

    def __init__(self, engine: str | None = None) -> None:
        self.engine = engine or os.environ.get("ALIGNKIT_ENGINE", "auto")
        if self.engine not in ENGINES:
            raise AlignkitError(f"engine {self.engine!r} is not one of {', '.join(ENGINES)}")
        self.bases: dict[str, tuple[Any, Any]] = {}  # base model name -> (model, possibly PeftModel; tokenizer)
        self.whole: dict[str, tuple[Any, Any]] = {}  # run dir -> (model, tokenizer)
        self.tokenizers: dict[str, Any] = {}  # run dir -> its lineage's tokenizer (runs on a shared base)
        self.served: dict[str, llamacpp.LlamaCppModel | None] = {}  # choice key -> llama.cpp model (None: cannot)
        self.stamps: dict[str, tuple[tuple[int, int], ...]] = {}  # run choice key -> `runs.lineage_stamp` loaded
        self.lock = threading.RLock()

    def get(self, key: str) -> Handle:
        """The model for a choice key, loaded on first use (again when the run was trained anew since); an
        `AlignkitError` for a missing or broken run."""
        with self.lock:
            if not key.startswith(BASE_PREFIX):
                self.forget_if_retrained(key)
            served = self.llama_cpp(key) if self.uses_llama_cpp() else None
            if served is not None:
                return Handle(None, served.tokenizer, engine=served)
            if key.startswith(BASE_PREFIX):
                model, tokenizer = self.base(ModelConfig(name=key.removeprefix(BASE_PREFIX)))
                return Handle(model, tokenizer, None, shared=True)
            run = runs.open_run(key)
            chain = lineage.adapter_runs(run.lineage)
            if len(chain) == 1 and lora_adapter(chain[0]):
                return self.adapter_on_base(run, chain[0])
            if key not in self.whole:
                self.whole[key] = lineage.load_inference_model(run.path)
            return Handle(*self.whole[key])

    def forget_if_retrained(self, key: str) -> None:
        """Drop what was loaded for the run at `key` when it, or a run of its lineage, has been trained again into
        its dir since (`--overwrite`, `--resume`): the same path, another model. (Its LoRA adapter on a shared base
        is named by the stamp, `adapter_on_base`.)"""
        run = runs.open_run(key)
        stamp = runs.lineage_stamp(run)
        if self.stamps.setdefault(key, stamp) != stamp:
            self.whole.pop(key, None)
            self.served.pop(key, None)
            self.tokenizers.pop(str(run.path), None)
            self.stamps[key] = stamp

    def uses_llama_cpp(self) -> bool:
        """`auto` takes llama.cpp on CPU-only machines; on a GPU, transformers decodes there already."""
        return self.engine == "llama.cpp" or (self.engine == "auto" and not hardware.cuda_available())

    def llama_cpp(self, key: str) -> llamacpp.LlamaCppModel | None:
        """The model in llama.cpp, loaded once; None where llama.cpp cannot serve it (engine `auto`)."""
        if key not in self.served:
            if key.startswith(BASE_PREFIX):
                cfg, adapter_dirs = ModelConfig(name=key.removeprefix(BASE_PREFIX)), []
                tokenizer = models.load_tokenizer(cfg)
            else:
                run = runs.open_run(key)
                cfg, adapter_dirs = run.model_config, [r.adapter_dir for r in lineage.adapter_runs(run.lineage)]
                tokenizer = self.run_tokenizer(run)
            reason = llamacpp.unsupported(cfg, adapter_dirs, tokenizer)
            served = None
            if reason is None:
                try:
                    served = llamacpp.load(cfg, adapter_dirs, tokenizer)
                except ValueError as exc:  # an adapter tensor or file llama.cpp cannot take
                    reason = str(exc)
            if reason and self.engine == "llama.cpp":
                raise AlignkitError(f"{key}: llama.cpp cannot serve it ({reason})", "use the transformers engine")
            if reason:
                logger.info("%s: transformers answers, llama.cpp cannot serve it (%s)", key, reason)
            self.served[key] = served
        return self.served[key]

    def base(self, cfg: ModelConfig) -> tuple[Any, Any]:
        if cfg.name not in self.bases:
            precision = hardware.pick_precision(cfg.precision)
            tokenizer = models.load_tokenizer(cfg)
            self.bases[cfg.name] = (models.load_base(cfg, precision, tokenizer=tokenizer).eval(), tokenizer)
        return self.bases[cfg.name]

    def run_tokenizer(self, run: runs.Run) -> Any:
        """The tokenizer the run was trained with (`lineage.lineage_tokenizer`), loaded once."""
        key = str(run.path)
        if key not in self.tokenizers:
            self.tokenizers[key] = lineage.lineage_tokenizer(run.model_config, run.lineage)[0]
        return self.tokenizers[key]

    def adapter_on_base(self, run: runs.Run, adapter_run: runs.Run) -> Handle:
        """Load the run's adapter into the shared base of its model (once); switching adapters reloads nothing."""
        from peft import PeftModel

        cfg = run.model_config
        model, tokenizer = self.base(cfg)
        name = adapter_name(adapter_run.path, runs.lineage_stamp(adapter_run))
        if not isinstance(model, PeftModel) or name not in model.peft_config:
            try:
                if isinstance(model, PeftModel):
                    model.load_adapter(adapter_run.adapter_dir, adapter_name=name)
                else:
                    model = PeftModel.from_pretrained(model, adapter_run.adapter_dir, adapter_name=name)
            except (ValueError, RuntimeError, KeyError) as exc:
                raise AlignkitError(
                    f"{adapter_run.adapter_dir}: adapter does not fit this base model ({first_line(exc)})",
                    "train the adapter on the same base model",
                ) from None
            model.set_adapter(name)  # peft cannot delete the active adapter
            stale = adapter_name(adapter_run.path)  # the prefix of this dir's adapters of earlier trainings
            for old in [n for n in model.peft_config if n.startswith(stale) and n != name]:
                model.delete_adapter(old)
        model.eval()
        self.bases[cfg.name] = (model, tokenizer)
        return Handle(model, self.run_tokenizer(run), name, shared=True)


def lora_adapter(run: runs.Run) -> bool:
    """Whether a run's adapter is LoRA (several LoRA adapters share one base; other peft types are loaded whole)."""
    config = run.adapter_dir / "adapter_config.json"
    return config.is_file() and json.loads(config.read_text()).get("peft_type") == "LORA"


def adapter_name(path: Path, stamp: tuple[tuple[int, int], ...] = ()) -> str:
    """The name of a run's adapter on a shared base: its dir, then (`stamp`) which training of it."""
    name = "run_" + hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:12]
    return name + "_" + hashlib.sha1(repr(stamp).encode()).hexdigest()[:8] if stamp else name


def error_line(exc: AlignkitError) -> str:
    return f"{exc.message} — fix: {exc.hint}" if exc.hint else exc.message


class StopOnEvent:
    """A `StoppingCriteria` that ends generation when the user presses Stop (or the page reruns)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def stream_reply(
    pool: ModelPool, key: str, messages: Messages, sampling: Sampling, stop: threading.Event | None = None
) -> Iterator[str]:
    """Text chunks of one reply as they are generated (transformers' `TextIteratorStreamer` fed by a thread).

    Leaving the loop early (Stop, a rerun) sets `stop`, so the generating thread ends within one token.
    """
    import torch
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    handle = pool.get(key)
    tokenizer = handle.tokenizer
    stop = stop or threading.Event()
    if handle.engine is not None:
        with pool.lock:
            yield from handle.engine.stream(messages, sampling, stop)
        return
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(handle.model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    options = (
        {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p}
        if sampling.temperature > 0
        else {"do_sample": False}
    )
    failure: list[BaseException] = []

    def generate() -> None:
        try:
            with pool.lock, torch.no_grad():
                torch.manual_seed(sampling.seed)
                kwargs = dict(
                    **inputs,
                    max_new_tokens=sampling.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([StopOnEvent(stop)]),
                    **options,
                )
                if handle.adapter is not None:
                    handle.model.set_adapter(handle.adapter)
                    handle.model.generate(**kwargs)
                elif handle.shared and hasattr(handle.model, "disable_adapter"):
                    with handle.model.disable_adapter():
                        handle.model.generate(**kwargs)
                else:
                    handle.model.generate(**kwargs)
        except BaseException as exc:  # re-raised in the caller's thread below
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=generate, daemon=True)
    thread.start()
    try:
        yield from streamer
    finally:
        stop.set()
        thread.join()
    if failure:
        raise failure[0]


def reply(pool: ModelPool, key: str, messages: Messages, sampling: Sampling) -> str:
    """A whole reply (what the stream adds up to)."""
    return "".join(stream_reply(pool, key, messages, sampling)).strip()


def checked_messages(messages: Any) -> Messages:
    """A conversation to reply to, checked as a training row's messages are (a non-empty list; known roles; string
    contents): one error naming the message, not a chat template's traceback."""
    from alignkit.data.formats import RowError, message_list

    try:
        return message_list(messages, "messages", "role", "content", None)
    except RowError as exc:
        raise AlignkitError(
            f"chat: {exc}", 'pass a string, or a list of {"role": "system" | "user" | "assistant", "content": str}'
        ) from None


def conversation(history: Messages, user_text: str, system: str = "") -> Messages:
    """The messages sent to a model: the system prompt (if any), earlier turns, the new user turn."""
    head = [{"role": "system", "content": system}] if system.strip() else []
    return [*head, *history, {"role": "user", "content": user_text}]


def sft_examples(run_dir: str | Path) -> list[Messages]:
    """The chat rows a run (or its nearest SFT ancestor) was trained on, for few-shot prompting."""
    import yaml

    run = runs.open_run(run_dir)
    ancestors = [runs.Run(Path(step["run"])) for step in run.lineage]
    for ancestor in reversed(ancestors):
        if ancestor.stage == "sft":
            data = yaml.safe_load((ancestor.path / "config.yaml").read_text(encoding="utf-8")).get("data", {})
            trained = BadRows(skip=bool(data.get("skip_bad_rows")))  # the rows it trained on: those it skipped left out
            return [row["messages"] for row in load_chat(data.get("paths", []), trained)]
    raise AlignkitError(
        f"{run.path}: no SFT run in its lineage", "pick an SFT, DPO or RL run for the few-shot baseline"
    )


def few_shot(examples: list[Messages], messages: Messages, k: int, seed: int = 0) -> Messages:
    """`messages` with `k` example conversations (drawn with `seed`) placed before them as earlier turns: the
    in-context-learning baseline a fine-tuned model has to beat."""
    usable = [[m for m in ex if m["role"] != "system"] for ex in examples]
    usable = [ex for ex in usable if ex and ex[0]["role"] == "user" and ex[-1]["role"] == "assistant"]
    shots = random.Random(seed).sample(usable, min(k, len(usable)))
    system = [m for m in messages[:1] if m["role"] == "system"]
    return [*system, *(m for ex in shots for m in ex), *messages[len(system) :]]


# -- feedback to Argilla -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One model's reply to a conversation, as shown in the playground."""

    text: str
    model: str  # choice key: run dir or "base:<name>"
    sampling: Sampling
    few_shot: int = 0


def candidate(answer: Answer) -> dict[str, Any]:
    """An answer as a candidate of a feedback record: its text, sampling and source, a run by its path and `id` as
    `generate` names it (`runs.policy_source`: pulled pairs tell the policy by its id wherever runs/ moves)."""
    run = "" if answer.model.startswith(BASE_PREFIX) else str(Path(answer.model).resolve())
    source = {"text": answer.text, "run": run, "model": answer.model.removeprefix(BASE_PREFIX)}
    if run and (Path(run) / "manifest.json").is_file():
        source["run_id"] = runs.Run(run).manifest.get("id") or ""
    return source | {"sampling": asdict(answer.sampling), "few_shot": answer.few_shot, "source": "playground"}


def feedback_id(user_id: Any, row: dict[str, Any]) -> str:
    """A feedback record's id from who gave it on what: a second answer to the same replies (a misclick, a second
    thought, a double click) replaces the first instead of adding a contradicting record."""
    return f"playground-{stable_seed(user_id, json.dumps(row, sort_keys=True)):016x}"


def preference_record(prompt: Messages, first: Answer, second: Answer, choice: str, user_id: Any) -> Any:
    """A collection-round record for two answers with the user's submitted choice (`first`, `second` or `tie`)."""
    import argilla as rg

    row = {"prompt_id": prompt_id(prompt), "prompt": prompt, "candidates": [candidate(first), candidate(second)]}
    record = records_for_round([row], 2, 0, seed=stable_seed(user_id))[0]
    record.id = feedback_id(user_id, row)
    record.metadata["round"] = "playground"
    order = [int(i) for i in record.metadata["order"].split(",")]  # shown position -> original candidate
    value = "tie" if choice == "tie" else str(order.index(0 if choice == "first" else 1) + 1)
    record.responses.add(rg.Response(schema.PREFERENCE, value, user_id=user_id, status="submitted"))
    return record


def reply_record(prompt: Messages, answer: Answer, thumbs_up: bool, user_id: Any) -> Any:
    """A review-round record for one answer: thumbs up = accept, thumbs down = reject (submitted)."""
    import argilla as rg

    messages = [*prompt, {"role": "assistant", "content": answer.text}]
    row = {"messages": messages, "playground": candidate(answer)}
    record = review_records([row])[0]
    record.id = feedback_id(user_id, row)
    verdict = "accept" if thumbs_up else "reject"
    record.responses.add(rg.Response(schema.REVIEW, verdict, user_id=user_id, status="submitted"))
    return record


def send_preference(
    client: Any, prompt: Messages, first: Answer, second: Answer, choice: str, workspace: str = DEFAULT_WORKSPACE
) -> str:
    """Store "which answer is better?" in Argilla (dataset `playground`); returns the record id."""

    if choice not in ("first", "second", "tie"):
        raise AlignkitError(f"choice {choice!r}: expected first, second or tie")
    dataset = round_dataset(client, workspace, PREFERENCE_DATASET, True, lambda: schema.preference_settings(2))
    record = preference_record(prompt, first, second, choice, client.me.id)
    log_records(dataset, [record])
    return record.id


def send_thumb(
    client: Any, prompt: Messages, answer: Answer, thumbs_up: bool, workspace: str = DEFAULT_WORKSPACE
) -> str:
    """Store a thumbs up/down on one reply in Argilla (dataset `playground-replies`); returns the record id."""

    dataset = round_dataset(client, workspace, REPLIES_DATASET, True, lambda: schema.review_settings())
    record = reply_record(prompt, answer, thumbs_up, client.me.id)
    log_records(dataset, [record])
    return record.id


def log_records(dataset: Any, records: list[Any]) -> None:
    import argilla as rg

    try:
        dataset.records.log(records)
    except rg.ArgillaError as exc:
        raise AlignkitError(
            f"Argilla did not store the feedback ({type(exc).__name__}: {first_line(exc)})",
            "sign in as an owner or admin of the workspace",
        ) from None


def user_client(username: str, password: str, url: str | None = None) -> tuple[Any, str]:
    """(SDK client with the user's own API key, their role): feedback is stored under their name."""

    session = annotator_session(username, password, url)
    api_key = session.http.headers["X-Argilla-Api-Key"]
    role = session.get("/api/v1/me")["role"]
    session.http.close()
    return connect(session.url, api_key), role
