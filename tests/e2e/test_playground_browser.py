"""The playground end to end: real runs (tiny SFT, DPO on its adapter), the app started by `alignkit.serve`, a real
local Argilla, headless Chromium. An admin signs in, picks the two runs, sends a prompt, sees both answers stream,
clicks "Left is better"; then the Argilla SDK is asked what was stored.

`ALIGNKIT_SCREENSHOT_RUNS=<runs dir>` (with `ALIGNKIT_SCREENSHOT_MODEL`, default `embedded`) runs the same test on
real runs of a real model (their `sft` and `dpo` runs) and writes docs/images/playground.png for the README.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import argilla as rg
import pytest

from alignkit import playground, serve
from alignkit.feedback import argilla_schema as schema
from alignkit.feedback import client
from tests.conftest import train_sft_and_dpo

pytestmark = pytest.mark.filterwarnings("ignore:.* not found:UserWarning")
ADMIN, PASSWORD, WORKSPACE = "pg-admin", "pg-admin-password", "e2e-playground"
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "playground.png"
PROMPT = "How do I keep a compost pile healthy?"


@pytest.fixture(scope="module")
def runs_dir(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(runs dir with `sft` and `dpo` runs, their base model)."""
    if os.environ.get("ALIGNKIT_SCREENSHOT_RUNS"):
        return Path(os.environ["ALIGNKIT_SCREENSHOT_RUNS"]), os.environ.get("ALIGNKIT_SCREENSHOT_MODEL", "embedded")
    return train_sft_and_dpo(tmp_path_factory.mktemp("playground-e2e"), tiny_model, sft_steps=2), tiny_model


@pytest.fixture(scope="module")
def playground_app(runs_dir, argilla_server, tmp_path_factory: pytest.TempPathFactory):
    runs, base = runs_dir
    env = {"ARGILLA_API_URL": argilla_server.url, "ALIGNKIT_RUNS_DIR": str(runs), "ALIGNKIT_BASE_MODEL": base}
    with serve.start_app("playground", env=env, log_dir=tmp_path_factory.mktemp("playground-logs")) as app:
        yield app.url


@pytest.mark.e2e
def test_pick_two_runs_chat_and_left_is_better_lands_in_argilla(
    playground_app, runs_dir, argilla_server, page, artifacts
):
    from playwright.sync_api import expect

    owner = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    admin = client.add_user(owner, ADMIN, PASSWORD, "admin", [WORKSPACE])
    runs, _ = runs_dir
    page.set_default_timeout(600_000 if os.environ.get("ALIGNKIT_SCREENSHOT_RUNS") else 300_000)  # loads two models
    page.goto(playground_app)

    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_label("Username").fill(ADMIN)
    sidebar.get_by_label("Password", exact=True).fill(PASSWORD)
    sidebar.get_by_role("button", name="Sign in").click()
    sidebar.get_by_text(f"Signed in as {ADMIN}").wait_for()
    workspace = sidebar.get_by_label("Workspace")
    workspace.fill(WORKSPACE)
    workspace.press("Enter")
    tokens = sidebar.get_by_label("Max new tokens")
    tokens.fill("48")
    tokens.press("Enter")

    pick_only(page, ("sft · sft", "dpo · dpo"))

    chat = page.get_by_test_id("stChatInputTextArea")
    chat.fill(PROMPT)
    chat.press("Enter")
    answers = page.get_by_test_id("stChatMessage").filter(has=page.get_by_test_id("stChatMessageAvatarAssistant"))
    left_is_better = page.get_by_role("button", name="Left is better")
    left_is_better.wait_for()  # shown once both columns have answered
    expect(answers).to_have_count(2)
    left_text, right_text = (answers.nth(i).get_by_test_id("stChatMessageContent").inner_text() for i in range(2))
    assert left_text and right_text
    page.screenshot(path=str(artifacts / "playground.png"))
    if os.environ.get("ALIGNKIT_SCREENSHOT_RUNS"):
        page.screenshot(path=str(DOCS_IMAGE))

    left_is_better.click()
    page.get_by_text("Feedback stored in Argilla").wait_for()

    dataset = owner.datasets(playground.PREFERENCE_DATASET, workspace=WORKSPACE)
    records = list(dataset.records(with_responses=True))
    assert len(records) == 1
    record = records[0]
    (response,) = list(record.responses)
    assert str(response.user_id) == str(admin.id) and str(response.status).endswith("submitted")
    chosen_field = schema.candidate_field(int(response.value) - 1)
    order = [int(i) for i in record.metadata["order"].split(",")]
    sources = json.loads(record.metadata["source"])
    assert sources[order[int(response.value) - 1]]["run"] == str((runs / "sft").resolve())  # the left column won
    assert letters(record.fields[chosen_field]) == letters(left_text)  # the text shown on the left (as rendered)
    assert record.fields["prompt"] == PROMPT and record.metadata["round"] == "playground"


