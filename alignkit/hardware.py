"""GPU-only features behind flags, each checked before any work: one clear error (or warning) where they cannot run.

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
from typing import Any

from alignkit.config import ModelConfig
from alignkit.errors import AlignkitError

logger = logging.getLogger("alignkit")

GPU_EXTRA = "pip install 'alignkit[gpu]' on a CUDA machine"
QUANTIZATIONS = (None, "4bit", "8bit")
FLASH_ATTENTION = {"flash_attention_2": "is_flash_attn_2_available", "flash_attention_3": "is_flash_attn_3_available"}


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
    if dtype == "bfloat16" and device == "cpu":
        from alignkit.models import cpu_flags

        if not {"amx_bf16", "avx512_bf16"} & cpu_flags():
            warn_once("model.precision=bf16 on a CPU without native bf16: emulated, far slower than fp32")
    if cfg.quantization not in QUANTIZATIONS:
        raise AlignkitError(
            f"config: model.quantization={cfg.quantization!r} is not one of 4bit, 8bit", "set 4bit (QLoRA) or drop it"
        )
    if cfg.quantization:
        require(f"model.quantization={cfg.quantization} (QLoRA)", "bitsandbytes", "drop model.quantization")
    if cfg.attn_implementation in FLASH_ATTENTION:
        import transformers.utils

        require(f"model.attn_implementation={cfg.attn_implementation}", fallback="use sdpa (the default)")
        if not getattr(transformers.utils, FLASH_ATTENTION[cfg.attn_implementation])():
            raise AlignkitError(
                f"model.attn_implementation={cfg.attn_implementation} needs flash-attn, which is not installed",
                "pip install flash-attn --no-build-isolation, or use sdpa (the default)",
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
