"""Rate candidate responses in Argilla with your own account, one record at a time, keyboard first (a review
round shows one response to accept, edit or reject instead).

Run it with `alignkit serve` (or `streamlit run apps/annotate.py` with `ARGILLA_API_URL` set or a local server
running). Every answer is stored in Argilla as soon as it is given, and `Back` returns to the records answered in
this session to change an answer (the new one replaces it). A reload keeps the annotator signed in, and the
answer being given (choice, ranking, edit, rationale) on the record on screen; an app restart forgets both. The queue,
statuses and the skip rule are in `alignkit/feedback/annotation.py`; annotators rating at once are shown different
records unless the round wants overlap (`annotation.Claims`). While Argilla is unreachable, answers are kept
in a durable local outbox (an "offline, N pending" notice says so) and sent exactly once when it is back. Shortcuts
are Streamlit's own button shortcuts (ignored while typing in a field).
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import streamlit as st

from alignkit.errors import AlignkitError
from alignkit.feedback import annotation
from alignkit.feedback import argilla_schema as schema
from alignkit.feedback.client import ArgillaUnavailable

PAIR_KEYS = "Keys: `1` / `2` choose · `T` tie · `Shift+1..3` strength · "
REVIEW_KEYS = "Keys: `A` accept · `X` reject · "
RANKING_KEYS = "Keys: `1`–`9` the next best response · `T` tie with the previous · `Backspace` undo · "
REVIEW_SHORTCUTS = {"accept": "A", "reject": "X"}  # Streamlit reserves R (rerun) and C (clear cache)
ACTION_KEYS = "`Enter` submit · `D` save draft · `S` skip · `B` back to change your last answer (outside text fields)"
MAX_SIDE_BY_SIDE = 4  # more candidates than this are listed one under the other
PREFETCH = 20  # records kept at hand, so rating goes on while Argilla is unreachable
MAX_BACK = 20  # answered records `Back` can return to, most recent first
ANSWER_STATE = ("choice-of-", "strength-of-", "ranking-", "edit-", "rationale-")  # + record id: an answer in progress
SIGN_IN_COOKIE = "alignkit-annotate"  # a random token naming a session this app's process holds; never a credential


def main() -> None:
    st.set_page_config(page_title="alignkit · annotate", layout="wide")
    show_flash()
    try:
        token = st.context.cookies.get(SIGN_IN_COOKIE, "")
        session = st.session_state.get("session") or signed_in().get(token)
        if session is None or session.http.is_closed:  # never signed in, or signed out in another tab
            st.session_state.pop("session", None)
            login_view(ended=bool(token) and token not in signed_in() and token not in signed_out())
        else:
            st.session_state.session = session
            rating_view(session)
    except AlignkitError as exc:  # Argilla went away or refused something: a notice, never a traceback
        st.error(exc.message)
        if exc.hint:
            st.caption(exc.hint)
        st.button("Retry")
    run_scripts()


def run_script(code: str) -> None:
    """Run `code` in the page at the end of this run (or the next, after a rerun). Last, so no element is shifted
    when the run after has no script: widgets keep their place and focus."""
    st.session_state.setdefault("scripts", []).append(code)


def run_scripts() -> None:
    for code in st.session_state.pop("scripts", []):
        st.html(f"<script>{code}</script>", unsafe_allow_javascript=True)


def show_flash() -> None:
    flash = st.session_state.pop("flash", None)
    if flash:
        st.toast(flash)


# -- login ------------------------------------------------------------------------------------------------------


def login_view(ended: bool = False) -> None:
    """The login form; `ended`: this browser was signed in, to an app process that is gone (the app restarted)."""
    st.title("Rate responses")
    if ended:
        st.info(
            "Your sign-in ended: the app was restarted. Log in again to go on. The answers you submitted or saved as "
            "drafts are in Argilla; a choice or edit you had not yet submitted was not kept."
        )
    url = annotation.argilla_url()
    with st.form("login"):
        username = st.text_input("Username", autocomplete="username")
        password = st.text_input("Password", type="password", autocomplete="current-password")
        if st.form_submit_button("Log in", type="primary"):
            try:
                st.session_state.session = annotation.login(username.strip(), password, url)
                token = secrets.token_urlsafe(32)
                signed_in()[token] = st.session_state.session
                run_script(f"document.cookie = '{SIGN_IN_COOKIE}={token}; path=/; SameSite=Strict'")
            except AlignkitError as exc:
                st.error(exc.message)
                if exc.hint:
                    st.caption(exc.hint)
            else:
                st.rerun()
    st.caption(f"Your Argilla account at {url}")


def log_out() -> None:
    session = st.session_state.session
    annotation.log_out(session)
    claims().release(session.username)
    answers_in_progress().pop(id(session), None)
    for token in [t for t, s in signed_in().items() if s is session]:
        del signed_in()[token]
        signed_out().add(token)  # a tab still holding it shows the login form without the "app restarted" notice
    for key in list(st.session_state):
        del st.session_state[key]
    run_script(f"document.cookie = '{SIGN_IN_COOKIE}=; path=/; max-age=0'")


@st.cache_resource
def signed_in() -> dict[str, Any]:
    """Annotator sessions by the token in this browser's sign-in cookie, held by the app's process: reloading the
    page keeps the annotator signed in (until they log out, the browser closes or the app restarts)."""
    return {}


@st.cache_resource
def signed_out() -> set[str]:
    """Sign-in tokens logged out in this app's process: a cookie naming a token in neither set is from before a
    restart."""
    return set()


# -- rating -----------------------------------------------------------------------------------------------------


def rating_view(session: Any) -> None:
    sync_outbox(session)
    available = online_or_cached("datasets", lambda: annotation.datasets(session))
    with st.sidebar:
        st.markdown(f"Signed in as **{session.username}**")
        st.button("Log out", on_click=log_out)
        if not available:
            st.info("No dataset to rate yet: ask an owner to add you to a workspace with a round.")
            return
        by_id = {d["id"]: d for d in available}
        dataset_id = st.selectbox(
            "Dataset",
            list(by_id),
            format_func=lambda i: by_id[i]["name"],
            key="dataset_id",
            on_change=run_script,  # a pick leaves focus in the list, where the next key would filter it, not rate
            args=("document.activeElement?.blur()",),
        )
        progress = online_or_cached(f"progress-{dataset_id}", lambda: annotation.progress(session, dataset_id))
        progress_panel(progress)
        with st.expander("Guidelines", expanded=False):
            st.markdown(annotation.guidelines(by_id[dataset_id]))

    name = by_id[dataset_id]["name"]
    record = current_record(session, dataset_id, annotation.min_submitted(by_id[dataset_id]))
    if record is None:
        if st.session_state.get("offline"):  # the records at hand are answered; Argilla may hold more
            st.info("You have answered every record at hand. More cannot be fetched until Argilla is back.")
        else:
            st.success(f"Nothing left to rate in **{name}**. Thank you!")
        st.button("Check again", on_click=forget_record)
        return
    st.caption(f"{name} · {progress.left} left for you · {progress.completed} of {progress.total} complete")
    record_view(session, record)
    keep_in_progress(record)


def sync_outbox(session: Any) -> None:
    """Send answers queued while Argilla was unreachable; say "offline, N pending" while any are left."""
    outbox = annotation.outbox(session)
    if len(outbox):
        result = outbox.flush(session)
        st.session_state.offline = bool(result.pending)
        if result.sent:
            st.toast(f"Back online: {result.sent} saved answers sent to Argilla")
        for item in result.failed:
            st.error(f"Argilla refused a saved answer to record {item.record_id}: {item.error}")
    pending = len(outbox)
    if st.session_state.get("offline") or pending:
        st.warning(
            f"Offline, {pending} pending: Argilla cannot be reached. Keep rating: your answers are saved on this "
            "machine and sent when it is back."
        )


def online_or_cached(key: str, fetch: Any) -> Any:
    """`fetch()` from Argilla (remembered), or its last value while Argilla is unreachable."""
    try:
        value = fetch()
    except ArgillaUnavailable:
        st.session_state.offline = True
        if f"cached-{key}" not in st.session_state:
            raise
        return st.session_state[f"cached-{key}"]
    st.session_state.offline = False
    st.session_state[f"cached-{key}"] = value
    return value


def progress_panel(progress: annotation.Progress) -> None:
    mine = progress.mine
    st.markdown("**My progress**")
    st.caption(
        f"{mine.get('submitted', 0)} submitted · {mine.get('draft', 0)} drafts · "
        f"{mine.get('discarded', 0)} skipped · {progress.left} left for you"
    )
    st.markdown("**Everyone**")
    share = progress.completed / progress.total if progress.total else 0.0
    st.progress(share, text=f"{progress.completed} of {progress.total} records complete")


def current_record(session: Any, dataset_id: str, overlap: int) -> annotation.RecordView | None:
    """The record on screen; fetched again only after an answer, a skip or a change of dataset. Records that
    `overlap` other annotators of this app have on screen come last (`annotation.Claims`)."""
    if st.session_state.get("record_dataset") != dataset_id:
        queued = annotation.outbox(session).record_ids()
        upcoming = online_or_cached(
            f"upcoming-{dataset_id}", lambda: annotation.next_records(session, dataset_id, PREFETCH)
        )
        unsent = [r for r in upcoming if r.id not in queued]
        show(next(iter(claims().order(unsent, dataset_id, session.username, overlap)), None), dataset_id)
    return st.session_state.record


@st.cache_resource
def claims() -> annotation.Claims:
    """Which record each annotator of this app's process has on screen, so annotators rating at once are spread."""
    return annotation.Claims()


