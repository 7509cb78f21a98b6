"""Tiny base models of three architectures through the loop (sft -> reward -> dpo -> generate -> export), two of them
without a chat template (alignkit gives them ChatML and trains its tokens); and a refused stage leaving no run dir."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import alignkit
from alignkit import AlignkitError, generate, hardware, lineage, models, playground, runs
from alignkit.config import ModelConfig
from alignkit.export import export
from tests.conftest import CHAT_ROWS, build_tiny_model, write_jsonl

# architecture -> whether its tokenizer has a chat template; qwen2 has an untied LM head, gpt2 and llama tie it
ARCHITECTURES = {"llama": True, "qwen2": False, "gpt2": False}
CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]
TINY = {"per_device_train_batch_size": 4, "logging_steps": 1, "learning_rate": 1e-2}
CONVERSATION = [{"role": "user", "content": "What is 3 plus 3?"}, {"role": "assistant", "content": "It is 6."}]
PROMPTS = [[{"role": "user", "content": f"What is {i} plus {i}?"}] for i in (1, 5)]


@dataclass
class Loop:
    base: Path
    has_template: bool
    sft: runs.Run
    reward: runs.Run
    dpo: runs.Run
    candidates: Path
    exported: Path


def write_data(root: Path) -> tuple[Path, Path]:
    chat = write_jsonl(root / "chat.jsonl", CHAT_ROWS[:8])
    rejected = [{"role": "assistant", "content": "No idea."}]
    pairs = [{"prompt": r["messages"][:1], "chosen": r["messages"][1:], "rejected": rejected} for r in CHAT_ROWS[:8]]
    return chat, write_jsonl(root / "pairs.jsonl", pairs)


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def loop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Loop:
    """The whole loop on one architecture, 1-2 steps a stage; no dropout, so DPO's reference is exactly its policy."""
    architecture, has_template = request.param, ARCHITECTURES[request.param]
    root = tmp_path_factory.mktemp(architecture)
    base = build_tiny_model(root / "base", architecture=architecture, chat_template=has_template)
    chat, pairs = write_data(root)
    no_split = {"validation_split": 0}
    sft = alignkit.sft(
        data={"paths": [str(chat)], **no_split},
        model={"name": str(base)},
        out=str(root / "sft"),
        trainer={"max_steps": 2, **TINY},
        peft={"lora_dropout": 0.0},
    )
    reward_run = alignkit.reward(
        data={"paths": [str(pairs)], **no_split}, from_run=str(sft.path), out=str(root / "reward"), trainer=TINY
    )
    dpo = alignkit.dpo(
        data={"paths": [str(pairs)], **no_split},
        from_run=str(sft.path),
        out=str(root / "dpo"),
        trainer={"max_steps": 1, **TINY},
    )
    prompts = write_jsonl(root / "prompts.jsonl", [{"prompt": p[0]["content"]} for p in PROMPTS])
    candidates = generate.run(
        str(prompts),
        str(root / "candidates.jsonl"),
        n=2,
        from_run=str(dpo.path),
        sampling=generate.Sampling(max_new_tokens=8),
    )
    return Loop(base, has_template, sft, reward_run, dpo, candidates, export(dpo.path, root / "exported"))


def rendered(tokenizer: object) -> tuple[int, str, list[int]]:
    """What must be identical between two tokenizers of one lineage: size, chat text, token ids."""
    text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=False)
    return len(tokenizer), text, tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_base_without_chat_template_gets_chatml_recorded_once_in_the_manifest(loop):
    added = loop.sft.manifest.get("chat_template")
    if loop.has_template:
        assert added is None and not loop.sft.tokenizer_dir.exists(), "a model's own template is kept"
    else:
        assert added["template"] == "chatml" and added["added_tokens"] == CHATML_TOKENS
        assert added["eos_token"] == "<|im_end|>" and added["pad_token"] == "<|endoftext|>"
        saved = AutoTokenizer.from_pretrained(loop.sft.tokenizer_dir)
        assert saved.convert_tokens_to_ids(CHATML_TOKENS) == added["token_ids"]
    for later in (loop.reward, loop.dpo):  # built on the SFT run: its tokenizer, nothing added again
        assert "chat_template" not in later.manifest and not later.tokenizer_dir.exists()


