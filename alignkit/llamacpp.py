"""llama.cpp as the engine for one reply at a time (the playground): a run's model is its base's own GGUF file plus
one GGUF LoRA adapter written from the lineage's peft adapters.

Why: one decoding step reads every weight once, so on a CPU a single stream is bound by the bytes per weight. The
fp32 model that transformers decodes is 4 bytes per weight; the embedded GGUF (Q4_1) about 0.6 (docs/benchmarks.md).

Used when `llama-cpp-python` is installed (`pip install 'alignkit[llama]'`), the base was loaded from a GGUF file of
the llama architecture (the embedded model, or `model.name: path/to/file.gguf`), and every adapter in the lineage is a
plain LoRA. Otherwise transformers answers and `unsupported` says why. The weights are the same ones transformers
uses (its model is the dequantised GGUF), but llama.cpp multiplies them in its quantized formats, so greedy replies
agree within a tolerance, not bit for bit (tests/unit/test_llamacpp.py).
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit import models
from alignkit.config import EMBEDDED_MODEL, ModelConfig
from alignkit.paths import cache_dir

PACKAGE = "llama_cpp"
ARCHITECTURE = "llama"  # q/k rows are permuted for llama.cpp's rotary layout: `rope_permuted`
LORA_KEYS = ("lora_A.weight", "lora_B.weight")
LORA_FORMAT = "fp16-v1"  # part of the cache key: a change to what `write_lora` writes invalidates cached files


def installed() -> bool:
    return importlib.util.find_spec(PACKAGE) is not None


def base_gguf(cfg: ModelConfig) -> Path | None:
    """The GGUF file a base model was converted from; None for a model dir or hub id."""
    if cfg.name in (EMBEDDED_MODEL, "", None):
        return models.embedded_gguf()
    path = Path(cfg.name).expanduser()
    return path if path.suffix == ".gguf" and path.is_file() else None


def unsupported(cfg: ModelConfig, adapter_dirs: list[Path], tokenizer: Any) -> str | None:
    """Why llama.cpp cannot serve this base with these adapters and the lineage's tokenizer, or None when it can."""
    if not installed():
        return "llama-cpp-python is not installed"
    gguf_file = base_gguf(cfg)
    if gguf_file is None:
        return f"the base {cfg.name} is not a GGUF file"
    architecture = gguf_fields(gguf_file, "general.architecture")["general.architecture"]
    if architecture != ARCHITECTURE:
        return f"the base's architecture is {architecture}, not {ARCHITECTURE}"
    if len(tokenizer) > vocab_size(gguf_file):
        return "the tokenizer has tokens the GGUF file lacks (added in training)"
    for adapter_dir in adapter_dirs:
        config_file = adapter_dir / "adapter_config.json"
        if not config_file.is_file():
            return f"{adapter_dir} is not a peft adapter"
        config = json.loads(config_file.read_text())
        if config.get("peft_type") != "LORA":
            return f"{adapter_dir} is a {config.get('peft_type')} adapter, not LoRA"
        for key in ("use_dora", "modules_to_save", "trainable_token_indices", "rank_pattern", "alpha_pattern"):
            if config.get(key):
                return f"{adapter_dir} sets {key}, which a GGUF LoRA adapter cannot hold"
    return None