def show(record: annotation.RecordView | None, dataset_id: str) -> None:
    """Put a record on screen, its answer widgets prefilled from `record.draft` (a saved draft, or the answer given
    when going back to it)."""
    st.session_state.record = record
    st.session_state.record_dataset = dataset_id
    claims().hold(dataset_id, st.session_state.session.username, None if record is None else record.id)
    if record is not None:
        st.session_state[f"choice-of-{record.id}"] = record.draft.get(
            schema.REVIEW if record.is_review else schema.PREFERENCE
        )
        st.session_state[f"edit-{record.id}"] = record.draft.get(schema.EDITED_RESPONSE) or record.response or ""
        st.session_state[f"strength-of-{record.id}"] = record.draft.get(schema.STRENGTH)
        st.session_state[f"rationale-{record.id}"] = record.draft.get(schema.RATIONALE) or ""
        st.session_state[f"ranking-{record.id}"] = annotation.ranking_from_ranks(annotation.draft_ranks(record))
        st.session_state.shown_with = {key: st.session_state[key] for key in answer_keys(record.id)}
        st.session_state.update(in_progress().pop(record.id, {}))  # left for `Back`, or by a reload


def forget_record() -> None:
    st.session_state.pop("record_dataset", None)
    st.session_state.revisiting = False


