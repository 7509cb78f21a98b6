"""llama.cpp as the single-stream engine: the embedded GGUF with the lineage's LoRA adapters merged in (Q8_0) must
decode what transformers decodes from the same base with the adapters merged, within a tolerance: llama.cpp
multiplies quantized weights with 8-bit activations, transformers the dequantised weights in fp32."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from alignkit import lineage, llamacpp, models, playground
from alignkit.config import ModelConfig
from alignkit.errors import AlignkitError
from alignkit.generate import Sampling

pytestmark = pytest.mark.skipif(
    not llamacpp.installed(), reason="llama-cpp-python is not installed (make setup builds it where it can)"
)
EMBEDDED = ModelConfig(name="embedded")
PROMPTS = ["What is the capital of France?", "Is 146 divisible by 4?", "Hi, my name is Felix.", "Why is the sky blue?"]


@pytest.fixture(scope="module")
def embedded() -> tuple[object, object]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models.convert_gguf(models.embedded_gguf())
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def random_adapter(model: object, out: Path, seed: int, **lora: object) -> Path:
    """A LoRA adapter with random A and B (peft's `init_lora_weights=False`), small enough to keep answers fluent."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(init_lora_weights=False, **lora))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.data *= 0.3
    peft_model.save_pretrained(out)
    peft_model.unload()  # the base back as it was, for the next adapter
    return out


def merged(model: object, adapter_dirs: list[Path]) -> object:
    """A copy of the base with the adapters merged, oldest first, as `lineage.load_inference_model` does."""
    import copy

    from peft import PeftModel

    result = copy.deepcopy(model)
    for adapter_dir in adapter_dirs:
        result = PeftModel.from_pretrained(result, adapter_dir).merge_and_unload()
    return result.eval()


def argmax_agreement(reference: object, llm: object, tokenizer: object, new_tokens: int = 24) -> float:
    """Share of positions where llama.cpp's next token equals the reference's, fed the reference's own greedy replies
    (teacher-forced, so one early difference does not decide the rest)."""
    import torch

    agree = total = 0
    for prompt in PROMPTS:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        with torch.no_grad():
            tokens = reference.generate(ids, max_new_tokens=new_tokens, do_sample=False)[0]
            expected = reference(tokens[None]).logits[0].argmax(-1)
        llm.reset()
        llm.eval(tokens.tolist())
        got = torch.from_numpy(llm.scores[: len(tokens)]).argmax(-1)
        start = ids.shape[1] - 1  # positions that predict the reply
        agree += int((got[start:] == expected[start:]).sum())
        total += len(tokens) - start
    return agree / total


def test_stacked_lora_adapters_merged_for_llama_cpp_decode_like_transformers_merged_model(
    embedded: tuple[object, object], tmp_path: Path
) -> None:
    from llama_cpp import Llama

    model, tokenizer = embedded
    adapters = [  # an SFT-like adapter on every linear layer, then a smaller rsLoRA one on q and v only
        random_adapter(model, tmp_path / "sft", 0, r=8, lora_alpha=16, target_modules="all-linear"),
        random_adapter(
            model, tmp_path / "dpo", 1, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_rslora=True
        ),
    ]
    reference = merged(model, adapters)
    assert llamacpp.unsupported(EMBEDDED, adapters, tokenizer) is None
    written = llamacpp.write_merged(adapters, models.embedded_gguf(), tmp_path / "merged.gguf")
    options = {"n_ctx": 512, "n_threads": 2, "logits_all": True, "verbose": False}
    with_updates = Llama(model_path=str(written), **options)
    without = Llama(model_path=str(models.embedded_gguf()), **options)
    try:
        served = argmax_agreement(reference, with_updates, tokenizer)
        unadapted = argmax_agreement(reference, without, tokenizer)
    finally:
        with_updates.close()
        without.close()
    # A wrong tensor name, scale or q/k row order leaves the adapters' effect out or garbles it: the agreement then
    # falls to the unadapted model's level or below.
    assert served >= 0.9, served
    assert served - unadapted >= 0.2, (served, unadapted)


def test_what_llama_cpp_cannot_serve_is_named(embedded: tuple[object, object], tmp_path: Path) -> None:
    model, tokenizer = embedded
    dora = random_adapter(model, tmp_path / "dora", 0, r=4, target_modules=["q_proj"], use_dora=True)
    assert "use_dora" in llamacpp.unsupported(EMBEDDED, [dora], tokenizer)
    hf_dir = ModelConfig(name=str(models.convert_gguf(models.embedded_gguf())))
    assert "not a GGUF file" in llamacpp.unsupported(hf_dir, [], tokenizer)
    with pytest.raises(AlignkitError, match=r"llama\.cpp cannot serve"):
        playground.ModelPool(engine="llama.cpp").get(playground.BASE_PREFIX + hf_dir.name)


def test_the_merged_file_keeps_an_update_that_the_base_4_bit_type_rounds_away(
    embedded: tuple[object, object], tmp_path: Path
) -> None:
    """Why `write_merged` stores Q8_0 although Q4_1 is read faster: the update of a small adapter (as after a short
    SFT) mostly rounds back to the base's 4-bit weights (`benchmarks/merge_rounding.py`)."""
    from benchmarks import merge_rounding

    model, _ = embedded
    adapter = random_adapter(model, tmp_path / "small", seed=3, r=4, target_modules=["down_proj"])
    kept = merge_rounding.update_kept([adapter], ("Q4_1", "Q8_0"))
    assert kept["Q8_0"]["kept"] > 0.9
    assert kept["Q4_1"]["kept"] < 0.5


def test_a_llama_cpp_build_with_amx_kernels_is_not_used_unless_asked(
    embedded: tuple[object, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    import llama_cpp

    _, tokenizer = embedded
    info = llama_cpp.llama_print_system_info().replace(b"AMX_INT8 = 1 | ", b"")
    monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda: info + b"AMX_INT8 = 1 | ")
    assert "AMX" in llamacpp.unsupported(EMBEDDED, [], tokenizer)
    monkeypatch.setenv("ALIGNKIT_LLAMA_AMX", "1")
    assert llamacpp.unsupported(EMBEDDED, [], tokenizer) is None
    monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda: info)
    monkeypatch.delenv("ALIGNKIT_LLAMA_AMX")
    assert llamacpp.unsupported(EMBEDDED, [], tokenizer) is None


def test_the_playground_streams_the_embedded_base_through_llama_cpp(embedded: tuple[object, object]) -> None:
    pool = playground.ModelPool(engine="auto")
    key = playground.BASE_PREFIX + "embedded"
    assert pool.get(key).engine is not None
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    greedy = Sampling(temperature=0.0, max_new_tokens=16)
    first = playground.reply(pool, key, messages, greedy)
    assert first and first == playground.reply(pool, key, messages, greedy)
    story = [{"role": "user", "content": "Write one sentence about a cat."}]
    sampled = [playground.reply(pool, key, story, Sampling(max_new_tokens=24, seed=s)) for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]  # seeded: the same seed, the same reply
    stop = threading.Event()
    chunks = []
    for chunk in playground.stream_reply(pool, key, messages, Sampling(temperature=0.0, max_new_tokens=64), stop):
        chunks.append(chunk)
        stop.set()  # the Stop button: the stream ends at the next token
    assert len(chunks) == 1


def test_a_run_on_the_embedded_model_exports_to_gguf_without_llama_cpps_converter(
    embedded: tuple[object, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`export --gguf` asked for llama.cpp's converter script even where llama-cpp-python merges the run's adapters
    into the GGUF base itself (how the playground serves it)."""
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import alignkit
    from alignkit.export import export
    from tests.conftest import CHAT_ROWS, write_jsonl

    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    run = alignkit.sft(  # a high learning rate, so the adapter visibly changes the answers
        data={"paths": [str(write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS))]},
        out=str(tmp_path / "sft"),
        trainer={"max_steps": 3, "learning_rate": 1e-2, "per_device_train_batch_size": 4},
        early_stopping_patience=None,
    )
    with pytest.raises(AlignkitError, match=r"--gguf-type q4_k: .* f32, f16, bf16, q8_0"):
        export(run.path, tmp_path / "refused", gguf=True, gguf_type="q4_k")
    assert not (tmp_path / "refused").exists()

    chains: list[list[Path]] = []  # the lineage's adapters: resolved once, for the safetensors model and the GGUF file
    real_adapter_runs = lineage.adapter_runs

    def adapter_runs(steps: list[dict]) -> list:
        chain = real_adapter_runs(steps)
        chains.append([r.path.resolve() for r in chain])
        return chain

    monkeypatch.setattr(lineage, "adapter_runs", adapter_runs)
    out = export(run.path, tmp_path / "shipped", gguf=True)
    assert chains == [[run.path.resolve()]]
    written = out / "shipped-f16.gguf"
    assert llamacpp.gguf_fields(written, "general.file_type")["general.file_type"] == 1  # f16, as asked
    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    options = {"n_ctx": 512, "n_threads": 2, "logits_all": True, "verbose": False}
    served, base = Llama(model_path=str(written), **options), Llama(model_path=str(models.embedded_gguf()), **options)
    try:
        agreement = argmax_agreement(exported, served, AutoTokenizer.from_pretrained(out))
        unadapted = argmax_agreement(exported, base, AutoTokenizer.from_pretrained(out))
    finally:
        served.close()
        base.close()
    assert agreement >= 0.9, agreement
    assert agreement - unadapted >= 0.2, (agreement, unadapted)  # the run's adapter is in the file
