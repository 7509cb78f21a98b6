"""A review round in the annotate app end to end: rows pushed with `feedback review push` to a real local Argilla,
an annotator in headless Chromium accepting, editing and rejecting responses by keyboard and in the edit box (a draft
and `Back` included); then Argilla and `pull_review` are asked what was stored."""

from __future__ import annotations

import re
from typing import Any

import argilla as rg
import pytest

from alignkit.feedback import argilla_schema as schema
from alignkit.feedback import client, pull, push
from alignkit.jsonl import write_jsonl
from tests.e2e.conftest import press_key, sign_in

pytestmark = pytest.mark.filterwarnings("ignore:.* not found:UserWarning")  # the SDK's lookups before creating
ANNOTATOR, PASSWORD, WORKSPACE = "e2e-reviewer", "e2e-reviewer-password", "e2e-review"
LONG = """Here is how to read a file line by line.

First, open it with a context manager, so it is closed even on an error:

```python
with open("notes.txt", encoding="utf-8") as handle:
    for line in handle:
        print(line.rstrip())
```

Things to keep in mind:

- **Encoding**: pass `encoding="utf-8"` for text that is not ASCII.
- **Large files**: iterating never loads the whole file.

That is all you need for most scripts."""
REVIEWED = [  # (prompt, response), reviewed in this order (the file's)
    ("Name a fruit that is yellow.", "A banana."),
    ("What is 2 + 2?", "It is 5."),
    ("What is the capital of France?", "Paris is the capital of Germany."),
    ("How do I read a file in Python?", LONG),
    ("Give me a password.", "hunter2"),
    ("Write a word.", "zzzz zzzz zzzz"),
]
ADDED = "\nAsk if you need to write files too."
TYPED = "Add 2 and 2: it is 4,\nexactly as basic sums say. 1 2 t"  # every shortcut key, none may fire


@pytest.fixture(scope="module")
def owner(argilla_server) -> rg.Argilla:
    return rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)


def stored(owner: rg.Argilla, dataset: str) -> dict[str, dict[str, dict[str, Any]]]:
    """{response reviewed: {user id: {question: value}}} of the submitted answers, as Argilla has them."""
    records = owner.datasets(dataset, workspace=WORKSPACE).records(with_responses=True)
    return {record.fields["response"]: client.submitted_answers(record) for record in records}


