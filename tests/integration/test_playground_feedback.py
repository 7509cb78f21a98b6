"""Playground feedback against the real local Argilla: records land in the collection rounds' schema, so the same
`feedback pull` / `feedback review pull` turn them into preference pairs and SFT rows."""

from __future__ import annotations

import argilla as rg
import pytest

from alignkit import playground as pg
from alignkit.errors import AlignkitError
from alignkit.feedback import client, pull
from alignkit.generate import Sampling

pytestmark = [pytest.mark.argilla, pytest.mark.filterwarnings("ignore:.* not found:UserWarning")]
WORKSPACE = "pg-feedback"
PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a compost green."}]


def answer(text: str, model: str) -> pg.Answer:
    return pg.Answer(text, model, Sampling(temperature=0.7, seed=1))


def test_choices_and_thumbs_become_pairs_and_sft_rows(argilla_server, tmp_path):
    owner = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    client.add_user(owner, "pg-fb-admin", "pg-fb-admin-pw", "admin", [WORKSPACE])
    client.add_user(owner, "pg-fb-annotator", "pg-fb-annotator-pw", "annotator", [WORKSPACE])
    admin, role = pg.user_client("pg-fb-admin", "pg-fb-admin-pw", argilla_server.url)
    assert role == "admin"
    assert pg.user_client("pg-fb-annotator", "pg-fb-annotator-pw", argilla_server.url)[1] == "annotator"

    sft, dpo, base = (answer(t, m) for t, m in (("Grass clippings.", "runs/sft"), ("Coffee.", "runs/dpo"), ("Hm", "x")))
    pg.send_preference(admin, PROMPT, sft, dpo, "second", WORKSPACE)  # "right is better"
    pg.send_preference(admin, PROMPT, dpo, base, "first", WORKSPACE)
    pg.send_preference(admin, PROMPT, sft, base, "tie", WORKSPACE)
    pg.send_thumb(admin, PROMPT, dpo, True, WORKSPACE)
    pg.send_thumb(admin, PROMPT, base, False, WORKSPACE)

    pairs = pull.pull(pg.PREFERENCE_DATASET, WORKSPACE, client=owner)
    assert pairs.summary["records"] == 3 and pairs.summary["ties"] == 1
    assert sorted((p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs.pairs) == [
        ("Coffee.", "Grass clippings."),
        ("Coffee.", "Hm"),
    ]
    assert all(p["prompt"] == PROMPT for p in pairs.pairs)
    accepted = pull.pull_review(pg.REPLIES_DATASET, WORKSPACE, client=owner)
    assert [row["messages"] for row in accepted] == [[*PROMPT, {"role": "assistant", "content": "Coffee."}]]
    assert accepted[0]["playground"]["run"].endswith("runs/dpo")

    with pytest.raises(AlignkitError, match="choice"):
        pg.send_preference(admin, PROMPT, sft, dpo, "left", WORKSPACE)


def test_changing_your_mind_replaces_your_feedback_instead_of_adding_to_it(argilla_server):
    """Left, then right on the same two replies (a misclick, a second thought), or thumbs up then down: one record,
    your last answer; a double click stores nothing twice."""
    owner = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    workspace = "pg-feedback-again"
    client.add_user(owner, "pg-fb-again", "pg-fb-again-pw", "admin", [workspace])
    admin, _ = pg.user_client("pg-fb-again", "pg-fb-again-pw", argilla_server.url)
    sft, dpo = answer("Grass clippings.", "runs/sft"), answer("Coffee.", "runs/dpo")
    first = pg.send_preference(admin, PROMPT, sft, dpo, "first", workspace)
    assert pg.send_preference(admin, PROMPT, sft, dpo, "first", workspace) == first
    assert pg.send_preference(admin, PROMPT, sft, dpo, "second", workspace) == first
    pg.send_thumb(admin, PROMPT, dpo, True, workspace)
    pg.send_thumb(admin, PROMPT, dpo, False, workspace)

    pairs = pull.pull(pg.PREFERENCE_DATASET, workspace, client=owner)
    assert pairs.summary["records"] == 1
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs.pairs] == [
        ("Coffee.", "Grass clippings.")
    ]
    assert pull.pull_review(pg.REPLIES_DATASET, workspace, client=owner) == []  # thumbs down is the last word
