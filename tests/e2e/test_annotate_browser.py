"""The annotate app end to end: real local Argilla, the app started by `alignkit.serve`, headless Chromium, keyboard
only; then Argilla itself is asked what was stored. Also the queue rules against the real server (no browser)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import argilla as rg
import pytest

from alignkit.errors import AlignkitError
from alignkit.feedback import annotation, client, ordering, push
from alignkit.feedback import argilla_schema as schema
from alignkit.jsonl import write_jsonl
from tests.e2e.conftest import press_key, sign_in

pytestmark = pytest.mark.filterwarnings("ignore:.* not found:UserWarning")  # the SDK's lookups before creating
ANNOTATOR, PASSWORD = "e2e-rater", "e2e-rater-password"
CANDIDATES = [  # four prompts whose candidate pairs differ by different amounts: four distinct priorities
    ("Water it daily.", "Add browns, greens, air and water; turn it weekly."),
    ("Turn the pile every week.", "Turn the pile every week and keep it moist."),
    ("Use kitchen scraps and dry leaves.", "Use kitchen scraps, dry leaves and a little soil."),
    ("Keep it moist like a sponge.", "Keep it moist like a wrung-out sponge."),
]


def prompt(i: int) -> str:
    return f"How do I compost, case {i}?"


def candidates_file(path: Path) -> Path:
    rows = [
        {"prompt": prompt(i), "candidates": [{"text": a, "run": "runs/sft-e2e"}, {"text": b, "run": "runs/sft-e2e"}]}
        for i, (a, b) in enumerate(CANDIDATES)
    ]
    write_jsonl(path, rows)
    return path


def by_priority() -> list[str]:
    """The prompts in the order annotators must see them (ordering.priority, highest first)."""
    priorities = [ordering.diversity(pair) for pair in CANDIDATES]
    assert len(set(priorities)) == len(CANDIDATES), "the test needs distinct priorities"
    return [prompt(i) for i in sorted(range(len(CANDIDATES)), key=lambda i: -priorities[i])]


@pytest.fixture(scope="module")
def owner(argilla_server) -> rg.Argilla:
    return rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)


def stored_answers(owner: rg.Argilla, dataset_name: str, workspace: str) -> dict[str, dict[str, Any]]:
    """{prompt: {"status": record status, "responses": [(user_id, status, {question: value})]}} as Argilla has it."""
    dataset = owner.datasets(dataset_name, workspace=workspace)
    stored = {}
    for record in dataset.records(with_responses=True):
        by_user: dict[tuple[str, str], dict[str, Any]] = {}
        for response in record.responses:
            status = getattr(response.status, "value", response.status)
            by_user.setdefault((str(response.user_id), status), {})[response.question_name] = response.value
        stored[record.fields["prompt"]] = {
            "status": getattr(record.status, "value", record.status),
            "responses": [(user, status, values) for (user, status), values in by_user.items()],
        }
    return stored


@pytest.mark.e2e
def test_annotator_rates_three_records_by_keyboard_and_argilla_stores_exactly_those(
    owner, annotate_app, page, artifacts, tmp_path
):
    from playwright.sync_api import expect

    annotator = client.add_user(owner, ANNOTATOR, PASSWORD, "annotator", ["e2e"])
    push.push(str(candidates_file(tmp_path / "candidates.jsonl")), "e2e-round", "e2e", min_submitted=1, client=owner)
    order = by_priority()

    sign_in(page, annotate_app, ANNOTATOR, PASSWORD)

    fresh = page.locator('[data-testid="stElementContainer"][data-stale="false"]')  # not the last record's buttons

    def choose(key: str, label: str) -> None:
        button = fresh.get_by_role("button", name=label)
        button.wait_for()  # its shortcut listens once it is on the page
        press_key(page, key)
        expect(button).to_have_attribute("data-testid", "stBaseButton-primary")

    def submitted(count: int, next_prompt: str) -> None:
        press_key(page, "Enter")
        page.get_by_text(f"{count} submitted").wait_for()
        page.get_by_text(next_prompt, exact=True).wait_for()

    page.get_by_text(order[0], exact=True).wait_for()  # highest priority first
    choose("1", "Response 1 is better")
    submitted(1, order[1])

    choose("2", "Response 2 is better")
    choose("Shift+2", "2 · clearly")
    submitted(2, order[2])

    choose("t", "Tie")
    page.get_by_label("Why? (optional)").focus()
    page.keyboard.type("1 2 s t: both fine")  # shortcuts must not fire while typing
    press_key(page, "Tab")  # out of the text field (to the first choice): Enter is Submit again
    submitted(3, order[3])
    page.screenshot(path=str(artifacts / "annotate.png"))

    stored = stored_answers(owner, "e2e-round", "e2e")
    me = str(annotator.id)
    assert stored[order[0]]["responses"] == [(me, "submitted", {schema.PREFERENCE: "1"})]
    assert stored[order[1]]["responses"] == [(me, "submitted", {schema.PREFERENCE: "2", schema.STRENGTH: 2})]
    assert stored[order[2]]["responses"] == [
        (me, "submitted", {schema.PREFERENCE: "tie", schema.RATIONALE: "1 2 s t: both fine"})
    ]
    assert stored[order[3]]["responses"] == []
    assert [stored[p]["status"] for p in order] == ["completed", "completed", "completed", "pending"]


@pytest.mark.e2e
def test_annotator_goes_back_to_change_a_rating_and_a_skip_and_argilla_keeps_only_the_new_answers(
    owner, annotate_app, page, tmp_path
):
    """`B` brings back the record answered last, with that answer selected; answering it again replaces the answer
    in Argilla (a skip becomes a rating), and `B` again goes further back."""
    from playwright.sync_api import expect

    annotator = client.add_user(owner, "e2e-changer", PASSWORD, "annotator", ["e2e-back"])
    push.push(str(candidates_file(tmp_path / "candidates.jsonl")), "e2e-back", "e2e-back", client=owner)
    order = by_priority()
    sign_in(page, annotate_app, "e2e-changer", PASSWORD)
    fresh = page.locator('[data-testid="stElementContainer"][data-stale="false"]')  # not the last run's leftovers

    def on_screen(prompt_text: str) -> None:
        fresh.get_by_text(prompt_text, exact=True).wait_for()
        fresh.get_by_role("button", name="Tie").wait_for()  # its shortcuts listen once the buttons are there

    def press(key: str, then: str) -> None:
        press_key(page, key)
        fresh.get_by_text(then).first.wait_for()

    def chosen(button: str) -> None:
        expect(fresh.get_by_role("button", name=button)).to_have_attribute("data-testid", "stBaseButton-primary")

    on_screen(order[0])
    press_key(page, "1")
    chosen("Response 1 is better")
    press("Enter", "1 submitted")
    on_screen(order[1])
    press("s", "1 skipped")
    on_screen(order[2])

    press("b", "You answered this record before")
    on_screen(order[1])
    press_key(page, "2")
    chosen("Response 2 is better")
    press("Enter", "2 submitted")
    on_screen(order[2])
    expect(fresh.get_by_text("0 skipped")).to_have_count(1)

    press("b", "You answered this record before")
    on_screen(order[1])
    press("b", "You answered this record before")
    on_screen(order[0])
    chosen("Response 1 is better")  # the answer given, selected
    press_key(page, "t")
    chosen("Tie")
    press_key(page, "Enter")
    on_screen(order[2])

    stored = stored_answers(owner, "e2e-back", "e2e-back")
    me = str(annotator.id)
    assert stored[order[0]]["responses"] == [(me, "submitted", {schema.PREFERENCE: "tie"})]
    assert stored[order[1]]["responses"] == [(me, "submitted", {schema.PREFERENCE: "2"})]
    assert stored[order[2]]["responses"] == stored[order[3]]["responses"] == []


@pytest.mark.e2e
def test_after_picking_a_dataset_the_keyboard_rates_at_once(owner, annotate_app, page, tmp_path):
    """Choosing a dataset in the sidebar leaves the keys to the rating: `1` chooses on the new dataset's record instead
    of being typed into the dataset list."""
    from playwright.sync_api import expect

    client.add_user(owner, "e2e-switcher", PASSWORD, "annotator", ["e2e-switch"])
    candidates = str(candidates_file(tmp_path / "candidates.jsonl"))
    push.push(candidates, "e2e-switch-a", "e2e-switch", client=owner)
    rows = [json.loads(line) for line in Path(candidates).read_text().splitlines()]
    for row in rows:
        row["prompt"] = "Second round: " + row["prompt"]
    write_jsonl(tmp_path / "second.jsonl", rows)
    push.push(str(tmp_path / "second.jsonl"), "e2e-switch-b", "e2e-switch", client=owner)
    sign_in(page, annotate_app, "e2e-switcher", PASSWORD)
    fresh = page.locator('[data-testid="stElementContainer"][data-stale="false"]')
    fresh.get_by_text(by_priority()[0], exact=True).wait_for()

    page.get_by_label("Dataset").click()
    page.get_by_role("option", name="e2e-switch-b").click()
    fresh.get_by_text("Second round: " + by_priority()[0], exact=True).wait_for()
    fresh.get_by_role("button", name="Tie").wait_for()
    press_key(page, "1")
    expect(fresh.get_by_role("button", name="Response 1 is better")).to_have_attribute(
        "data-testid", "stBaseButton-primary"
    )
    press_key(page, "Enter")
    fresh.get_by_text("1 submitted").wait_for()
    stored = stored_answers(owner, "e2e-switch-b", "e2e-switch")
    assert [s["responses"][0][2] for s in stored.values() if s["responses"]] == [{schema.PREFERENCE: "1"}]


@pytest.mark.e2e
def test_a_reload_keeps_the_annotator_signed_in_until_they_log_out(owner, annotate_app, page, tmp_path):
    """Reloading the page (or opening the app in another tab) goes on rating under the same account; after `Log out`
    a reload asks for the password again, and the old sign-in cookie opens nothing."""
    client.add_user(owner, "e2e-reloader", PASSWORD, "annotator", ["e2e-reload"])
    push.push(str(candidates_file(tmp_path / "candidates.jsonl")), "e2e-reload", "e2e-reload", client=owner)
    sign_in(page, annotate_app, "e2e-reloader", PASSWORD)
    page.get_by_text("Signed in as e2e-reloader").wait_for()
    page.wait_for_function("document.cookie.includes('alignkit-annotate=')")  # set as the page's last element
    cookie = next(c for c in page.context.cookies() if c["name"] == "alignkit-annotate")

    page.reload()
    page.get_by_text("Signed in as e2e-reloader").wait_for()
    page.get_by_text(by_priority()[0], exact=True).wait_for()
    other_tab = page.context.new_page()
    other_tab.goto(annotate_app)
    other_tab.get_by_text("Signed in as e2e-reloader").wait_for()

    page.get_by_role("button", name="Log out").click()
    page.get_by_label("Username").wait_for()
    assert page.get_by_text("Your sign-in ended").count() == 0  # logged out, not restarted
    page.wait_for_function("!document.cookie.includes('alignkit-annotate=')")
    page.reload()
    page.get_by_label("Username").wait_for()
    assert not [c for c in page.context.cookies() if c["name"] == "alignkit-annotate"]
    page.context.add_cookies([cookie])  # the token of the session logged out: it opens nothing
    page.reload()
    page.get_by_label("Username").wait_for()
    assert page.get_by_text("Your sign-in ended").count() == 0
    other_tab.reload()
    other_tab.get_by_label("Username").wait_for()
    assert other_tab.get_by_text("Your sign-in ended").count() == 0


RANKED = [  # (prompt, four candidates); keys pressed best first; the ranks Argilla must hold, in shown order
    ("Rank these greetings, case A.", ["Hi.", "Hello there.", "Hey!", "Good day to you."], "3 1 T 2 4", [1, 2, 1, 3]),
    ("Rank these greetings, case B.", ["Yo.", "Hello.", "Greetings.", "Hi!"], "4 2 1 Backspace 3 1", [4, 2, 3, 1]),
]  # fmt: skip
SHOWN = {"Rank these greetings, case A.": "3 = 1 > 2 > 4", "Rank these greetings, case B.": "4 > 2 > 3 > 1"}


@pytest.mark.e2e
def test_annotator_ranks_four_candidates_by_keyboard_with_a_tie_and_an_undo(
    owner, annotate_app, page, artifacts, tmp_path
):
    """Keyboard only: number keys place the responses best first, T ties with the previous, Backspace undoes, Enter
    submits; Argilla stores the ranks (ties shared). Seconds per judgement are written to test-artifacts, never
    asserted."""
    from playwright.sync_api import expect

    annotator = client.add_user(owner, "e2e-ranker", PASSWORD, "annotator", ["e2e-rank"])
    rows = [{"prompt": text, "candidates": [{"text": c} for c in candidates]} for text, candidates, _, _ in RANKED]
    write_jsonl(tmp_path / "ranked.jsonl", rows)
    push.push(str(tmp_path / "ranked.jsonl"), "e2e-ranking", "e2e-rank", min_submitted=1, client=owner)

    sign_in(page, annotate_app, "e2e-ranker", PASSWORD)
    seconds, prompt_text = [], None
    for done in range(1, len(RANKED) + 1):
        if prompt_text:  # during a rerun Streamlit still shows the last record: wait until it is replaced
            expect(page.get_by_text(prompt_text, exact=True)).to_have_count(0)
        line = page.locator("p", has_text="Ranking:")
        expect(line).to_have_text("Ranking: nothing placed yet")
        shown = page.get_by_text("Rank these greetings, case", exact=False)
        prompt_text = next(text for text, *_ in RANKED if text == shown.inner_text().strip())
        _, _, keys, ranks = next(r for r in RANKED if r[0] == prompt_text)
        started = time.monotonic()
        page.get_by_role("button", name="Response 4 next").wait_for()  # shortcuts listen once the buttons are there
        for key in keys.split():
            placed = line.inner_text()
            press_key(page, key)
            expect(line).not_to_have_text(placed)  # each key changed it
        expect(line).to_have_text(f"Ranking: {SHOWN[prompt_text]}")  # what the annotator sees before submitting
        press_key(page, "Enter")
        page.get_by_text(f"{done} submitted").wait_for()
        seconds.append(time.monotonic() - started)
    page.screenshot(path=str(artifacts / "annotate-ranking.png"))
    (artifacts / "annotate-ranking.json").write_text(json.dumps({"seconds_per_judgement": seconds}) + "\n")

    # the SDK's `response.value` lists a ranking's candidates without ranks; the raw answers keep ties
    records = owner.datasets("e2e-ranking", workspace="e2e-rank").records(with_responses=True)
    stored = {record.fields["prompt"]: client.submitted_answers(record) for record in records}
    for text, _, _, ranks in RANKED:
        expected = [{"value": schema.candidate_field(i), "rank": rank} for i, rank in enumerate(ranks)]
        assert list(stored[text]) == [str(annotator.id)]
        given = stored[text][str(annotator.id)][schema.RANKING]
        assert sorted(given, key=lambda item: item["value"]) == expected


PARAGRAPH = "A compost pile needs browns, greens, air and water, in about equal parts by volume. " * 6
CODE = "```python\n" + "".join(f"def turn_{i}(pile):\n    return pile.turn(times={i})\n" for i in range(12)) + "```"
LABEL_FITS = "b => [b, ...b.querySelectorAll('*')].every(e => e.scrollWidth <= e.clientWidth)"  # none cut with …
LONG_RESPONSES = (  # each several screens tall at 1280x900
    "\n\n".join([PARAGRAPH, CODE, PARAGRAPH, "- browns\n- greens\n- water", PARAGRAPH, PARAGRAPH]),
    "\n\n".join([PARAGRAPH, PARAGRAPH, CODE, PARAGRAPH, "| part | share |\n|---|---|\n| browns | 1/2 |", PARAGRAPH]),
)


@pytest.mark.e2e
def test_on_a_long_record_the_choices_and_submit_stay_in_the_window_wherever_it_is_scrolled(
    owner, annotate_app, page, artifacts, tmp_path
):
    """Responses several screens tall: the choices and the Submit row are inside the window at the top of the record,
    half way down and at its end, in a 1280x900 window and in an 800x700 one (half a laptop screen), and no
    button label there is cut short. The keys answer it as before."""
    from playwright.sync_api import expect

    annotator = client.add_user(owner, "e2e-long-reader", PASSWORD, "annotator", ["e2e-long"])
    rows = [{"prompt": f"Explain composting in depth, case {i}.", "candidates": [{"text": t} for t in LONG_RESPONSES]}
            for i in range(2)]  # fmt: skip
    write_jsonl(tmp_path / "long.jsonl", rows)
    push.push(str(tmp_path / "long.jsonl"), "e2e-long", "e2e-long", client=owner)
    sign_in(page, annotate_app, "e2e-long-reader", PASSWORD)
    fresh = page.locator('[data-testid="stElementContainer"][data-stale="false"]')
    fresh.get_by_text("Explain composting in depth", exact=False).first.wait_for()
    main = page.get_by_test_id("stMain")
    controls = [fresh.get_by_role("button", name=name) for name in ("Response 1 is better", "Tie", "Submit", "Back")]
    fresh.get_by_text("Keys:", exact=False).wait_for()  # the record is drawn down to its last line

    for width, height in ((1280, 900), (800, 700)):
        page.set_viewport_size({"width": width, "height": height})
        scroll_height = main.evaluate("main => main.scrollHeight")
        assert scroll_height > 2 * height, "the record must be taller than the window for this test"
        for top in (0, scroll_height // 2, scroll_height):
            main.evaluate("(main, top) => main.scrollTo(0, top)", top)
            for button in controls:
                expect(button).to_be_in_viewport(ratio=1)  # wholly inside the window
                assert button.evaluate(LABEL_FITS), f"label cut at {width}px"
        page.screenshot(path=str(artifacts / f"annotate-long-{width}.png"))

    press_key(page, "2")
    expect(fresh.get_by_role("button", name="Response 2 is better")).to_have_attribute(
        "data-testid", "stBaseButton-primary"
    )
    press_key(page, "Enter")
    fresh.get_by_text("1 submitted").wait_for()
    stored = stored_answers(owner, "e2e-long", "e2e-long")
    assert [s["responses"] for s in stored.values() if s["responses"]] == [
        [(str(annotator.id), "submitted", {schema.PREFERENCE: "2"})]
    ]


ARABIC_PROMPT = "ما هو التسميد؟ اشرح باختصار."  # "What is composting? Explain briefly."
HEBREW_ANSWER = "קומפוסט הוא דשן טבעי."  # "Compost is a natural fertiliser."
# The x of a paragraph's first and last character as drawn (a Range around each).
CHAR_X = """p => { const text = p.firstChild, at = i => { const r = document.createRange(); r.setStart(text, i);
  r.setEnd(text, i + 1); return r.getBoundingClientRect().x; }; return [at(0), at(text.length - 1)]; }"""


@pytest.mark.e2e
def test_right_to_left_text_reads_from_the_right_with_its_full_stop_at_the_end(owner, annotate_app, page, tmp_path):
    """An Arabic prompt and a Hebrew response are laid out right to left: the first letter at the right, the final
    full stop at the left end of the sentence (not after it on the right, as a left-to-right paragraph puts it);
    English beside them stays left to right."""
    client.add_user(owner, "e2e-rtl-reader", PASSWORD, "annotator", ["e2e-rtl"])
    candidates = [{"text": HEBREW_ANSWER}, {"text": "Compost is a natural fertiliser."}]
    write_jsonl(tmp_path / "rtl.jsonl", [{"prompt": ARABIC_PROMPT, "candidates": candidates}])
    push.push(str(tmp_path / "rtl.jsonl"), "e2e-rtl", "e2e-rtl", client=owner)
    sign_in(page, annotate_app, "e2e-rtl-reader", PASSWORD)
    page.wait_for_function("[...document.querySelectorAll('style')].some(s => s.textContent.includes('plaintext'))")
    for text in (ARABIC_PROMPT, HEBREW_ANSWER):
        first, last = page.locator("p", has_text=text).evaluate(CHAR_X)
        assert last < first, f"{text!r}: its full stop is drawn right of its first letter"
    first, last = page.locator("p", has_text="Compost is a natural fertiliser.").evaluate(CHAR_X)
    assert first < last


# -- the queue rules against the real server (no browser) ---------------------------------------------------------


@pytest.fixture
def queue_round(owner, argilla_server, tmp_path, request) -> tuple[str, list[annotation.AnnotatorSession]]:
    """A fresh round (min_submitted=1) in a workspace of its own, and two logged-in annotators."""
    name = request.node.name.removeprefix("test_")[:40]
    for user in ("queue-a", "queue-b"):
        client.add_user(owner, user, f"{user}-password", "annotator", ["e2e-queue"])
    push.push(str(candidates_file(tmp_path / "c.jsonl")), name, "e2e-queue", min_submitted=1, client=owner)
    sessions = [annotation.login(user, f"{user}-password", url=argilla_server.url) for user in ("queue-a", "queue-b")]
    dataset_id = next(d["id"] for d in annotation.datasets(sessions[0]) if d["name"] == name)
    return dataset_id, sessions


@pytest.mark.argilla
def test_queue_never_hands_out_a_record_that_has_enough_submissions(queue_round):
    dataset_id, (a, b) = queue_round
    order = by_priority()
    first = annotation.next_record(a, dataset_id)
    assert first.prompt == order[0] and annotation.next_record(b, dataset_id).id == first.id
    annotation.save(b, first.id, annotation.pair_values("1"), annotation.SUBMITTED)
    assert annotation.next_record(a, dataset_id).prompt == order[1]  # a never answered it, but it is complete


@pytest.mark.argilla
def test_drafts_come_back_last_prefilled_and_skips_go_to_others(queue_round):
    dataset_id, (a, b) = queue_round
    order = by_priority()
    drafted = annotation.next_record(a, dataset_id)
    annotation.save(a, drafted.id, {schema.PREFERENCE: "2", schema.RATIONALE: "half"}, annotation.DRAFT)
    skipped = annotation.next_record(a, dataset_id)
    assert skipped.prompt == order[1]
    annotation.skip(a, skipped.id)
    for _ in order[2:]:
        annotation.save(a, annotation.next_record(a, dataset_id).id, annotation.pair_values("1"), annotation.SUBMITTED)

    back = annotation.next_record(a, dataset_id)
    assert back.id == drafted.id and back.draft == {schema.PREFERENCE: "2", schema.RATIONALE: "half"}
    annotation.save(a, back.id, annotation.pair_values("2"), annotation.SUBMITTED)  # a draft is replaced in place
    assert annotation.next_record(a, dataset_id) is None
    progress = annotation.progress(a, dataset_id)
    assert progress.mine["submitted"] == 3 and progress.mine["discarded"] == 1 and progress.left == 0
    assert (progress.completed, progress.total) == (3, 4)
    assert annotation.next_record(b, dataset_id).id == skipped.id  # a's skip leaves it to the others


@pytest.mark.argilla
def test_wrong_password_is_a_login_error(argilla_server):
    with pytest.raises(AlignkitError, match="login failed"):
        annotation.login("nobody", "not-the-password", url=argilla_server.url)


@pytest.mark.e2e
def test_a_sign_in_from_before_an_app_restart_is_said_on_the_login_page(annotate_app, page):
    """A browser whose sign-in cookie names a session the app's process does not hold (it restarted) is told why it
    is back at the login form; a first visit is not."""
    page.goto(annotate_app)
    page.get_by_label("Username").wait_for()
    assert page.get_by_text("Your sign-in ended").count() == 0
    host = annotate_app.split("//")[1].split(":")[0]
    page.context.add_cookies(
        [{"name": "alignkit-annotate", "value": "from-before-a-restart", "domain": host, "path": "/"}]
    )
    page.goto(annotate_app)
    page.get_by_text("Your sign-in ended: the app was restarted").wait_for()