def go_back(dataset_id: str, current: annotation.RecordView) -> None:
    """Show the record answered last (this session, this dataset) again with that answer, to change it: the new
    answer replaces the old one in Argilla (or in the outbox while offline). What was given so far on the record
    left (an edit, a choice) is kept for its return."""
    keep_in_progress(current)
    record = st.session_state.answered[dataset_id].pop()
    show(record, dataset_id)
    st.session_state.revisiting = True


def in_progress() -> dict[str, dict[str, Any]]:
    """This sign-in's answers being given, by record id, held by the app's process beside the sign-in: a reload (or
    `Back`) shows a record with the choice, ranking, edit or rationale given so far, not blank."""
    return answers_in_progress().setdefault(id(st.session_state.session), {})


@st.cache_resource
def answers_in_progress() -> dict[int, dict[str, dict[str, Any]]]:
    return {}  # by the id of the sign-in's session, which `signed_in` keeps alive until log out drops both


def keep_in_progress(record: annotation.RecordView) -> None:
    """Remember what was changed on `record` since it was shown (what it was shown with would, put back later, undo
    a draft saved meanwhile)."""
    shown_with = st.session_state.get("shown_with", {})
    in_progress()[record.id] = {
        key: st.session_state[key]
        for key in answer_keys(record.id)
        if key in st.session_state and st.session_state[key] != shown_with.get(key)
    }


