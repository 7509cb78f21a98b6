"""Continued pretraining as users bring their text: a folder of documents, JSONL with another column name; what it
trains (every token, each document on its own) and that it lowers the perplexity of held-out domain text."""

from __future__ import annotations

from alignkit.config import DataConfig
from alignkit.data import load_split, load_text
from tests.conftest import run_cli


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
