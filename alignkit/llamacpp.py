"""llama.cpp as the engine for one reply at a time (the playground): a run's model is its base's own GGUF file with
the lineage's LoRA updates merged in, written once as a Q8_0 GGUF (`write_merged`); the bare base is its file as is.

Why: one decoding step reads every weight once, so on a CPU a single stream is bound by the bytes per weight and by
the per-step overhead. transformers decodes 4 bytes per weight (fp32) or 2 (bf16) through eager PyTorch; llama.cpp
reads 0.6 (Q4_1) or 1.1 (Q8_0) in fused kernels (docs/benchmarks.md).

Used when `llama-cpp-python` is installed (`pip install 'alignkit[llama]'`), the base was loaded from a GGUF file of
the llama architecture (the embedded model, or `model.name: path/to/file.gguf`), and every adapter in the lineage is a
plain LoRA. Otherwise transformers answers and `unsupported` says why. The weights are those transformers uses (its
model is the dequantised GGUF, the adapters merged), but llama.cpp multiplies them in quantized formats with 8-bit
activations, so greedy replies agree within a tolerance, not bit for bit (tests/unit/test_llamacpp.py)."""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit import models
from alignkit.config import EMBEDDED_MODEL, ModelConfig
from alignkit.paths import cache_dir, file_sha256

logger = logging.getLogger("alignkit")

PACKAGE = "llama_cpp"
ARCHITECTURE = "llama"  # q/k rows are permuted for llama.cpp's rotary layout: `rope_permuted`
LORA_KEYS = ("lora_A.weight", "lora_B.weight")
MERGED_FORMAT = "q8_0-v1"  # part of the cache key: a change to what `write_merged` writes invalidates cached files


def installed() -> bool:
    return importlib.util.find_spec(PACKAGE) is not None


def amx_kernels() -> bool:
    """Whether the installed llama.cpp runs its AMX kernels (it was built for a CPU that has AMX)."""
    import llama_cpp

    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


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
    if amx_kernels() and os.environ.get("ALIGNKIT_LLAMA_AMX") != "1":
        # On a Sapphire Rapids VM they crashed the process on the first prompt of more than one token
        # (ggml-org/llama.cpp#20824); `make setup` builds without them.
        return (
            "llama-cpp-python was built with AMX kernels, which can crash the process (ggml-org/llama.cpp#20824): "
            "rebuild it with `make setup` or the flags in the README, or set ALIGNKIT_LLAMA_AMX=1 to use it anyway"
        )
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
                return f"{adapter_dir} sets {key}, which the merge for llama.cpp does not handle"
    return None


def gguf_fields(path: Path, *names: str) -> dict[str, Any]:
    """Metadata values of a GGUF file, as Python values."""
    import gguf

    fields = gguf.GGUFReader(str(path)).fields
    return {name: fields[name].contents() for name in names}


def vocab_size(path: Path) -> int:
    import gguf

    return len(gguf.GGUFReader(str(path)).fields["tokenizer.ggml.tokens"].data)


