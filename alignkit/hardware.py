"""Precision and hardware: the precision a run trains in (`pick_precision`, from the machine unless pinned), and
GPU-only features behind flags, each checked before any work: one clear error (or warning) where they cannot run.

| flag | needs |
|---|---|
| `model.precision: bf16` | a GPU with bf16, or a CPU (emulated there without AMX/AVX512-BF16: a warning) |
| `model.precision: fp16` | a CUDA GPU |
| `model.quantization: 4bit` / `8bit` (QLoRA) | a CUDA GPU and bitsandbytes |
| `model.attn_implementation: flash_attention_2` / `flash_attention_3` | a CUDA GPU and flash-attn |
| `trainer.use_liger_kernel: true` | a CUDA GPU and liger-kernel |
| `trainer.use_vllm: true` (rl), `alignkit generate --backend vllm` | a CUDA GPU and vllm |

`pip install 'alignkit[gpu]'` installs the optional packages on a GPU machine.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.config import ModelConfig
from alignkit.errors import AlignkitError, option

logger = logging.getLogger("alignkit")

GPU_EXTRA = "pip install 'alignkit[gpu]' on a CUDA machine"
QUANTIZATIONS = (None, "4bit", "8bit")
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # CPU flags under which bf16 runs natively, not emulated
FLASH_ATTENTION = {"flash_attention_2": "is_flash_attn_2_available", "flash_attention_3": "is_flash_attn_3_available"}


@dataclass
class Precision:
    """Training precision picked for the hardware (recorded in the manifest)."""

    device: str
    dtype: str  # float32 | bfloat16 | float16
    reason: str

    @property
    def manifest(self) -> dict[str, str]:
        return {"device": self.device, "precision": self.dtype, "precision_reason": self.reason}

    @property
    def trainer_flags(self) -> dict[str, bool]:
        return {"bf16": self.dtype == "bfloat16", "fp16": self.dtype == "float16"}


def pick_precision(requested: str = "auto") -> Precision:
    """bf16 where the hardware runs it fast (recent GPUs, CPUs with AMX/AVX512-BF16), else fp32; `auto` can be
    pinned machine-wide with the ALIGNKIT_PRECISION environment variable (fp32 | bf16 | fp16).

    TRL turns bf16 on by default; a CPU without native bf16 only emulates it, far slower than fp32.
    """
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    names = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    source = "config: model.precision"
    if requested == "auto":  # the machine-wide default, e.g. fp32 for exact comparisons in a test suite
        source, requested = "ALIGNKIT_PRECISION", os.environ.get("ALIGNKIT_PRECISION", "auto")
    if requested != "auto":
        if requested not in names:
            fix = option("model.precision", "auto") if source.startswith("config") else f"set {source} to auto"
            raise AlignkitError(f"{source}={requested!r} is not one of auto, fp32, bf16, fp16", fix)
        return Precision(device, names[requested], "requested" if source.startswith("config") else source)
    if device == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(device, "bfloat16", "GPU supports bf16")
        return Precision(device, "float16", "GPU without bf16")
    flags = cpu_flags()
    if NATIVE_BF16_FLAGS & flags:
        return Precision(device, "bfloat16", "CPU has native bf16")
    return Precision(device, "float32", "CPU without native bf16 (bf16 would be emulated, far slower)")


def cpuinfo_field(name: str) -> str | None:
    """The first value of a /proc/cpuinfo field (`flags`, `model name`), or None where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    return set((cpuinfo_field("flags") or "").split())


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


@functools.cache
def reuse_freed_memory() -> bool:
    """Keep the blocks a training step frees for the next step (glibc only); whether the setting took.

    glibc serves every block over its mmap threshold (32 MB at most) with a fresh mapping and unmaps it on free, so
    each step's largest tensors (a [tokens, vocabulary] fp32 logits tensor: 70 MB at 370 tokens of SmolLM2's 49k
    vocabulary, and its gradient) are faulted in and zeroed by the kernel again, page by page, every step. With mmap
    off and no trimming of the heap's top they are reused: `alignkit sft` on the benchmark's mixed chats ran at
    243 tokens/s instead of 200 on 2 cores (hand-measured once each, 2026-12-04, `benchmarks.measure sft-alignkit`),
    at the same peak RSS. `ALIGNKIT_MALLOC=default` leaves the allocator as it is."""
    import ctypes
    import ctypes.util
    import platform

    if os.environ.get("ALIGNKIT_MALLOC") == "default" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def require(feature: str, package: str | None = None, fallback: str = "") -> None:
    """A CUDA GPU (and `package`) for `feature`, else one AlignkitError saying what to do instead."""
    instead = f", or {fallback}" if fallback else ""
    if not cuda_available():
        raise AlignkitError(f"{feature} needs a CUDA GPU and none is visible", f"run it on a GPU machine{instead}")
    if package and not installed(package):
        raise AlignkitError(f"{feature} needs the `{package}` package, which is not installed", GPU_EXTRA + instead)


def check_model(cfg: ModelConfig, device: str, dtype: str) -> None:
    """Precision, quantization and attention kernel of `model:` against this machine."""
    if dtype == "float16" and device != "cuda":
        require("model.precision=fp16", fallback="use model.precision=fp32 or bf16 on CPUs")
    if dtype == "bfloat16" and device == "cpu" and not NATIVE_BF16_FLAGS & cpu_flags():
        warn_once("model.precision=bf16 on a CPU without native bf16: emulated, far slower than fp32")
    if cfg.quantization not in QUANTIZATIONS:
        raise AlignkitError(
            f"config: model.quantization={cfg.quantization!r} is not one of 4bit, 8bit", "set 4bit (QLoRA) or drop it"
        )
    if cfg.quantization:
        require(f"model.quantization={cfg.quantization} (QLoRA)", "bitsandbytes", "drop model.quantization")
    if cfg.attn_implementation in FLASH_ATTENTION:
        import transformers.utils

        require(
            f"model.attn_implementation={cfg.attn_implementation}",
            fallback="leave it unset (sdpa where the model supports it)",
        )
        if not getattr(transformers.utils, FLASH_ATTENTION[cfg.attn_implementation])():
            raise AlignkitError(
                f"model.attn_implementation={cfg.attn_implementation} needs flash-attn, which is not installed",
                "pip install flash-attn --no-build-isolation, or leave it unset (sdpa where the model supports it)",
            )


@functools.cache
def warn_once(message: str) -> None:
    """A warning shown once per process (the model is checked at config time and again at each load)."""
    logger.warning(message)


def check_trainer(options: dict[str, Any]) -> None:
    """GPU-only `trainer:` options: Liger kernels, TRL's vLLM generation (GRPO/RLOO)."""
    if options.get("use_liger_kernel"):
        require("trainer.use_liger_kernel", "liger_kernel", "drop trainer.use_liger_kernel")
    if options.get("use_vllm"):
        require("trainer.use_vllm (vLLM generation)", "vllm", "drop trainer.use_vllm (transformers generates)")


def quantization_options(cfg: ModelConfig, dtype: str, device: str) -> dict[str, Any]:
    """`from_pretrained` keywords for a QLoRA base: bitsandbytes NF4 (or 8-bit) placed on this process's GPU."""
    if not cfg.quantization:
        return {}
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "4bit":
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    else:
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": quantization, "device_map": {"": device}}
