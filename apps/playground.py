"""Chat with any run (or the base) and compare 2-3 models side by side, with an in-context-learning baseline; rate
replies into Argilla. The Runs page (apps/runs.py) is the second page of this app.

Run it with `alignkit serve` (or `alignkit serve --app playground`). `ALIGNKIT_RUNS_DIR` (default `runs`) and
`ALIGNKIT_BASE_MODEL` (default `embedded`) set the defaults in the sidebar. The logic (model list, loading, streaming,
few-shot prompts, feedback records) is in `alignkit/playground.py`; this file only draws it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import streamlit as st

from alignkit import playground
from alignkit.errors import AlignkitError
from alignkit.generate import Sampling

APPS = Path(__file__).resolve().parent
MAX_COLUMNS = 3  # models side by side (the few-shot baseline may add one more)
ICL = "icl"  # column key of the in-context-learning baseline


@st.cache_resource(show_spinner=False)
def model_pool() -> playground.ModelPool:
    """One pool per server process: each base is loaded once, adapters are switched in it."""
    return playground.ModelPool()


def main() -> None:
    st.set_page_config(page_title="alignkit · playground", layout="wide")
    pages = [
        st.Page(chat_page, title="Playground", icon=":material/chat:", url_path="playground", default=True),
        st.Page(str(APPS / "runs.py"), title="Runs", icon=":material/monitoring:", url_path="runs"),
    ]
    st.navigation(pages).run()


# -- chat ----------------------------------------------------------------------------------------------------------


def chat_page() -> None:
    notice = st.session_state.pop("notice", None)
    if notice:
        st.toast(notice)
    with st.sidebar:
        settings = sidebar()
    choices = playground.model_choices(settings["runs_dir"], settings["base_model"])
    if not Path(settings["runs_dir"]).is_dir():  # else it reads as "no runs yet"
        st.warning(
            f"Runs directory `{settings['runs_dir']}` not found: only the base model is offered — fix: enter the "
            "folder your runs are in (sidebar)"
        )
    by_key = {c.key: c for c in choices}
    follow_picks(by_key, choices[0].key, settings["runs_dir"])
    st.title("Playground")
    st.session_state.setdefault("picked", [c.key for c in choices if c.usable][:2])
    picked = st.multiselect(
        "Models (side by side)",
        list(by_key),
        format_func=lambda k: by_key[k].label,
        max_selections=MAX_COLUMNS,
        select_all=False,  # "Select all" would pick the first three options, whatever they are
        key="picked",
        help="Pick 1-3 models: runs under the runs directory, or the bare base model.",
    )
    broken = [by_key[k] for k in picked if not by_key[k].usable]
    for choice in broken:
        st.error(f"{choice.label}: {choice.error}")
    columns = [k for k in picked if by_key[k].usable]
    icl_source = icl_run(columns, by_key) if settings["few_shot"] else None
    if settings["few_shot"] and icl_source is None:
        st.info("The few-shot baseline needs a fine-tuned run (SFT, DPO or RL) among the picked models.")
    keys = [*columns, *([ICL] if icl_source else [])]
    if not keys:
        st.info("Pick a model to chat with.")
        return
    titles = {k: column_title(k, by_key, settings["few_shot"], icl_source) for k in keys}
    turns: list[dict[str, Any]] = st.session_state.setdefault("turns", [])
    for key, cell in zip(keys, st.columns(len(keys)), strict=True):
        with cell:
            st.markdown(f"**{titles[key]}**")
            if key != ICL:
                describe(by_key[key])
    for index, turn in enumerate(turns):
        show_turn(index, turn, keys, titles)
    if turns and st.session_state.get("argilla_client") is None:
        st.caption("Sign in to Argilla (sidebar) to send feedback: it becomes preference records for the next round.")
    prompt = st.chat_input("Message the models")
    if prompt:
        generate_turn(prompt, keys, titles, settings, icl_source)
    st.button("Clear chat", on_click=clear_chat, disabled=not turns)


def follow_picks(by_key: dict[str, playground.ModelChoice], base_key: str, runs_dir: str) -> None:
    """Picked models the list no longer has: the base follows the sidebar's "Base model" field; a run is said to be
    outside the runs directory entered since, or gone from disk (never silently unpicked)."""
    picked = st.session_state.get("picked", [])
    if all(k in by_key for k in picked):
        return
    kept: list[str] = []
    for key in picked:
        if key in by_key:
            kept.append(key)
        elif key.startswith(playground.BASE_PREFIX):  # the base choice is always listed: the field changed
            kept.append(base_key)  # in the same column
            st.info(
                f"Base model changed from `{key.removeprefix(playground.BASE_PREFIX)}` to "
                f"`{base_key.removeprefix(playground.BASE_PREFIX)}`: the base column answers with it from the next "
                "turn, without the earlier turns"
            )
        elif (Path(key) / "manifest.json").is_file():
            st.warning(f"`{key}` is not under the runs directory `{runs_dir}`: it is no longer in the chat")
        else:
            st.warning(f"`{key}` is gone (moved or deleted since you picked it): it is no longer in the chat")
    st.session_state.picked = list(dict.fromkeys(kept))  # the new base may have been picked already


def sidebar() -> dict[str, Any]:
    st.header("Settings")
    runs_dir = st.text_input("Runs directory", value=os.environ.get("ALIGNKIT_RUNS_DIR", "runs"))
    base_model = st.text_input("Base model", value=os.environ.get("ALIGNKIT_BASE_MODEL", "embedded"))
    system = st.text_area("System prompt", value="", placeholder="You are a helpful assistant.")
    with st.expander("Sampling", expanded=True):
        temperature = st.slider("Temperature", 0.0, 2.0, 0.7, 0.05, help="0 = greedy")
        top_p = st.slider("Top-p", 0.05, 1.0, 0.95, 0.05)
        max_new_tokens = st.number_input("Max new tokens", 1, 2048, 128)
        seed = st.number_input("Seed", 0, 2**31 - 1, 0)
    few_shot = st.number_input(
        "Few-shot baseline: examples", 0, 16, 0, help="Adds a column: the base model with k SFT examples in context."
    )
    sampling = Sampling(temperature=temperature, top_p=top_p, max_new_tokens=int(max_new_tokens), seed=int(seed))
    sign_in()
    return {
        "runs_dir": runs_dir,
        "base_model": base_model or "embedded",
        "system": system,
        "sampling": sampling,
        "few_shot": int(few_shot),
    }


def describe(choice: playground.ModelChoice) -> None:
    """Lineage and key metrics of a run, in one caption."""
    lineage = " → ".join(choice.lineage) if choice.lineage else choice.stage
    figures = " · ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in choice.metrics.items() if k[0] != "_"
    )
    st.caption(f"{lineage}" + (f" · {figures}" if figures else ""))


def icl_run(columns: list[str], by_key: dict[str, playground.ModelChoice]) -> str | None:
    """The first picked fine-tuned run: its SFT data gives the few-shot examples."""
    return next((k for k in columns if by_key[k].stage not in ("base", "pretrain", "reward")), None)


def column_title(key: str, by_key: dict[str, playground.ModelChoice], k: int, icl_source: str | None) -> str:
    if key == ICL:
        return f"base + {k}-shot (from {Path(str(icl_source)).name}'s SFT data)"
    return by_key[key].label


def conversation_for(key: str, user_text: str, settings: dict[str, Any]) -> list[dict[str, str]]:
    """One column's conversation: the system prompt, that column's own earlier turns (a model added mid-chat has none
    from before it joined), the new message."""
    history: list[dict[str, str]] = []
    for turn in st.session_state.turns[:-1]:
        if key not in turn["answers"]:
            continue
        history += [{"role": "user", "content": turn["user"]}]
        history += [{"role": "assistant", "content": turn["answers"].get(key, "")}]
    return playground.conversation(history, user_text, settings["system"])


def model_key(key: str, icl_source: str | None) -> str:
    """The model answering in a column: the run itself, or for the few-shot column the base of the source run."""
    return playground.base_of(str(icl_source)) if key == ICL else key


def show_turn(index: int, turn: dict[str, Any], keys: list[str], titles: dict[str, str]) -> None:
    """One turn as one row: the user's message across the page, then each model's reply in its column with its
    Copy and thumbs under it, so turn N of every model starts at the same height however long the replies above."""
    with st.chat_message("user"):
        st.markdown(turn["user"])
    for key, cell in zip(keys, st.columns(len(keys)), strict=True):
        with cell:
            st.caption(titles[key])
            if key in turn["answers"]:
                with st.chat_message("assistant"):
                    st.markdown(turn["answers"][key] or "_(empty reply)_")
                if key in turn["finished"]:  # a reply cut short by Stop is not offered for rating
                    copy_box(turn["answers"][key])
                    st.feedback("thumbs", key=f"thumb-{index}-{key}", on_change=send_thumb, args=(key, index))
            elif key in turn["errors"]:  # kept with the turn: the rerun after it must not show an empty reply
                with st.chat_message("assistant"):
                    st.error(turn["errors"][key])
            elif key in turn["keys"]:
                st.caption("_(stopped before this model answered)_")
            else:
                st.caption("_(not in the chat at this turn)_")
    comparison_row(index, [k for k in keys if k in turn["finished"]], len(keys), titles)


def generate_turn(
    prompt: str, keys: list[str], titles: dict[str, str], settings: dict[str, Any], icl: str | None
) -> None:
    """Stream each column's reply in turn, in a new row; partial text is kept in the history as it arrives (Stop
    keeps it)."""
    turns = st.session_state.turns
    turns.append(
        {
            "user": prompt,
            "keys": keys,  # the columns the message went to
            "answers": {},
            "finished": [],  # columns whose reply ran to its end (not cut by Stop): those can be rated
            "errors": {},  # columns whose model could not answer: the error, never an empty reply to rate
            "prompt": {},
            "models": {},
            "few_shot": {},
            "sampling": settings["sampling"],
        }
    )
    turn = turns[-1]
    with st.chat_message("user"):
        st.markdown(prompt)
    cells = st.columns(len(keys))
    stop_area = st.empty()
    stop_area.button("Stop", key="stop", type="secondary")  # any click reruns the page, which ends generation
    for key, cell in zip(keys, cells, strict=True):
        with cell:
            st.caption(titles[key])
            with st.chat_message("assistant"):
                placeholder = st.empty()
                try:
                    turn["answers"][key] = ""
                    turn["prompt"][key] = messages = conversation_for(key, prompt, settings)
                    turn["models"][key] = model_key(key, icl)
                    turn["few_shot"][key] = settings["few_shot"] if key == ICL else 0
                    if key == ICL:  # the examples go in front of the conversation, and only into the model
                        examples = playground.sft_examples(str(icl))
                        messages = playground.few_shot(
                            examples, messages, settings["few_shot"], settings["sampling"].seed
                        )
                    with st.spinner("loading model…", show_time=True):
                        model_pool().get(turn["models"][key])
                    stop = threading.Event()
                    try:  # Stop (or any rerun) interrupts this loop; the partial reply stays in the history
                        for chunk in playground.stream_reply(
                            model_pool(), turn["models"][key], messages, settings["sampling"], stop
                        ):
                            turn["answers"][key] += chunk
                            placeholder.markdown(turn["answers"][key] + "▌")
                    finally:
                        stop.set()
                    turn["answers"][key] = turn["answers"][key].strip()
                    turn["finished"].append(key)
                    placeholder.markdown(turn["answers"][key] or "_(empty reply)_")
                except AlignkitError as exc:
                    del turn["answers"][key]
                    turn["errors"][key] = playground.error_line(exc)
                    placeholder.error(turn["errors"][key])
    stop_area.empty()
    st.rerun()


def clear_chat() -> None:
    st.session_state.turns = []


# -- feedback ------------------------------------------------------------------------------------------------------


def sign_in() -> None:
    """Argilla sign-in for feedback (owners and admins: feedback creates records; annotators rate in Annotate)."""
    user = st.session_state.get("argilla_user")
    with st.expander("Feedback to Argilla", expanded=True):
        if user is not None:
            st.caption(f"Signed in as **{user}**")
            st.text_input("Workspace", value=playground.DEFAULT_WORKSPACE, key="workspace")
            st.button("Sign out", on_click=sign_out)
            return
        with st.form("sign-in"):
            username = st.text_input("Username", autocomplete="username")
            password = st.text_input("Password", type="password", autocomplete="current-password")
            if st.form_submit_button("Sign in"):
                try:
                    client, role = playground.user_client(username.strip(), password)
                except AlignkitError as exc:
                    st.error(exc.message + (f" — fix: {exc.hint}" if exc.hint else ""))
                    return
                if role == "annotator":
                    st.error("Annotators rate in the annotate app; playground feedback needs an owner or admin.")
                    return
                st.session_state.argilla_client, st.session_state.argilla_user = client, username.strip()
                st.rerun()


def sign_out() -> None:
    for key in ("argilla_client", "argilla_user"):
        st.session_state.pop(key, None)


def comparison_row(index: int, answered: list[str], columns: int, titles: dict[str, str]) -> None:
    """Under a turn's row: with 2-3 replies, "which is better?" buttons (a column whose model failed, or that Stop
    cut short, has no reply to rate). Only replies to one conversation make a preference pair: from the second turn
    each column has its own earlier replies, and a pair stored under one of them would be a reply to another."""
    signed_in = st.session_state.get("argilla_client") is not None
    prompts = st.session_state.turns[index]["prompt"]
    if len(answered) >= 2 and any(prompts[key] != prompts[answered[0]] for key in answered):
        st.caption(
            "These replies follow different conversations (each model's own earlier replies), so they make no "
            "preference pair: rate each with its thumbs, or compare first turns (Clear chat)."
        )
        return
    if len(answered) == columns == 2:
        left, tie, right = st.columns(3)
        for cell, label, choice in (
            (left, "⬅ Left is better", "first"),
            (tie, "Tie", "tie"),
            (right, "Right is better ➡", "second"),
        ):
            cell.button(
                label,
                key=f"choice-{index}-{choice}",
                on_click=send_choice,
                args=(index, answered, choice),
                disabled=not signed_in,
            )
    elif len(answered) >= 2:
        for key, column in zip(answered, st.columns(len(answered)), strict=True):
            column.button(
                f"Best: {titles[key]}",
                key=f"best-{index}-{key}",
                on_click=send_best,
                args=(index, answered, key),
                disabled=not signed_in,
            )


def copy_box(text: str) -> None:
    with st.expander("Copy"):
        st.code(text, language=None, wrap_lines=True)


def answer(index: int, key: str) -> playground.Answer:
    """A turn's reply of one column, with the model, sampling and few-shot count that produced it."""
    turn = st.session_state.turns[index]
    return playground.Answer(turn["answers"][key], turn["models"][key], turn["sampling"], turn["few_shot"][key])


