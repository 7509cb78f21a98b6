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


def test_the_vllm_backends_merge_is_found_for_a_moved_run_and_not_reused_for_other_weights(
    tmp_path, tiny_model, chat_file, monkeypatch
):
    """The run merged for vLLM was cached by the run's path (and finish time, to the second): a moved or copied run
    was merged again, and one trained again in its place within that second was served the earlier merge. It is
    named by the base, the lineage's run ids and their adapter files now."""
    import shutil

    from safetensors.torch import load_file, save_file

    import alignkit
    from alignkit import backends, runs

    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    tiny = {"per_device_train_batch_size": 4, "max_steps": 1}
    sft = alignkit.sft(data={"paths": [str(chat_file)]}, model={"name": tiny_model}, out=str(tmp_path / "runs" / "sft"),
                       trainer=tiny)  # fmt: skip
    merged, first_id = backends.merged_dir(sft), sft.manifest["id"]
    assert merged.parent == tmp_path / "cache" / "merged"

    shutil.move(tmp_path / "runs", tmp_path / "runs-moved")
    moved = runs.Run(tmp_path / "runs-moved" / "sft")
    assert backends.merged_dir(moved) == merged
    shutil.copytree(moved.path, tmp_path / "copy")
    assert backends.merged_dir(runs.Run(tmp_path / "copy")) == merged

    weights = tmp_path / "copy" / "adapter" / "adapter_model.safetensors"  # as if resumed: its id, other weights
    save_file({name: tensor * 1.5 for name, tensor in load_file(weights).items()}, weights)
    assert backends.merged_dir(runs.Run(tmp_path / "copy")) != merged
    again = alignkit.sft(data={"paths": [str(chat_file)]}, model={"name": tiny_model}, out=str(moved.path),
                         overwrite=True, trainer=tiny)  # fmt: skip
    assert again.manifest["id"] != first_id and backends.merged_dir(again) != merged