def answer_keys(record_id: str) -> list[str]:
    """The session-state keys holding the answer being given to a record."""
    return [f"{prefix}{record_id}" for prefix in ANSWER_STATE]


def record_view(session: Any, record: annotation.RecordView) -> None:
    if st.session_state.get("revisiting"):
        st.info("You answered this record before: change your answer and submit (or skip) to replace it.")
    elif record.draft:
        st.info("You saved a draft for this record: finish it and submit.")
    st.markdown("##### Prompt")
    with st.container(border=True):
        st.markdown(record.prompt)
    if record.is_review:
        review_response(record)
    elif record.is_pair:
        pair_responses(record)
    else:
        ranking_responses(record)
    if record.suggestion is not None:
        suggestion_toggle(record)
    if not record.is_review:
        st.text_area("Why? (optional)", key=f"rationale-{record.id}", placeholder="A short reason helps reviewers")
    with st.container(key=ANSWER_BAR):
        if record.is_review:
            review_choices(record)
        elif record.is_pair:
            pair_choices(record)
        else:
            ranking_controls(record)
        action_row(session, record)
    keys = REVIEW_KEYS if record.is_review else PAIR_KEYS if record.is_pair else RANKING_KEYS
    st.caption(keys + ACTION_KEYS)
    st.html(PAGE_STYLE % {"background": st.get_option("theme.backgroundColor") or "Canvas"})  # styles only


ANSWER_BAR = "answer-bar"  # a container key: Streamlit gives the container the CSS class `st-key-answer-bar`
# The answer bar (choices and Submit) sticks to the bottom of the window while a long record is read, so an answer
# never needs a scroll. It is opaque in the page's colour: the theme's, else the browser's for the colour scheme
# Streamlit sets (white on a light theme). The review round's edit box is in a fixed-width font, as code editors show
# text: the indentation of code in a response can be judged and fixed.
# Each paragraph of a prompt, response or text box is laid out in its own direction (`plaintext`): Arabic or Hebrew
# reads right to left from the right edge, its final full stop on the left, while English stays as it is.
PAGE_STYLE = """<style>
[data-testid="stLayoutWrapper"]:has(> .st-key-answer-bar) {
  position: sticky; bottom: 0; z-index: 99; background-color: %(background)s;
  padding: 0.5rem 0 0.25rem; border-top: 1px solid rgba(128, 128, 128, 0.3);
}
textarea[aria-label^="Edited response"] { font-family: ui-monospace, monospace; }
[data-testid="stMain"] :is([data-testid="stMarkdownContainer"] :is(p, li, h1, h2, h3, h4, h5, h6, blockquote, td, th),
                           textarea) {
  unicode-bidi: plaintext; text-align: start;
}
</style>"""


def action_row(session: Any, record: annotation.RecordView) -> None:
    """Submit, Save draft, Skip and Back, with the notice of a failed answer just above them."""
    notice = st.session_state.pop("notice", None)
    if notice is not None:  # beside the button pressed: at the top of a long record it would be scrolled out of sight
        st.error(str(notice))
    row = st.container(horizontal=True)  # wraps in a narrow window, where columns would cut the labels
    row.button(
        "Submit", type="primary", shortcut="Enter", width="stretch", on_click=answer, args=(session, record, "submit")
    )
    row.button("Save draft", shortcut="D", width="stretch", on_click=answer, args=(session, record, "draft"))
    row.button("Skip", shortcut="S", width="stretch", on_click=answer, args=(session, record, "skip"))
    dataset_id = st.session_state.record_dataset
    row.button(
        "Back",
        shortcut="B",
        width="stretch",
        disabled=not st.session_state.get("answered", {}).get(dataset_id),
        help="The record you answered last, to change your answer",
        on_click=go_back,
        args=(dataset_id, record),
    )


