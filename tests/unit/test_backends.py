"""Generation backend selection: transformers by default; vLLM asked for where it cannot run is one clear error."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from alignkit.config import RLStageConfig
from alignkit.errors import AlignkitError
from alignkit.stages import rl
from tests.conftest import run_cli, write_jsonl
from tests.unit.test_bad_inputs import assert_one_line_error, invoke

PROMPTS = [{"prompt": f"Say {i}."} for i in range(3)]
VLLM_RUNS = torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(VLLM_RUNS, reason="vLLM can run here")
def test_generate_with_vllm_where_it_cannot_run_is_one_error_before_loading(tmp_path, tiny_model, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "candidates.jsonl"
    argv = ["generate", "--prompts", str(prompts), "--out", str(out), "--model", tiny_model, "--backend", "vllm"]
    code, err = invoke(argv, capsys)
    assert_one_line_error(code, err, ["vllm", "--backend transformers"])
    assert not out.exists()


def test_unknown_backend_names_the_choices(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    argv = ["generate", "--prompts", str(prompts), "--out", str(tmp_path / "c.jsonl"), "--backend", "tgi"]
    code, err = invoke(argv, capsys)
    assert_one_line_error(code, err, ["unknown generation backend 'tgi'", "transformers, vllm"])


def test_transformers_backend_is_the_default_and_writes_candidates(tmp_path, tiny_model):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "candidates.jsonl"
    result = run_cli(
        "generate", "--prompts", str(prompts), "--out", str(out), "--model", tiny_model,
        "--n", "2", "--max-new-tokens", "8", "--backend", "transformers",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == len(PROMPTS)


@pytest.mark.skipif(VLLM_RUNS, reason="vLLM can run here")
def test_rl_with_the_vllm_backend_where_it_cannot_run_is_one_error():
    with pytest.raises(AlignkitError, match="vllm"):
        rl.trainer_defaults(RLStageConfig(backend="vllm"), None, has_eval=False, train_prompts=100)


def test_rl_transformers_backend_leaves_trl_generation_as_is():
    defaults = rl.trainer_defaults(RLStageConfig(), None, has_eval=False, train_prompts=100)
    assert "use_vllm" not in defaults