def test_every_stage_and_the_export_use_the_sft_runs_tokenizer(loop):
    sft_model, sft_tokenizer = lineage.load_run_model(loop.sft.path)
    dpo_model, dpo_tokenizer = lineage.load_run_model(loop.dpo.path)
    exported_tokenizer = AutoTokenizer.from_pretrained(loop.exported)
    scorer = lineage.load_scorer(loop.reward.path)
    handle = playground.ModelPool().get(str(loop.dpo.path))
    expected = rendered(sft_tokenizer)
    for tokenizer in (dpo_tokenizer, exported_tokenizer, scorer.tokenizer, handle.tokenizer):
        assert rendered(tokenizer) == expected
    if not loop.has_template:
        assert expected[1].startswith("<|im_start|>user\nWhat is 3 plus 3?<|im_end|>\n")
        assert expected[0] == len(AutoTokenizer.from_pretrained(loop.base)) + len(CHATML_TOKENS)
    exported = AutoModelForCausalLM.from_pretrained(loop.exported).eval()  # plain transformers, no peft
    for model in (sft_model, dpo_model, exported, scorer.model):
        assert model.get_input_embeddings().weight.shape[0] == expected[0]
    assert generate.greedy_replies(exported, exported_tokenizer, PROMPTS, 6) == generate.greedy_replies(
        dpo_model, dpo_tokenizer, PROMPTS, 6
    ), "the export is the DPO run's model, new token rows included"


def test_generation_from_the_dpo_run_gives_candidates_from_it(loop):
    rows = [json.loads(line) for line in loop.candidates.read_text().splitlines()]
    assert [row["prompt"] for row in rows] == PROMPTS
    for row in rows:
        assert len(row["candidates"]) == 2
        assert all(c["run"] == str(loop.dpo.path.resolve()) and isinstance(c["text"], str) for c in row["candidates"])


def test_sft_trains_the_rows_of_the_tokens_chatml_added(loop):
    if loop.has_template:
        pytest.skip("nothing added to a model with its own chat template")
    ids = torch.tensor(loop.sft.manifest["chat_template"]["token_ids"])
    cfg = ModelConfig(name=str(loop.base))
    base = models.load_base(cfg, hardware.pick_precision("fp32"))  # the ChatML rows as every load makes them
    trained = lineage.load_run_model(loop.sft.path)[0].merge_and_unload()
    layers = [(base.get_input_embeddings(), trained.get_input_embeddings())]
    if not base.config.tie_word_embeddings:
        layers.append((base.get_output_embeddings(), trained.get_output_embeddings()))
    for before, after in layers:
        assert not torch.allclose(before.weight[ids], after.weight[ids]), "the new tokens' rows were trained"
        assert torch.equal(before.weight[: ids.min()], after.weight[: ids.min()]), "the base's own rows were not"


def test_dpo_reference_is_the_sft_policy_new_token_rows_included(loop):
    first = json.loads((loop.dpo.path / "metrics.jsonl").read_text().splitlines()[0])
    # At the first step policy == reference, so the implicit rewards are 0 unless the reference differs from SFT.
    assert first["step"] == 1
    assert abs(first["rewards/chosen"]) < 1e-6 and abs(first["rewards/rejected"]) < 1e-6


@pytest.fixture(scope="module")
def refusal_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("refusal") / "base")


def test_sft_refused_for_malformed_data_leaves_no_run_dir_and_the_same_out_works_after(tmp_path, refusal_base):
    out = tmp_path / "runs" / "sft"
    bad = Path(__file__).resolve().parent.parent / "data" / "bad" / "bad_json_line.jsonl"
    sections = {"model": {"name": str(refusal_base)}, "out": str(out), "trainer": {"max_steps": 1, **TINY}}
    with pytest.raises(AlignkitError):
        alignkit.sft(data={"paths": [str(bad)]}, **sections)
    assert not out.parent.exists(), "refused before anything was written"
    chat, _ = write_data(tmp_path)
    assert alignkit.sft(data={"paths": [str(chat)], "validation_split": 0}, **sections).complete


def adapter_run(path: Path, base: Path, trained_on: Path | None = None) -> runs.Run:
    """A complete-looking SFT run on `base` whose untrained LoRA adapter was made on `trained_on` (default: `base`)."""
    from peft import LoraConfig, get_peft_model

    run = runs.Run(path)
    model = AutoModelForCausalLM.from_pretrained(trained_on or base)
    get_peft_model(model, LoraConfig(target_modules=["q_proj"])).save_pretrained(run.adapter_dir)
    manifest = {
        "stage": "sft",
        "status": "complete",
        "model": {"name": str(base), "precision": "fp32"},
        "lineage": [{"stage": "sft", "run": str(run.path.resolve())}],
    }
    runs.write_json(run.path / "manifest.json", manifest)
    return run


def wider_model(base: Path, path: Path) -> Path:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base)
    config.hidden_size, config.intermediate_size = 64, 128
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return path