def review_response(record: annotation.RecordView) -> None:
    with st.container(border=True):
        st.markdown("**Response**")
        st.markdown(record.response or "")
    st.text_area(  # starts with the response: fixing a word is an edit of it, not a retyping
        EDIT_LABEL, key=f"edit-{record.id}", height="content"
    )


def review_choices(record: annotation.RecordView) -> None:
    for value, column in zip(schema.REVIEW_LABELS, st.columns(len(schema.REVIEW_LABELS)), strict=True):
        with column:
            choice_button(record, value, schema.REVIEW_LABELS[value], shortcut=REVIEW_SHORTCUTS[value])


EDIT_LABEL = "Edited response (optional: correct the response here; your version replaces it when you accept)"


def pair_responses(record: annotation.RecordView) -> None:
    for i, column in enumerate(st.columns(2)):
        with column, st.container(border=True):
            st.markdown(f"**Response {i + 1}**")
            st.markdown(record.candidates[i])


def pair_choices(record: annotation.RecordView) -> None:
    for key, column in zip(("1", "2"), st.columns(2), strict=True):
        with column:
            choice_button(record, key, schema.PREFERENCE_LABELS[key])
    choice_button(record, "tie", "Tie", shortcut="T")
    choice = st.session_state.get(f"choice-of-{record.id}")
    if choice in ("1", "2"):
        strength = st.session_state.get(f"strength-of-{record.id}")
        st.markdown(f"How much better is response {choice}? (optional)")
        for value, column in zip(schema.STRENGTH_VALUES, st.columns(len(schema.STRENGTH_VALUES)), strict=True):
            column.button(
                f"{value} · {annotation.STRENGTH_LABELS[value]}",
                key=f"strength-{record.id}-{value}",
                type="primary" if strength == value else "secondary",
                shortcut=f"Shift+{value}",
                width="stretch",
                on_click=set_state,
                args=(f"strength-of-{record.id}", None if strength == value else value),
            )


def choice_button(record: annotation.RecordView, value: str, label: str, shortcut: str | None = None) -> None:
    """A choice for `record` only: its key and state name the record, so a key pressed while the page still shows
    the record answered last cannot choose on the next one."""
    state = f"choice-of-{record.id}"
    st.button(
        label,
        key=f"choose-{record.id}-{value}",
        type="primary" if st.session_state.get(state) == value else "secondary",
        shortcut=shortcut or value,
        width="stretch",
        on_click=set_state,
        args=(state, value),
    )


def ranking_responses(record: annotation.RecordView) -> None:
    """Rank by placing the responses best first: their number keys (or buttons) in order."""
    n, key = len(record.candidates), f"ranking-{record.id}"
    ranking: annotation.Ranking = st.session_state.setdefault(key, [])
    ranks = annotation.ranks_of(ranking, n)
    st.markdown("Place the responses best first: press their numbers (or click them) in order.")
    columns = st.columns(n) if n <= MAX_SIDE_BY_SIDE else [st.container() for _ in range(n)]
    for i, (text, column) in enumerate(zip(record.candidates, columns, strict=True)):
        with column, st.container(border=True):
            st.markdown(f"**Response {i + 1}**")
            st.markdown(text)
            st.button(
                f"Response {i + 1}: rank {ranks[i]}" if ranks[i] else f"Response {i + 1} next",
                key=f"place-{record.id}-{i}",
                type="primary" if ranks[i] else "secondary",
                shortcut=str(i + 1) if i < 9 else None,
                width="stretch",
                on_click=change_ranking,
                args=(key, annotation.place, i),
            )


