"""GPU-only flags on a machine without a GPU: one clear error before any work (or a warning where it still runs)."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys

import pytest
import torch

from alignkit import hardware, training
from alignkit.config import RLStageConfig
from alignkit.errors import AlignkitError
from tests.conftest import run_cli
from tests.unit.test_bad_inputs import assert_one_line_error, invoke

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU paths")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("model.quantization=4bit", "needs a CUDA GPU"),
        ("model.quantization=3bit", "not one of 4bit, 8bit"),
        ("model.attn_implementation=flash_attention_2", "needs a CUDA GPU"),
        ("model.precision=fp16", "needs a CUDA GPU"),
        ("trainer.use_liger_kernel=true", "needs a CUDA GPU"),
    ],
)
def test_gpu_flag_without_a_gpu_is_one_error_and_no_run_dir(setting, expected, tmp_path, chat_file, tiny_model, capsys):
    out = tmp_path / "run"
    code, err = invoke(
        ["sft", "--data", str(chat_file), "--model", tiny_model, "--out", str(out), "--set", setting], capsys
    )
    assert_one_line_error(code, err, [expected, "fix:"])
    assert not out.exists()


def test_trl_vllm_generation_without_vllm_is_one_error():
    cfg = RLStageConfig(trainer={**RLStageConfig().trainer, "use_vllm": True})
    from trl import GRPOConfig

    precision = hardware.pick_precision("fp32")
    with pytest.raises(AlignkitError, match=r"use_vllm.*needs a CUDA GPU"):
        training.trainer_args(GRPOConfig, cfg, "unused/checkpoints", has_eval=False, precision=precision)


def test_bf16_on_a_cpu_trains_with_a_warning_when_emulated(tmp_path, chat_file, tiny_model):
    out = tmp_path / "run"
    result = run_cli(
        "sft", "--data", str(chat_file), "--model", tiny_model, "--out", str(out), "--max-steps", "1",
        "--set", "model.precision=bf16", "--set", "data.validation_split=0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "bfloat16" and manifest["status"] == "complete"
    if not {"amx_bf16", "avx512_bf16"} & hardware.cpu_flags():
        assert "emulated" in result.stderr


def test_auto_precision_follows_the_cpu_unless_pinned_by_the_environment(monkeypatch):
    monkeypatch.delenv("ALIGNKIT_PRECISION", raising=False)
    native = {"amx_bf16", "avx512_bf16"} & hardware.cpu_flags()
    assert hardware.pick_precision().dtype == ("bfloat16" if native else "float32")
    monkeypatch.setenv("ALIGNKIT_PRECISION", "bf16")
    assert hardware.pick_precision().dtype == "bfloat16" and hardware.pick_precision("fp32").dtype == "float32"
    monkeypatch.setenv("ALIGNKIT_PRECISION", "fp8")
    with pytest.raises(AlignkitError, match="ALIGNKIT_PRECISION='fp8' is not one of"):
        hardware.pick_precision()


REALLOCATION_FAULTS = """
import resource, torch
from alignkit import hardware
took = hardware.reuse_freed_memory()
torch.ones(25 * 2**20)  # 100 MB, written, then freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(22 * 2**20)  # a smaller tensor, as the next training step's logits may be
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_a_freed_large_tensor_is_reused_without_page_faults_unless_the_allocator_is_left_alone():
    def second_allocation(env: dict[str, str]) -> tuple[str, int]:
        result = subprocess.run(
            [sys.executable, "-c", REALLOCATION_FAULTS],
            env={k: v for k, v in os.environ.items() if k != "ALIGNKIT_MALLOC"} | env,
            capture_output=True,
            text=True,
            check=True,
        )
        took, faults = result.stdout.split()
        return took, int(faults)

    pages = 88 * 2**20 // resource.getpagesize()
    took, reused = second_allocation({})
    left_alone, fresh = second_allocation({"ALIGNKIT_MALLOC": "default"})
    assert (took, left_alone) == ("True", "False")
    assert fresh > pages // 2  # glibc maps the 88 MB afresh: every page faults in (and is zeroed) again
    assert reused < pages // 20