def lora_updates(adapter_dirs: list[Path], base: Path) -> dict[str, Any]:
    """The weight update of each GGUF tensor the adapters touch, summed over the adapters (oldest first): `B @ A`
    times `alpha / r` (or `alpha / sqrt(r)` with rsLoRA), as numpy (out, in) in the GGUF's row order."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    meta = gguf_fields(base, "llama.block_count", "llama.attention.head_count", "llama.attention.head_count_kv")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, meta["llama.block_count"])
    updates: dict[str, Any] = {}
    for adapter_dir in adapter_dirs:
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
        tensors = load_file(adapter_dir / "adapter_model.safetensors")
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
            update = rope_permuted(scale * b @ a, target, meta)
            name = f"{target}.weight"
            updates[name] = updates[name] + update if name in updates else update
    return updates


FILE_TYPES = {  # `write_merged`'s tensor types, by their `alignkit export --gguf-type` names
    "f32": "LLAMA_FTYPE_ALL_F32",
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
    "bf16": "LLAMA_FTYPE_MOSTLY_BF16",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
}


def write_merged(adapter_dirs: list[Path], base: Path, out: Path, file_type: str = "q8_0") -> Path:
    """The base GGUF with the adapters' updates merged in, quantized to Q8_0 by llama.cpp, at `out` (`file_type`:
    another of `FILE_TYPES`, for `alignkit export --gguf`).

    Merged rather than applied as a GGUF LoRA adapter at run time: llama.cpp then computes no extra matmuls per
    layer (with an adapter of alignkit's default shape a reply decoded about 20 % slower: 0.79x the bare file in
    benchmarks/results/2026-12-03-generation-lora-adapter.json, merged 1.01x in 2026-12-03-generation.json), and
    Q8_0 keeps the update, which re-quantizing to the base's own 4-bit grid would mostly round away. The base's metadata
    (tokenizer, chat template, rope settings) is copied as it is.
    """
    import gguf
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    updates = lora_updates(adapter_dirs, base)
    reader = gguf.GGUFReader(str(base))
    out.parent.mkdir(parents=True, exist_ok=True)
    full = out.with_name(out.name + f".f32-{os.getpid()}")
    writer = gguf.GGUFWriter(str(full), ARCHITECTURE)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue  # written by the writer itself, or no longer true
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for tensor in reader.tensors:
        weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        writer.add_tensor(tensor.name, weights + updates.pop(tensor.name) if tensor.name in updates else weights)
    if updates:
        raise ValueError(f"{base}: no tensors {', '.join(sorted(updates))} for the adapters' updates")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FILE_TYPES[file_type])
    params.nthread = os.cpu_count() or 1
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")  # written whole, then moved: never a half-written cache
    try:
        with suppress_stdout_stderr(disable=False):  # the quantizer logs every tensor; as Llama(verbose=False) does
            status = llama_cpp.llama_model_quantize(str(full).encode(), str(tmp).encode(), params)
        if status != 0:
            raise ValueError(f"llama.cpp could not quantize {full}")
        os.replace(tmp, out)
    finally:
        full.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out


def rope_permuted(update: Any, target: str, meta: dict[str, int]) -> Any:
    """An update's rows in llama.cpp's order: GGUF files store q and k with the rotary halves interleaved (what
    llama.cpp's converter does to the weights, `LlamaModel.permute`), so their updates' rows move the same way."""
    kind = target.rsplit(".", 1)[-1]
    if kind not in ("attn_q", "attn_k"):
        return update
    heads = meta["llama.attention.head_count"] if kind == "attn_q" else meta["llama.attention.head_count_kv"]
    rows = update.shape[0] // heads // 2
    return update.reshape(heads, 2, rows, *update.shape[1:]).swapaxes(1, 2).reshape(update.shape)


def cached_model(adapter_dirs: list[Path], base: Path) -> Path:
    """`write_merged`'s file for these adapters, written once into the cache (keyed by the adapters' bytes)."""
    digest = hashlib.sha256(MERGED_FORMAT.encode())
    for adapter_dir in adapter_dirs:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            digest.update(file_sha256(adapter_dir / name).encode())
    out = cache_dir() / "gguf-merged" / f"{base.stem}-{digest.hexdigest()[:16]}.gguf"
    if not out.is_file():
        logger.info("writing the run's model for llama.cpp once: %s", out)
        write_merged(adapter_dirs, base, out)
    return out


@dataclass
class LlamaCppModel:
    """A GGUF model in llama.cpp; prompts are tokenized by the lineage's tokenizer, exactly as in training, and
    passed as token ids."""

    llm: Any
    tokenizer: Any

    def stream(
        self, messages: list[dict[str, str]], sampling: Any, stop: threading.Event | None = None
    ) -> Iterator[str]:
        """Text chunks of one reply: greedy when `sampling.temperature` is 0, else seeded by `sampling.seed` with
        transformers' warpers only (no min-p, no repetition penalty)."""
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        # The whole prompt is evaluated afresh: reusing the cached prefix of the last reply evaluates only its last
        # token, whose logits then differ in the last bits on some CPUs (AVX2, seen 2026-12-05), and one seed
        # sampled two different replies.
        self.llm.reset()
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
    """The base GGUF with the adapters merged in (`cached_model`), a thread per core (check `unsupported` first)."""
    from llama_cpp import Llama

    base = base_gguf(cfg)
    assert base is not None, "check `unsupported` first"
    model = cached_model(adapter_dirs, base) if adapter_dirs else base
    # n_ctx 0: the model's own context length, as transformers allows
    llm = Llama(model_path=str(model), n_ctx=0, n_threads=os.cpu_count(), seed=0, verbose=False)
    atexit.register(llm.close)  # freed while the interpreter still can: at teardown `Llama.__del__` prints errors
    return LlamaCppModel(llm, tokenizer)