def ranking_controls(record: annotation.RecordView) -> None:
    """Tie, undo and the ranking so far."""
    key = f"ranking-{record.id}"
    ranking: annotation.Ranking = st.session_state.get(key, [])
    tie, back, shown = st.columns([1, 1, 3])
    tie.button("Tie with previous", shortcut="T", on_click=change_ranking, args=(key, annotation.tie_with_previous))
    back.button("Undo", shortcut="Backspace", on_click=change_ranking, args=(key, annotation.undo))
    shown.markdown(f"**Ranking:** {annotation.ranking_text(ranking) or 'nothing placed yet'}")


def change_ranking(key: str, change: Any, *args: Any) -> None:
    st.session_state[key] = change(st.session_state.get(key, []), *args)


def suggestion_toggle(record: annotation.RecordView) -> None:
    """The reward model's pick, hidden until asked for on each record (seeing it first would anchor the rating)."""
    if st.toggle("Show model suggestion", key=f"suggest-{record.id}"):
        shown, p = record.suggestion
        st.info(f"Model suggests: Response {shown + 1} (p={p:.2f})")


def set_state(key: str, value: Any) -> None:
    st.session_state[key] = value


def answer(session: Any, record: annotation.RecordView, action: str) -> None:
    """Button callback: store the answer in Argilla now, then move on (errors become a notice on the page)."""
    rationale = st.session_state.get(f"rationale-{record.id}", "")
    try:
        if action == "skip":
            values, status = {}, annotation.DISCARDED
        elif action == "draft":
            values, status = draft_values(record, rationale), annotation.DRAFT
        else:
            values, status = submitted_values(record, rationale), annotation.SUBMITTED
        stored = annotation.save_or_queue(session, annotation.outbox(session), record.id, values, status)
    except AlignkitError as exc:
        st.session_state.notice = exc
        return
    st.session_state.offline = not stored
    answered = st.session_state.setdefault("answered", {}).setdefault(st.session_state.record_dataset, [])
    answered[:] = [*answered[-MAX_BACK + 1 :], dataclasses.replace(record, draft=values)]
    done = {"skip": "Skipped", "draft": "Draft saved"}.get(action, "Submitted")
    st.session_state.flash = done if stored else f"{done} (offline: kept on this machine until Argilla is back)"
    for key in [k for k in st.session_state if str(k).startswith((*ANSWER_STATE, "suggest-"))]:
        del st.session_state[key]
    in_progress().pop(record.id, None)
    forget_record()


def submitted_values(record: annotation.RecordView, rationale: str) -> dict[str, Any]:
    if record.is_review:
        return annotation.review_values(
            st.session_state.get(f"choice-of-{record.id}"),
            st.session_state.get(f"edit-{record.id}", ""),
            record.response or "",
        )
    if record.is_pair:
        choice, strength = (
            st.session_state.get(f"choice-of-{record.id}"),
            st.session_state.get(f"strength-of-{record.id}"),
        )
        return annotation.pair_values(choice, strength, rationale)
    ranks = annotation.ranks_of(st.session_state.get(f"ranking-{record.id}", []), len(record.candidates))
    return annotation.ranking_values(ranks, rationale)


def draft_values(record: annotation.RecordView, rationale: str) -> dict[str, Any]:
    """Whatever is filled in so far (a draft may be incomplete; a ranking is kept only once it is complete)."""
    values: dict[str, Any] = {}
    if record.is_review:
        choice, edited = st.session_state.get(f"choice-of-{record.id}"), st.session_state.get(f"edit-{record.id}", "")
        values = {schema.REVIEW: choice} if choice else {}
        return values | annotation.review_edit(edited, record.response or "")
    if record.is_pair:
        choice, strength = (
            st.session_state.get(f"choice-of-{record.id}"),
            st.session_state.get(f"strength-of-{record.id}"),
        )
        if choice:
            values[schema.PREFERENCE] = choice
        if strength and choice != "tie":
            values[schema.STRENGTH] = strength
    else:
        try:
            values = submitted_values(record, "")
        except AlignkitError:
            values = {}
    if rationale.strip():
        values[schema.RATIONALE] = rationale.strip()
    return values


main()