def gguf_fields(path: Path, *names: str) -> dict[str, Any]:
    """Metadata values of a GGUF file (strings decoded, one-element arrays unwrapped)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    values: dict[str, Any] = {}
    for name in names:
        field = reader.fields[name]
        value = field.parts[field.data[0]]
        is_text = field.types and field.types[0] == gguf.GGUFValueType.STRING
        values[name] = bytes(value).decode() if is_text else value.tolist()[0]
    return values


def vocab_size(path: Path) -> int:
    import gguf

    return len(gguf.GGUFReader(str(path)).fields["tokenizer.ggml.tokens"].data)


def write_lora(adapter_dirs: list[Path], base: Path, out: Path) -> Path:
    """The lineage's LoRA adapters (oldest first) as one GGUF LoRA adapter for `base`, at `out`.

    Stacked adapters add up: each module's A matrices are stacked and its B matrices, each times its own
    `alpha / r` (or `alpha / sqrt(r)` with rsLoRA), placed side by side, so one adapter of the summed rank with
    scale 1 computes the same update. A module an adapter leaves out gets zeros for its rank.
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    meta = gguf_fields(base, "llama.block_count", "llama.attention.head_count", "llama.attention.head_count_kv")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, meta["llama.block_count"])
    updates: list[dict[str, tuple[Any, Any]]] = []  # per adapter: gguf tensor name -> (A, scaled B)
    for adapter_dir in adapter_dirs:
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
        tensors = load_file(adapter_dir / "adapter_model.safetensors")
        modules: dict[str, tuple[Any, Any]] = {}
        for key in tensors:
            module, kind = key.rsplit(".", 2)[0], ".".join(key.rsplit(".", 2)[1:])
            if kind not in LORA_KEYS:
                raise ValueError(f"{adapter_dir}: tensor {key} is not a LoRA matrix")
            if kind == LORA_KEYS[1]:
                continue
            a, b = tensors[key].astype(np.float32), tensors[f"{module}.{LORA_KEYS[1]}"].astype(np.float32)
            rank = a.shape[0]
            scale = config["lora_alpha"] / (rank**0.5 if config.get("use_rslora") else rank)
            hf_name = module.removeprefix("base_model.model.")
            target = names.get_name(hf_name)
            if target is None or target == "output":
                raise ValueError(f"{adapter_dir}: no llama.cpp tensor for {hf_name}")
            b = rope_permuted(b * scale, target, meta)
            modules[f"{target}.weight"] = (a, b)
        updates.append(modules)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")  # written whole, then moved: never a half-written cache
    writer = gguf.GGUFWriter(str(tmp), ARCHITECTURE)
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    targets = sorted({name for modules in updates for name in modules})
    ranks = [max((a.shape[0] for a, _ in modules.values()), default=0) for modules in updates]
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(sum(ranks)))  # scale alpha / rank = 1: folded into B
    for target in targets:
        a_parts, b_parts = [], []
        shape = next(modules[target] for modules in updates if target in modules)
        for modules, rank in zip(updates, ranks, strict=True):
            a, b = modules.get(target, (None, None))
            if a is None or a.shape[0] != rank:  # left out, or a smaller rank: pad with zeros
                padded_a = np.zeros((rank, shape[0].shape[1]), np.float32)
                padded_b = np.zeros((shape[1].shape[0], rank), np.float32)
                if a is not None:
                    padded_a[: a.shape[0]], padded_b[:, : b.shape[1]] = a, b
                a, b = padded_a, padded_b
            a_parts.append(a)
            b_parts.append(b)
        # fp16, as llama.cpp's own converter writes them: the adapter's bytes are read on every token too
        writer.add_tensor(f"{target}.lora_a", np.concatenate(a_parts, 0).astype(np.float16))
        writer.add_tensor(f"{target}.lora_b", np.concatenate(b_parts, 1).astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)
    return out


def rope_permuted(b: Any, target: str, meta: dict[str, int]) -> Any:
    """B's rows in llama.cpp's order: GGUF files store q and k with the rotary halves interleaved (what
    llama.cpp's converter does to the weights, `LlamaModel.permute`), so their updates' rows move the same way."""
    kind = target.rsplit(".", 1)[-1]
    if kind not in ("attn_q", "attn_k"):
        return b
    heads = meta["llama.attention.head_count"] if kind == "attn_q" else meta["llama.attention.head_count_kv"]
    return b.reshape(heads, 2, b.shape[0] // heads // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


def cached_lora(adapter_dirs: list[Path], base: Path) -> Path:
    """`write_lora`'s file for these adapters, written once into the cache (keyed by the adapters' bytes)."""
    digest = hashlib.sha256(LORA_FORMAT.encode())
    for adapter_dir in adapter_dirs:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            digest.update((adapter_dir / name).read_bytes())
    out = cache_dir() / "gguf-lora" / f"{base.stem}-{digest.hexdigest()[:16]}.gguf"
    return out if out.is_file() else write_lora(adapter_dirs, base, out)


@dataclass
class LlamaCppModel:
    """A base GGUF (+ one LoRA adapter) in llama.cpp; prompts are tokenized by the lineage's tokenizer, exactly as
    in training, and passed as token ids."""

    llm: Any
    tokenizer: Any

    def stream(
        self, messages: list[dict[str, str]], sampling: Any, stop: threading.Event | None = None
    ) -> Iterator[str]:
        """Text chunks of one reply: greedy when `sampling.temperature` is 0, else seeded by `sampling.seed` with
        transformers' warpers only (no min-p, no repetition penalty)."""
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        chunks = self.llm.create_completion(
            prompt=list(ids),
            max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
            top_k=50 if sampling.temperature > 0 else 0,
            min_p=0.0,
            repeat_penalty=1.0,
            seed=sampling.seed,
            stream=True,
        )
        for chunk in chunks:
            if stop is not None and stop.is_set():
                break
            yield chunk["choices"][0]["text"]


def load(cfg: ModelConfig, adapter_dirs: list[Path], tokenizer: Any) -> LlamaCppModel:
    """The base GGUF with the adapters as one GGUF LoRA, a thread per core (check `unsupported` first)."""
    from llama_cpp import Llama

    base = base_gguf(cfg)
    assert base is not None, "check `unsupported` first"
    lora = str(cached_lora(adapter_dirs, base)) if adapter_dirs else None
    llm = Llama(model_path=str(base), lora_path=lora, n_ctx=4096, n_threads=os.cpu_count(), seed=0, verbose=False)
    atexit.register(llm.close)  # freed while the interpreter still can: at teardown `Llama.__del__` prints errors
    return LlamaCppModel(llm, tokenizer)