def test_dpo_refused_while_loading_its_parent_removes_its_run_dir_and_keeps_the_one_it_would_replace(
    tmp_path, refusal_base
):
    _, pairs = write_data(tmp_path)
    misfit = adapter_run(tmp_path / "misfit-sft", refusal_base, trained_on=wider_model(refusal_base, tmp_path / "w"))
    out = tmp_path / "runs" / "dpo"
    sections = {"data": {"paths": [str(pairs)], "validation_split": 0}, "trainer": {"max_steps": 1, **TINY}}
    with pytest.raises(AlignkitError, match="adapter does not fit"):
        alignkit.dpo(from_run=str(misfit.path), out=str(out), **sections)
    assert not out.exists(), "the run dir made before the model loaded is gone"
    assert not list(out.parent.iterdir()), "and no temp dir is left beside it"

    out.mkdir()
    (out / "manifest.json").write_text('{"stage": "dpo", "status": "complete"}')
    (out / "keep.txt").write_text("an earlier run")
    with pytest.raises(AlignkitError, match="adapter does not fit"):
        alignkit.dpo(from_run=str(misfit.path), out=str(out), overwrite=True, **sections)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "manifest.json"], "replaced once the run is set up"
    assert [p.name for p in out.parent.iterdir()] == ["dpo"]

    fitting = adapter_run(tmp_path / "fitting-sft", refusal_base)
    done = alignkit.dpo(from_run=str(fitting.path), out=str(out), overwrite=True, **sections)
    assert done.complete and not (out / "keep.txt").exists()


def test_ctrl_c_while_a_stage_sets_up_puts_back_the_run_it_was_replacing(tmp_path, refusal_base, monkeypatch):
    """A Ctrl-C (or a crash) before training starts left the replaced run in a hidden `.dpo.replaced-PID` folder
    and a new run that trained nothing in its place."""
    _, pairs = write_data(tmp_path)
    parent = adapter_run(tmp_path / "sft", refusal_base)
    out = tmp_path / "runs" / "dpo"
    out.mkdir(parents=True)
    (out / "manifest.json").write_text('{"stage": "dpo", "status": "complete"}')

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the user's Ctrl-C while the parent model loads

    monkeypatch.setattr(lineage, "load_run_model", interrupted)
    sections = {"data": {"paths": [str(pairs)], "validation_split": 0}, "trainer": {"max_steps": 1, **TINY}}
    with pytest.raises(KeyboardInterrupt):
        alignkit.dpo(from_run=str(parent.path), out=str(out), overwrite=True, **sections)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete", "the earlier run is back"
    assert [p.name for p in out.parent.iterdir()] == ["dpo"], "and no hidden copy is left beside it"


def test_a_resumed_run_refused_in_set_up_is_left_as_it_was(tmp_path):
    run = runs.Run(tmp_path / "run")  # reopened by `create` for --resume: not fresh
    run.path.mkdir()
    runs.write_json(run.path / "manifest.json", {"stage": "sft", "status": "running", "lineage": []})
    with pytest.raises(AlignkitError), run.removed_if_refused():
        raise AlignkitError("model went missing")
    assert (run.path / "manifest.json").is_file()


def test_without_network_a_cached_hub_model_trains_and_an_unknown_one_fails_at_once(tiny_model, tmp_path):
    """Where the hub's host does not resolve, alignkit goes offline (cached files only) instead of letting
    huggingface_hub retry each request for ~25 s: a cached hub id trains, an unknown one is one line, neither retries.
    `.invalid` never resolves (RFC 2606), so this holds on machines with a network too."""
    from tests.conftest import run_cli

    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    env = {"HF_ENDPOINT": "http://hub.invalid", "HF_HUB_CACHE": str(tmp_path / "hub"), "ALIGNKIT_CACHE": str(tmp_path)}
    env |= {"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": ""}
    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS[:8])
    tiny = ["--set", "trainer.max_steps=1", "--set", "trainer.per_device_train_batch_size=4"]

    trained = run_cli("sft", "--model", "org/tiny", "--data", str(chat), "--out", str(tmp_path / "sft"), *tiny, env=env)
    assert trained.returncode == 0, trained.stderr
    assert json.loads((tmp_path / "sft" / "manifest.json").read_text())["base"]["name"] == "org/tiny"
    unknown = run_cli("sft", "--model", "org/unknown", "--data", str(chat), "--out", str(tmp_path / "u"), env=env)
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert "model org/unknown: not a local dir" in unknown.stderr and not (tmp_path / "u").exists()
    assert "Retry" not in (tmp_path / "logs" / "alignkit.log").read_text()
