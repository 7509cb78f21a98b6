"""Model safety: safetensors only unless `model.allow_pickle`, no model code runs unless `model.trust_remote_code`,
and an adapter that does not fit its base is a clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import alignkit
from alignkit import hardware, lineage, models, runs
from alignkit.config import ModelConfig
from alignkit.errors import AlignkitError
from tests.unit.test_bad_inputs import assert_one_line_error, invoke, sft_argv


def pickle_only_model(tiny_model: str, dest: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)  # transformers 5 saves safetensors only: pickle by hand
    dest.mkdir()
    model.config.save_pretrained(dest)
    torch.save(model.state_dict(), dest / "pytorch_model.bin")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(dest)
    assert (dest / "pytorch_model.bin").is_file() and not list(dest.glob("*.safetensors"))
    return dest


def test_pickle_weights_are_refused_unless_allowed(tmp_path, capsys, chat_file, tiny_model):
    model = pickle_only_model(tiny_model, tmp_path / "pickled")
    capsys.readouterr()  # building it printed progress bars
    out = tmp_path / "run"
    code, err = invoke(sft_argv(chat_file, str(model), out), capsys)
    assert_one_line_error(code, err, ["pickled", "pickle `.bin` files only", "model.allow_pickle=true"])
    assert not out.exists()

    with pytest.raises(AlignkitError, match="allow_pickle"):  # the loader itself refuses too
        models.load_base(ModelConfig(name=str(model)), hardware.pick_precision("fp32"))
    allowed = ModelConfig(name=str(model), allow_pickle=True)
    models.check_loadable(allowed)
    assert models.load_base(allowed, hardware.pick_precision("fp32")).num_parameters() > 0


CUSTOM_CODE = """
from pathlib import Path
Path(__file__).with_name("code-ran").write_text("model code ran")
from transformers import LlamaConfig
class CustomConfig(LlamaConfig):
    model_type = "alignkit-custom"
"""


def test_model_code_never_runs_unless_trust_remote_code(tmp_path, capsys, chat_file, tiny_model):
    model = tmp_path / "custom"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    config |= {"model_type": "alignkit-custom", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}
    (model / "config.json").write_text(json.dumps(config))
    (model / "configuration_custom.py").write_text(CUSTOM_CODE)
    out = tmp_path / "run"
    code, err = invoke(sft_argv(chat_file, str(model), out), capsys)
    assert_one_line_error(code, err, ["custom", "needs its own code", "model.trust_remote_code=true"])
    assert not out.exists()
    assert not list(tmp_path.rglob("code-ran")), "no code from the model dir ran"


def test_shipped_defaults_are_safe():
    cfg = ModelConfig()
    assert cfg.allow_pickle is False and cfg.trust_remote_code is False


def test_adapter_of_another_base_is_a_clear_error(tmp_path, tiny_model):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    wider = tmp_path / "wider-base"  # same tokenizer, different hidden size
    config = AutoConfig.from_pretrained(tiny_model)
    config.hidden_size, config.intermediate_size = 64, 128
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(wider)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(wider)

    run = runs.Run(tmp_path / "run")  # an adapter trained on the tiny base, recorded as if on the wider one
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(target_modules=["q_proj"]))
    lora.save_pretrained(run.adapter_dir)
    runs.write_json(
        run.path / "manifest.json",
        {
            "stage": "sft",
            "status": "complete",
            "model": {"name": str(wider), "precision": "fp32"},
            "lineage": [{"stage": "sft", "run": str(run.path)}],
        },
    )
    with pytest.raises(AlignkitError) as error:
        lineage.load_run_model(run.path)
    assert "adapter does not fit this base model" in error.value.message
    assert str(run.adapter_dir) in error.value.message
    assert "same base model" in error.value.hint
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Hi?"}\n')
    with pytest.raises(AlignkitError) as error:  # a notebook picks the base with the keyword `candidates` takes
        alignkit.candidates(prompts, tmp_path / "candidates.jsonl", from_run=run.path, max_new_tokens=2)
    assert error.value.hint.endswith(", or pick the matching `model`")
    with pytest.raises(AlignkitError) as error:  # `evaluate_runs` takes no model: it is not offered
        alignkit.evaluate_runs([run.path], out=tmp_path / "eval", limit=1, max_new_tokens=2)
    assert error.value.hint == "train the adapter on the same base model"
