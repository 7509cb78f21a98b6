"""Every notebook runs top to bottom (nbclient, a real kernel) on the tiny model with 2 steps, against the session's
real Argilla; the last cell of each prints its figures as JSON, which is checked here. 01-05 share one work dir, in
order (each builds on the one before, as a reader would run them); 00 runs the whole loop on its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.argilla
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
IN_ORDER = ["01_sft", "02_collect_preferences", "03_reward_and_dpo", "04_rl", "05_evaluate", "00_full_loop"]


def execute(name: str) -> dict[str, Any]:
    """Run a notebook in a fresh kernel (cwd notebooks/, the environment of this process); its last cell's JSON."""
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    assert book.cells[1].source.startswith("# Parameters"), "the parameters cell comes right after the title"
    printed = [o["text"] for o in book.cells[-1].outputs if o.get("name") == "stdout"]
    return json.loads(printed[-1])


@pytest.fixture(scope="module")
def figures(tiny_model, argilla_server, tmp_path_factory) -> dict[str, dict[str, Any]]:
    work = tmp_path_factory.mktemp("notebooks")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ALIGNKIT_NB_MODEL", tiny_model)
        env.setenv("ALIGNKIT_NB_STEPS", "2")
        env.setenv("ALIGNKIT_NB_LIMIT", "6")
        env.setenv("ALIGNKIT_NB_MAX_NEW_TOKENS", "24")  # long enough for unequal lengths (no all-tie round)
        # The untrained model's answers are all degenerate, and `careful` ties two degenerate answers; `concise`
        # orders them by length, so the round always has pairs.
        env.setenv("ALIGNKIT_NB_RULE", "concise")
        env.setenv("ALIGNKIT_NB_WORK", str(work))
        env.setenv("ARGILLA_API_URL", argilla_server.url)
        env.setenv("ARGILLA_API_KEY", argilla_server.api_key)
        env.setenv("PYTHONWARNINGS", "ignore")
        env.setenv("MPLBACKEND", "Agg")
        figures = {name: execute(name) for name in IN_ORDER}
        figures["05_evaluate again"] = execute("05_evaluate")  # Run All a second time, over the first one's outputs
        return figures


def test_sft_notebook_trains_a_run(figures):
    sft = figures["01_sft"]
    assert sft["stage"] == "sft" and sft["metrics"]["global_step"] == 2 and "train_loss" in sft["metrics"]


def test_collection_notebook_turns_argilla_ratings_into_pairs(figures):
    summary = figures["02_collect_preferences"]["summary"]
    assert summary["records"] == 6 and summary["annotators"] == 2 and summary["pairs"] > 0
    assert Path(figures["02_collect_preferences"]["pairs_file"]).is_file()


def test_reward_and_dpo_notebook_trains_both(figures):
    result = figures["03_reward_and_dpo"]
    assert "pairwise_accuracy" in result["reward"] and result["dpo"]["global_step"] == 2 and result["scored_pairs"] > 0


def test_rl_notebook_continues_the_dpo_policy(figures):
    result = figures["04_rl"]
    assert result["lineage"] == ["sft", "dpo", "rl"] and isinstance(result["metrics"]["kl"], float)


def test_evaluate_notebook_compares_every_run_with_its_parent(figures):
    result = figures["05_evaluate"]
    assert set(result["comparisons"]) == {"sft vs base", "dpo vs sft", "rl vs dpo"}
    for comparison in result["comparisons"].values():
        for judged in (comparison["oracle"], comparison["reward_model"]):
            prompts = judged["wins"] + judged["ties"] + judged["losses"]
            assert prompts == 6 and judged["win_rate"] == pytest.approx((judged["wins"] + judged["ties"] / 2) / 6)
    assert {"sft", "dpo", "rl"} <= set(result["forgetting"])


def test_evaluate_notebook_run_again_replaces_its_evaluation_with_the_same_figures(figures):
    assert figures["05_evaluate again"] == figures["05_evaluate"]


def test_full_loop_notebook_reports_the_figures(figures):
    report = figures["00_full_loop"]
    # the headline figure is the oracle's count over every held-out prompt: 6 of the prompt file + 40 sft_eval rows
    judged = report["dpo_vs_sft"]
    assert judged["wins"] + judged["ties"] + judged["losses"] == 46
    assert report["win_rate_vs_sft"] == pytest.approx((judged["wins"] + judged["ties"] / 2) / 46)
    assert report["forgetting_ppl_ratio"] > 0
    assert set(report["runs"]) == {"sft", "reward", "dpo", "rl"}
