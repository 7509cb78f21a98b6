"""Continued pretraining as users bring their text: a folder of documents, JSONL with another column name; what it
trains (every token, each document on its own) and that it lowers the perplexity of held-out domain text."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

import alignkit
from alignkit import AlignkitError, evaluate, lineage
from alignkit.config import DataConfig
from alignkit.data import load_split, load_text
from alignkit.paths import bundled_data
from tests.conftest import build_tiny_model, run_cli, write_jsonl


def test_a_folder_of_text_files_is_read_as_its_documents_in_path_order(tmp_path, alignkit_records):
    """`--data corpus/` was refused as "not a `datasets` save dir": a folder of .txt/.md files is how domain text
    usually comes."""
    corpus = tmp_path / "corpus"
    (corpus / "guides").mkdir(parents=True)
    (corpus / ".git").mkdir()
    (corpus / "b.txt").write_text("Turn the pile weekly.\n\nKeep it moist.\n")
    (corpus / "a.md").write_text("# Compost\n\nGreens and browns.\n")
    (corpus / "guides" / "worms.txt").write_text("Red wigglers eat scraps.\n")
    (corpus / "guides" / "empty.txt").write_text("")
    (corpus / ".git" / "notes.txt").write_text("not a document\n")
    (corpus / "index.html").write_text("<p>not read</p>\n")

    files = [corpus / "a.md", corpus / "b.txt", corpus / "guides" / "empty.txt", corpus / "guides" / "worms.txt"]
    one_by_one = [row for file in files[:2] + files[3:] for row in load_text([str(file)])]
    assert load_text([str(corpus)]) == one_by_one
    assert [row["text"] for row in one_by_one][:2] == ["# Compost", "Greens and browns."]
    assert "index.html" not in str(one_by_one) and any(".html" in r.message for r in alignkit_records.records)

    train, validation, paths, _ = load_split(DataConfig(paths=[str(corpus)], validation_split=0.2), load_text)
    assert len(train) + len(validation) == len(one_by_one) and validation and paths == [str(corpus)]


def test_a_folder_without_data_files_is_refused_in_one_line(tmp_path, tiny_model):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>hi</p>\n")
    result = run_cli("pretrain", "--data", str(site), "--model", tiny_model, "--out", str(tmp_path / "run"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "neither a `datasets` save dir nor a folder with data files (it has .html files)" in result.stderr
    assert not (tmp_path / "run").exists()


def test_text_in_another_column_trains_the_same_as_text_when_trl_s_text_field_names_it(tmp_path, tiny_model):
    """JSONL with `body` (or `content`) was refused even with `--set trainer.dataset_text_field=body`, TRL's own
    option for it: alignkit read only `text`."""
    documents = [f"Compost pile {i} needs air, water, greens and browns." for i in range(12)]
    as_text = write_jsonl(tmp_path / "text.jsonl", [{"text": doc} for doc in documents])
    as_body = write_jsonl(tmp_path / "body.jsonl", [{"id": i, "body": doc} for i, doc in enumerate(documents)])
    with pytest.raises(AlignkitError, match="dataset_text_field=COLUMN"):
        load_text([str(as_body)])

    trainer = {"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 32}
    runs = {
        name: alignkit.pretrain(
            data={"paths": [str(path)]},
            model={"name": tiny_model},
            out=str(tmp_path / name),
            trainer=trainer | extra,
        )
        for name, path, extra in [("text", as_text, {}), ("body", as_body, {"dataset_text_field": "body"})]
    }
    assert runs["body"].metrics["train_tokens"] == runs["text"].metrics["train_tokens"] > 0
    assert runs["body"].metrics["train_loss"] == pytest.approx(runs["text"].metrics["train_loss"])
    assert runs["body"].metrics["eval_rows"] == runs["text"].metrics["eval_rows"] > 0


def test_a_pretrain_adapter_lowers_the_perplexity_of_held_out_domain_text_below_the_base(tmp_path):
    """What continued pretraining is for: held-out paragraphs of the domain (never trained on) are more likely
    under base + adapter than under the base; the run reports its validation perplexity before and after."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = str(build_tiny_model(tmp_path / "base", initializer_range=0.5))
    paragraphs = [json.loads(line)["text"] for line in bundled_data("domain_text.jsonl").read_text().splitlines()]
    train, held_out = paragraphs[:60], paragraphs[60:80]
    domain = tmp_path / "domain.txt"
    domain.write_text("\n\n".join(train))
    run = alignkit.pretrain(
        data={"paths": [str(domain)], "validation_split": 6},
        model={"name": base},
        out=str(tmp_path / "pre"),
        trainer={"max_steps": 30, "learning_rate": 5e-3, "max_length": 128, "eval_steps": 30},
    )

    tokenizer = AutoTokenizer.from_pretrained(base)
    base_ppl = evaluate.perplexity(AutoModelForCausalLM.from_pretrained(base).eval(), tokenizer, held_out)
    model, tokenizer = lineage.load_run_model(run.path)
    tuned_ppl = evaluate.perplexity(model.eval(), tokenizer, held_out)
    assert tuned_ppl < 0.9 * base_ppl
    metrics = run.metrics
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    assert metrics["eval_perplexity_start"] == pytest.approx(math.exp(metrics["eval_loss_start"]))
    assert metrics["eval_perplexity"] < metrics["eval_perplexity_start"]


