"""Shared fixtures: a tiny random-initialised chat model built in-process, data files in every format."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# Every run in the suite (CLI subprocesses inherit it) in fp32 whatever the CPU: the tests compare log-probs, losses
# and replies exactly, and on CPUs with native bf16 `auto` would pick bf16. tests/unit/test_hardware.py checks
# the automatic choice itself.
os.environ.setdefault("ALIGNKIT_PRECISION", "fp32")
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "What is two plus three? Two plus three is five.",
    "Name the capital of France. The capital of France is Paris.",
    "Reverse the words: red green blue. blue green red",
    "You are a helpful assistant. Hello! How can I help you today?",
    "Compost needs air, water, greens and browns to break down well.",
]


def build_tiny_model(
    path: Path, initializer_range: float = 0.02, architecture: str = "llama", chat_template: bool = True
) -> Path:
    """A 2-layer model with a byte-level BPE tokenizer and a ChatML template, saved as a normal HF model dir.

    `architecture`: llama (tied embeddings), qwen2 (untied LM head) or gpt2 (tied, learned positions, Conv1D layers).
    Without `chat_template` the tokenizer is a base model's: no template, no ChatML tokens, `<|endoftext|>` as eos and
    no pad token. At the default initializer range its logits stay near uniform whatever a LoRA adapter learns
    (RMSNorm fixes the hidden norm and the tied embeddings are tiny); a larger range gives a model whose answers a
    LoRA can make sure."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] if chat_template else ["<|endoftext|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    if chat_template:
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<|im_start|>",
            eos_token="<|im_end|>",
            pad_token="<|im_end|>",
            unk_token="<|endoftext|>",
        )
        tokenizer.chat_template = CHATML
    else:
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
        )
    torch.manual_seed(0)
    common = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "initializer_range": initializer_range,
    }
    if architecture == "gpt2":  # no dropout, as in the other two
        dropout = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
        model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=512, **dropout, **common))
    else:
        model_cls, config_cls = {"llama": (LlamaForCausalLM, LlamaConfig), "qwen2": (Qwen2ForCausalLM, Qwen2Config)}[
            architecture
        ]
        config = config_cls(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            tie_word_embeddings=architecture == "llama",
            **common,
        )
        model = model_cls(config)
    # Sample over the whole 400-token vocabulary, not generate's default top 50: the tests that rate a tiny model's
    # noise under `concise` need replies of different lengths, and from its top 50 tokens the notebook demo's
    # candidates tied on every prompt ("round 1 gave no preference pairs"). transformers saves top_k only with
    # do_sample; alignkit's own decoding samples only when given a temperature either way.
    model.generation_config.do_sample, model.generation_config.top_k = True, 0
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))


CHAT_ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"It is {2 * i}."},
        ]
    }
    for i in range(24)
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def chat_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)


def run_cli(
    *args: str, cwd: Path | None = None, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `alignkit` console entry point in a process of its own (so exit codes and stderr are what users see):
    forked from a process that has imported the libraries already (`run_cli_forked`), or with ALIGNKIT_TEST_FORK=0
    a fresh `python -m alignkit.cli`."""
    run = run_cli_fresh if os.environ.get("ALIGNKIT_TEST_FORK") == "0" else run_cli_forked
    return run(*args, cwd=cwd, timeout=timeout, env=env)


def run_cli_fresh(
    *args: str, cwd: Path | None = None, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`alignkit ARGS` in a fresh `python -m alignkit.cli`, as a user's shell starts it."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "alignkit.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def run_cli_forked(
    *args: str, cwd: Path | None = None, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`alignkit ARGS` forked from a process that imported torch, transformers, trl, peft and datasets already
    (`tests/cli_forkserver.py`), with the environment the command gets (give or take `NOT_READ_AT_IMPORT`): a fresh
    interpreter spends seconds on those imports, over a hundred times a suite."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return _forkserver(env).run(list(args), cwd=Path(cwd or os.getcwd()), env=env, timeout=timeout)


# Read when used, never by the preloaded libraries at import: alignkit's own (alignkit is not preloaded), pytest's
# name of the running test, the terminal size.
NOT_READ_AT_IMPORT = ("ALIGNKIT_", "PYTEST_CURRENT_TEST", "COLUMNS", "LINES")


def _import_environment(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The variables a preloaded library may have read at import."""
    return tuple(sorted((k, v) for k, v in env.items() if not k.startswith(NOT_READ_AT_IMPORT)))


class _ForkServer:
    """`tests/cli_forkserver.py` running with one environment; `run` is `subprocess.run`'s result of one command."""

    def __init__(self, env: dict[str, str]) -> None:
        import tempfile

        self.environment = _import_environment(env)
        self.folder = Path(tempfile.mkdtemp(prefix="alignkit-cli-"))
        self.imports_said = self.folder / "imports.stderr"
        with self.imports_said.open("wb") as said:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("cli_forkserver.py"))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=said,
                cwd=REPO,
                env=env,
            )
        try:
            ready = self._answer(timeout=600)
        except (TimeoutError, RuntimeError):
            ready = None
        if ready != {"ready": True}:
            said = self.imports_said.read_text()
            self.process.kill()
            self.close()
            raise RuntimeError(f"the CLI fork server did not start: {said}")

    def _answer(self, timeout: float) -> dict[str, Any]:
        import select

        assert self.process.stdout is not None
        if not select.select([self.process.stdout], [], [], timeout)[0]:
            raise TimeoutError
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the CLI fork server ended: {self.imports_said.read_text()}")
        return json.loads(line)

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
        import shutil
        import signal

        assert self.process.stdin is not None
        stdout, stderr = self.folder / "stdout", self.folder / "stderr"
        shutil.copyfile(self.imports_said, stderr)  # a fresh interpreter would have printed it to its stderr
        request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(stdout), "stderr": str(stderr)}
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        self.process.stdin.flush()
        pid = None
        try:
            pid = self._answer(timeout=60)["pid"]
            status = self._answer(timeout=timeout)["status"]
        except TimeoutError:
            if pid is None:
                raise
            os.kill(pid, signal.SIGKILL)  # as subprocess.run does on a timeout
            self._answer(timeout=60)
            raise subprocess.TimeoutExpired(["alignkit", *argv], timeout) from None
        except BaseException:  # interrupted mid-answer (Ctrl-C): this server's answers are out of step now
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.kill()
            self.process.wait()
            raise
        return subprocess.CompletedProcess(
            ["alignkit", *argv],
            os.waitstatus_to_exitcode(status),
            stdout.read_text(encoding="utf-8", errors="replace"),
            stderr.read_text(encoding="utf-8", errors="replace"),
        )

    def close(self) -> None:
        import shutil

        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