def send_thumb(key: str, index: int) -> None:
    value = st.session_state.get(f"thumb-{index}-{key}")
    if value is None:
        return
    reply = answer(index, key)
    feedback(index, key, lambda client, prompt: playground.send_thumb(client, prompt, reply, value == 1, workspace()))


def send_choice(index: int, keys: list[str], choice: str) -> None:
    first, second = answer(index, keys[0]), answer(index, keys[1])
    feedback(
        index,
        keys[0],
        lambda client, prompt: playground.send_preference(client, prompt, first, second, choice, workspace()),
    )


def send_best(index: int, keys: list[str], best: str) -> None:
    others = [answer(index, k) for k in keys if k != best]
    winner = answer(index, best)
    feedback(
        index,
        keys[0],
        lambda client, prompt: [
            playground.send_preference(client, prompt, winner, other, "first", workspace()) for other in others
        ],
    )


def workspace() -> str:
    return st.session_state.get("workspace") or playground.DEFAULT_WORKSPACE


def feedback(index: int, key: str, send: Any) -> None:
    """Send feedback on a turn (as `key`'s column saw the conversation) with the signed-in user's client; the
    outcome becomes a toast, never a traceback."""
    client = st.session_state.get("argilla_client")
    if client is None:
        st.session_state.notice = "Sign in to Argilla (sidebar) to send feedback."
        return
    try:
        send(client, st.session_state.turns[index]["prompt"][key])
    except AlignkitError as exc:
        st.session_state.notice = f"Feedback not stored: {exc.message}"
        return
    st.session_state.notice = "Feedback stored in Argilla"


main()