def domain_paragraphs() -> list[str]:
    return [json.loads(line)["text"] for line in bundled_data("domain_text.jsonl").read_text().splitlines()]


def test_validation_holds_out_whole_text_files_or_one_contiguous_block_of_one(tmp_path):
    """Paragraphs of .txt files were held out one by one at random: a held-out paragraph's neighbours in its file
    trained, so validation loss measured memory of the text around it. Now whole files are held out where there are
    several, and one contiguous block of paragraphs where there is one file."""
    paragraphs = domain_paragraphs()[:60]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for number in range(6):
        (corpus / f"chapter{number}.txt").write_text("\n\n".join(paragraphs[number * 10 : (number + 1) * 10]))
    for seed in range(5):
        train, validation, _, _ = load_split(DataConfig(paths=[str(corpus)], seed=seed), load_text)
        held_files = {row["document"] for row in validation}
        assert validation and not held_files & {row["document"] for row in train}
        assert len(train) + len(validation) == 60 and len(held_files) < 6

    one_file = tmp_path / "book.txt"
    one_file.write_text("\n\n".join(paragraphs))
    train, validation, _, _ = load_split(DataConfig(paths=[str(one_file)], validation_split=0.1), load_text)
    first = paragraphs.index(validation[0]["text"])
    assert [row["text"] for row in validation] == paragraphs[first : first + len(paragraphs) // 10]
    assert [row["text"] for row in train] == paragraphs[:first] + paragraphs[first + len(validation) :]


def test_a_streamed_corpus_trains_the_packed_rows_of_the_in_memory_run_with_the_same_validation(tmp_path, tiny_model):
    """`data.streaming`: the text is read as training goes (datasets' IterableDataset, TRL packs it), never held in
    memory; it holds out the same rows and packs the training rows as the in-memory run does (which shuffles
    them), one pass after another, and says in one line that it needs trainer.max_steps."""
    from tests.conftest import run_capturing_trainer

    paragraphs = domain_paragraphs()[:60]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for number in range(4):
        (corpus / f"part{number}.md").write_text("\n\n".join(paragraphs[number * 15 : (number + 1) * 15]))
    sections = {"model": {"name": tiny_model}, "trainer": {"max_steps": 1, "max_length": 64}}
    runs, trainers = {}, {}
    for name, streaming in (("memory", False), ("stream", True)):
        data = {"paths": [str(corpus)], "streaming": streaming, "validation_split": 0.25}
        runs[name], trainers[name] = run_capturing_trainer(
            alignkit.pretrain, data=data, out=str(tmp_path / name), **sections
        )
    assert runs["stream"].metrics["validation"] == runs["memory"].metrics["validation"]
    assert runs["stream"].metrics["validation"].startswith("1 of 4 files held out whole: 15 of 60 rows")
    assert runs["stream"].metrics["eval_rows"] == runs["memory"].metrics["eval_rows"] == 15
    assert runs["stream"].metrics["train_rows"] == runs["memory"].metrics["train_rows"] == 45
    assert runs["stream"].metrics["eval_loss_start"] == pytest.approx(runs["memory"].metrics["eval_loss_start"])

    packed = [row["input_ids"] for row in trainers["memory"].train_dataset]
    streamed = [row["input_ids"] for row in itertools.islice(trainers["stream"].train_dataset, 2 * len(packed))]
    assert len(packed) > 2 and streamed == packed + packed

    result = run_cli("pretrain", "--data", str(corpus), "--model", tiny_model, "--out", str(tmp_path / "no-steps"),
                     "--set", "data.streaming=true")  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "data.streaming needs trainer.max_steps" in result.stderr and not (tmp_path / "no-steps").exists()


def test_a_streamed_corpus_skips_its_bad_rows_in_every_pass_as_if_they_were_not_there(
    tmp_path, tiny_model, alignkit_records
):
    """`data.skip_bad_rows` with `data.streaming` was refused: a stream is read pass after pass. The checks depend on
    the row alone, so each pass leaves out the same rows: counted per file as they pass the first time (one warning,
    the manifest's `skipped_rows`), the run holds out and trains, pass after pass, what a corpus without them does."""
    from tests.conftest import run_capturing_trainer

    paragraphs = domain_paragraphs()[:24]
    bad = [{"txt": "a misnamed column"}, {"text": ""}]
    dirty, clean = tmp_path / "dirty", tmp_path / "clean"
    for folder in (dirty, clean):
        folder.mkdir()
    for number in range(3):
        rows = [{"text": text} for text in paragraphs[number * 8 : (number + 1) * 8]]
        write_jsonl(clean / f"part{number}.jsonl", rows)
        write_jsonl(dirty / f"part{number}.jsonl", [*rows[:3], *bad, *rows[3:]] if number != 1 else rows)
    sections = {"model": {"name": tiny_model}, "trainer": {"max_steps": 1, "max_length": 64}}
    runs, trainers = {}, {}
    for name, folder in (("dirty", dirty), ("clean", clean)):
        data = {"paths": [str(folder)], "streaming": True, "validation_split": 0.34, "skip_bad_rows": name == "dirty"}
        runs[name], trainers[name] = run_capturing_trainer(
            alignkit.pretrain, data=data, out=str(tmp_path / "runs" / name), **sections
        )
    assert runs["dirty"].metrics["validation"] == runs["clean"].metrics["validation"]
    assert runs["dirty"].metrics["validation"].startswith("1 of 3 files held out whole: 8 of 24 rows")
    assert runs["dirty"].metrics["train_rows"] == runs["clean"].metrics["train_rows"] == 16
    assert runs["dirty"].metrics["eval_loss_start"] == pytest.approx(runs["clean"].metrics["eval_loss_start"])
    assert runs["dirty"].manifest["data"][str(dirty)]["skipped_rows"] == 4
    said = [r.getMessage() for r in alignkit_records.records if "fail the checks" in r.getMessage()]
    assert said == [f"{dirty}: skipped 4 of 28 rows that fail the checks (first: {dirty}/part0.jsonl:line 4: field "
                    "`text`: missing; found `txt`, did you mean `text`?)"]  # fmt: skip
    packed = {name: list(itertools.islice(trainer.train_dataset, 12)) for name, trainer in trainers.items()}
    assert [row["input_ids"] for row in packed["dirty"]] == [row["input_ids"] for row in packed["clean"]]


def test_a_resumed_streamed_run_trains_the_steps_the_uninterrupted_run_trains(tmp_path, tiny_model):
    """transformers resumes a stream by reading again, unused, the batches trained before the checkpoint, counted
    within one pass: past the end of the first pass it found none and stopped the run there. The resumed run's
    steps now see the rows (and losses) of the uninterrupted run's, across passes."""
    corpus = tmp_path / "notes.txt"
    corpus.write_text("\n\n".join(domain_paragraphs()[:3]))  # three packed rows of 512 tokens: a pass is 3 steps
    data = {"paths": [str(corpus)], "streaming": True, "validation_split": 0}
    trainer = {"max_length": 512, "per_device_train_batch_size": 1, "logging_steps": 1, "save_steps": 4}
    sections = {"data": data, "model": {"name": tiny_model}, "trainer": trainer | {"max_steps": 8}}
    straight = alignkit.pretrain(out=str(tmp_path / "straight"), **sections)
    with pytest.raises(KeyboardInterrupt), stopped_at_step(6):  # after the checkpoint of step 4
        alignkit.pretrain(out=str(tmp_path / "resumed"), **sections)
    resumed = alignkit.pretrain(out=str(tmp_path / "resumed"), resume=True, **sections)

    def losses(run: alignkit.runs.Run) -> dict[int, float]:
        lines = (run.path / "metrics.jsonl").read_text().splitlines()
        return {row["step"]: row["loss"] for row in map(json.loads, lines) if "loss" in row}

    assert resumed.metrics["global_step"] == straight.metrics["global_step"] == 8
    assert losses(resumed) == pytest.approx(losses(straight))
    assert resumed.metrics["train_tokens"] == straight.metrics["train_tokens"]
    # a stream's rows are counted, not hashed (that would read the corpus once more); none held out here
    assert resumed.manifest["rows"] == {
        "train": {"count": 3, "sha256": None},
        "validation": straight.manifest["rows"]["validation"],
    }


@contextlib.contextmanager
def stopped_at_step(step: int) -> Iterator[None]:
    """Training stops with a KeyboardInterrupt (Ctrl-C) once `step` steps are done."""
    from transformers import TrainerCallback

    from alignkit import training

    class Interrupt(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == step:
                raise KeyboardInterrupt

    original = training.train_and_save

    def interrupted(trainer: Any, *args: Any, **kwargs: Any) -> Any:
        trainer.add_callback(Interrupt())
        return original(trainer, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "train_and_save", interrupted)
        yield