# The fork servers by the environment they imported with, the last used last: the suite's own, and the latest
# other (a test's commands that share an `env` of their own).
_servers: dict[tuple[tuple[str, str], ...], _ForkServer] = {}


def _forkserver(env: dict[str, str]) -> _ForkServer:
    """The fork server for `env`, started on its first use."""
    key = _import_environment(env)
    server = _servers.pop(key, None)
    if server is None or server.process.poll() is not None:
        if server is not None:
            server.close()  # killed while it answered
        server = _ForkServer(env)
    _servers[key] = server
    while len(_servers) > 2:
        _servers.pop(next(iter(_servers))).close()
    return server


@atexit.register
def _close_forkservers() -> None:
    while _servers:
        _servers.popitem()[1].close()


@pytest.fixture
def alignkit_records(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """`caplog` with alignkit's records from INFO up (the run's log.txt lines, the console's warnings): the CLI's
    quiet terminal stops alignkit's records at its own handlers, and an earlier in-process CLI call may have raised
    caplog's handler level (set it again between runs)."""
    alignkit_logger = logging.getLogger("alignkit")
    attach = not alignkit_logger.propagate  # else its records reach caplog through the root logger already
    if attach:
        alignkit_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="alignkit"):
            yield caplog
    finally:
        if attach:
            alignkit_logger.removeHandler(caplog.handler)


TINY_TRAINER = ["--set", "trainer.per_device_train_batch_size=4", "--set", "trainer.logging_steps=1"]


@pytest.fixture(scope="session")
def argilla_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real local Argilla per test session, on a free 127.0.0.1 port, data in a temp dir (the server venv is
    installed on first use and shared)."""
    from alignkit.feedback import server

    with server.start(data_dir=tmp_path_factory.mktemp("argilla-data")) as argilla:
        yield argilla


def train_sft_and_dpo(root: Path, model: str, sft_steps: int) -> Path:
    """`root/runs/sft` (a LoRA on `model`, `sft_steps` steps), `root/runs/dpo` (2 steps continuing it); the runs dir."""
    import alignkit

    tiny = {"per_device_train_batch_size": 4, "logging_steps": 1, "eval_steps": 2, "learning_rate": 1e-2}
    write_jsonl(root / "chat.jsonl", CHAT_ROWS)
    rejected = [{"role": "assistant", "content": "No idea."}]
    pairs = [{"prompt": r["messages"][:1], "chosen": r["messages"][1:], "rejected": rejected} for r in CHAT_ROWS]
    write_jsonl(root / "pairs.jsonl", pairs)
    sft = alignkit.sft(
        data={"paths": [str(root / "chat.jsonl")]},
        model={"name": model},
        out=str(root / "runs" / "sft"),
        trainer={"max_steps": sft_steps, **tiny},
    )
    alignkit.dpo(
        data={"paths": [str(root / "pairs.jsonl")]},
        from_run=str(sft.path),
        out=str(root / "runs" / "dpo"),
        trainer={"max_steps": 2, **tiny},
    )
    return root / "runs"


def run_capturing_trainer(stage: Any, **sections: Any) -> tuple[Any, Any]:
    """Run a stage through the public API (`alignkit.sft`, `.dpo`, `.rl`, ...) and keep the TRL trainer it trained
    (the in-memory model at the end)."""
    from alignkit import training

    captured: dict[str, Any] = {}
    original = training.train_and_save

    def keep_trainer(trainer: Any, run: Any, *args: Any, **kwargs: Any) -> Any:
        captured["trainer"] = trainer
        return original(trainer, run, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "train_and_save", keep_trainer)
        run = stage(**sections)
    return run, captured["trainer"]