@pytest.fixture(scope="module")
def verbose_model(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny base, made never to end a reply before max new tokens (its end token suppressed)."""
    path = Path(shutil.copytree(tiny_model, tmp_path_factory.mktemp("verbose") / "verbose-base"))
    generation = json.loads((path / "generation_config.json").read_text())
    generation["suppress_tokens"] = [generation["eos_token_id"]]
    (path / "generation_config.json").write_text(json.dumps(generation))
    return path


@pytest.mark.e2e
def test_each_turn_starts_at_the_same_height_in_every_column(playground_app, verbose_model, page, artifacts):
    """A base that writes up to max new tokens beside the SFT run, whose reply ends far sooner: the second turn's
    replies still start side by side, so turn N of each model is compared without scrolling each column apart."""
    from playwright.sync_api import expect

    page.set_default_timeout(300_000)
    page.goto(playground_app)
    sidebar = page.get_by_test_id("stSidebar")
    picker = page.get_by_test_id("stMultiSelect")
    remove = picker.get_by_role("button", name="Remove")
    expect(remove).to_have_count(2)  # the default picks: the base and the newest run
    base_field = sidebar.get_by_label("Base model")
    base_field.fill(str(verbose_model))
    base_field.press("Enter")
    page.get_by_text("Base model changed from").wait_for()  # the picked base follows the field
    tokens = sidebar.get_by_label("Max new tokens")
    tokens.fill("480")
    tokens.press("Enter")
    expect(tokens).to_have_value("480")
    pick_only(page, ("base · verbose-base", "sft · sft"))
    chat = page.get_by_test_id("stChatInputTextArea")
    answers = page.get_by_test_id("stChatMessage").filter(has=page.get_by_test_id("stChatMessageAvatarAssistant"))
    for turn, prompt in enumerate(("What is 2 plus 2?", "And 3 plus 3?"), start=1):
        chat.fill(prompt)
        chat.press("Enter")
        expect(answers).to_have_count(2 * turn, timeout=300_000)  # the second column is answering
        expect(page.get_by_role("button", name="Stop")).to_have_count(0, timeout=300_000)  # and has answered
    # measured once the rerun after the reply has drawn the page: the second turn's note under its row comes last,
    # and no element of the run before it is left (a half-drawn page once measured the columns 18 px apart)
    expect(page.get_by_text("These replies follow different conversations")).to_have_count(1)
    expect(page.locator('[data-testid="stElementContainer"][data-stale="true"]')).to_have_count(0)
    page.screenshot(path=str(artifacts / "playground-turns.png"), full_page=True)
    # one snapshot of every reply's place on the page (not in the window: the page may scroll between two reads)
    boxes = answers.evaluate_all(
        "els => els.map(e => { const r = e.getBoundingClientRect();"
        " return {x: r.x, y: r.y + window.scrollY, height: r.height}; })"
    )
    assert len(boxes) == 4
    columns: dict[int, list[dict[str, float]]] = {}
    for box in boxes:  # each model's replies, top to bottom, whatever the page's DOM order
        columns.setdefault(round(box["x"]), []).append(box)
    base, sft = (sorted(column, key=lambda b: b["y"]) for _, column in sorted(columns.items()))
    assert base[0]["height"] > sft[0]["height"] + 200  # the first replies differ a lot in length
    assert abs(base[1]["y"] - sft[1]["y"]) < 2  # yet the second turn starts at the same height
    # the first turn can be compared; the second's replies follow different first replies: no pair (said above)
    expect(page.get_by_role("button", name="Left is better")).to_have_count(1)


def pick_only(page: Any, labels: tuple[str, ...]) -> None:
    """Drop every model picked in the playground's multiselect, then pick `labels` in that order."""
    from playwright.sync_api import expect

    picker = page.get_by_test_id("stMultiSelect")
    remove = picker.get_by_role("button", name="Remove")
    while remove.count():
        left = remove.count() - 1
        remove.first.click()
        expect(remove).to_have_count(left)
    for count, label in enumerate(labels, start=1):
        pick(page, picker, label)
        expect(remove).to_have_count(count)


def pick(page: Any, picker: Any, label: str, attempts: int = 5) -> None:
    """Choose an option of a Streamlit multiselect (its list can close again while the page is still rerunning)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(attempts):
        picker.get_by_role("combobox").click()
        try:
            page.get_by_role("option", name=label).click(timeout=10_000)
            page.keyboard.press("Escape")  # an open list hides the rest of the page from the accessibility tree
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    raise AssertionError(f"option {label!r} never appeared")


def letters(text: str) -> str:
    """Letters and digits only: markdown rendering drops or changes punctuation of the random tiny model's text."""
    return "".join(c for c in text if c.isalnum())