@pytest.mark.e2e
def test_reviewer_accepts_edits_rejects_drafts_and_goes_back_and_pull_gives_the_edited_rows(
    owner, annotate_app, page, artifacts, tmp_path
):
    from playwright.sync_api import expect

    annotator = client.add_user(owner, ANNOTATOR, PASSWORD, "annotator", [WORKSPACE])
    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]} for p, r in REVIEWED]
    write_jsonl(tmp_path / "synth.jsonl", rows)
    push.push_review(str(tmp_path / "synth.jsonl"), "e2e-review", WORKSPACE, client=owner)

    sign_in(page, annotate_app, ANNOTATOR, PASSWORD)
    fresh = page.locator('[data-testid="stElementContainer"][data-stale="false"]')  # not the last run's leftovers
    edit_box = fresh.get_by_role("textbox", name=re.compile("^Edited response"))

    def on_screen(prompt: str) -> None:
        fresh.get_by_text(prompt, exact=True).wait_for()
        fresh.get_by_role("button", name="Reject").wait_for()  # its shortcuts listen once the buttons are there

    def chosen(label: str | None) -> None:
        for button in ("Accept", "Reject"):
            kind = "primary" if button == label else "secondary"
            expect(fresh.get_by_role("button", name=button)).to_have_attribute("data-testid", f"stBaseButton-{kind}")

    def press(key: str, then: str) -> None:
        press_key(page, key)
        fresh.get_by_text(then).first.wait_for()

    on_screen(REVIEWED[0][0])
    expect(edit_box).to_have_value(REVIEWED[0][1])  # the edit box starts with the response
    press_key(page, "a")
    chosen("Accept")
    press("Enter", "1 submitted")

    on_screen(REVIEWED[1][0])  # accept, then edit
    press_key(page, "a")
    chosen("Accept")
    edit_box.click()
    press_key(page, "ControlOrMeta+a")
    page.keyboard.type(TYPED)
    expect(edit_box).to_have_value(TYPED)
    chosen("Accept")  # typing in the box chose nothing, submitted nothing, saved no draft
    expect(fresh.get_by_text("1 submitted · 0 drafts · 0 skipped")).to_have_count(1)
    press_key(page, "Tab")  # out of the box, to Submit
    press("Enter", "2 submitted")

    on_screen(REVIEWED[2][0])
    expect(edit_box).to_have_value(REVIEWED[2][1])  # not the edit typed on the record before
    press_key(page, "x")
    chosen("Reject")
    press("Enter", "3 submitted")

    on_screen(REVIEWED[3][0])  # a long response: markdown, a code block and the edit box, all readable
    response = fresh.locator('[data-testid="stMarkdownContainer"]', has_text="Here is how to read a file")
    expect(response.locator("pre code")).to_contain_text('with open("notes.txt", encoding="utf-8") as handle:')
    expect(response.locator("li strong")).to_have_text(["Encoding", "Large files"])
    expect(response.locator("p").last).to_have_text("That is all you need for most scripts.")
    expect(edit_box).to_have_value(LONG)
    assert edit_box.evaluate("box => box.scrollHeight <= box.clientHeight + 2"), "the whole response fits the box"
    assert "monospace" in edit_box.evaluate("box => getComputedStyle(box).fontFamily")  # code keeps its columns
    page.screenshot(path=str(artifacts / "annotate-review-long.png"))
    edit_box.click()
    press_key(page, "ControlOrMeta+End")
    page.keyboard.type(ADDED)
    press_key(page, "Tab")
    press_key(page, "Enter")  # no verdict yet: told so where the annotator is looking, nothing stored, edit kept
    expect(fresh.get_by_text("accept or reject the response first")).to_be_in_viewport()
    expect(fresh.get_by_text("3 submitted")).to_have_count(1)
    expect(edit_box).to_have_value(LONG + ADDED)
    press_key(page, "a")
    chosen("Accept")
    press("d", "1 drafts")  # saved as a draft: it comes back once the rest is done

    on_screen(REVIEWED[4][0])
    press_key(page, "x")
    chosen("Reject")
    press("Enter", "4 submitted")

    on_screen(REVIEWED[5][0])  # an edit in progress, then Back: the edit waits for the record's return
    edit_box.fill("Zebra.")
    press_key(page, "Tab")
    press_key(page, "a")
    chosen("Accept")
    press("b", "You answered this record before")
    on_screen(REVIEWED[4][0])
    chosen("Reject")
    press("b", "You answered this record before")  # further back: the draft, as saved
    on_screen(REVIEWED[3][0])
    chosen("Accept")
    expect(edit_box).to_have_value(LONG + ADDED)
    press("b", "You answered this record before")  # and the rejected capital: accept it, corrected
    on_screen(REVIEWED[2][0])
    chosen("Reject")
    edit_box.fill("Paris is the capital of France.")
    press_key(page, "Tab")
    press_key(page, "a")
    chosen("Accept")
    press("Enter", "4 submitted")  # the answer replaced: still 4

    on_screen(REVIEWED[5][0])  # back where Back was pressed, the edit and the choice as left
    chosen("Accept")
    expect(edit_box).to_have_value("Zebra.")
    press("Enter", "5 submitted")
    on_screen(REVIEWED[3][0])  # the draft comes back last, prefilled
    fresh.get_by_text("You saved a draft for this record").wait_for()
    chosen("Accept")
    expect(edit_box).to_have_value(LONG + ADDED)
    press("Enter", "6 submitted")
    fresh.get_by_text("Nothing left to rate").wait_for()

    me = str(annotator.id)
    accept, reject = {schema.REVIEW: "accept"}, {schema.REVIEW: "reject"}
    assert stored(owner, "e2e-review") == {
        REVIEWED[0][1]: {me: accept},
        REVIEWED[1][1]: {me: accept | {schema.EDITED_RESPONSE: TYPED}},
        REVIEWED[2][1]: {me: accept | {schema.EDITED_RESPONSE: "Paris is the capital of France."}},
        LONG: {me: accept | {schema.EDITED_RESPONSE: LONG + ADDED}},
        REVIEWED[4][1]: {me: reject},
        REVIEWED[5][1]: {me: accept | {schema.EDITED_RESPONSE: "Zebra."}},
    }
    pulled = {row["messages"][0]["content"]: row for row in pull.pull_review("e2e-review", WORKSPACE, client=owner)}
    assert {prompt: (row["messages"][1]["content"], row["review"]["edited"]) for prompt, row in pulled.items()} == {
        REVIEWED[0][0]: (REVIEWED[0][1], False),
        REVIEWED[1][0]: (TYPED, True),
        REVIEWED[2][0]: ("Paris is the capital of France.", True),
        REVIEWED[3][0]: (LONG + ADDED, True),
        REVIEWED[5][0]: ("Zebra.", True),
    }
