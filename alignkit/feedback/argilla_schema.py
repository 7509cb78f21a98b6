"""The Argilla dataset settings of a preference-collection round: one place, used by push, pull, the apps and tests.

Fields: `prompt` and `candidate_1..N` (shown in a per-record shuffled order, recorded in metadata `order`).
Questions: with two candidates, `preference` (1 / 2 / tie) and `strength` (1 slight .. 3 strong); with more, a
`ranking`; always an optional free-text `rationale`. Metadata: round, prompt id, producing runs, order, sampling,
priority, and with a reward model the shown index it prefers (`suggested`) and its probability (`suggested_p`).
"""

from __future__ import annotations

from typing import Any

PREFERENCE = "preference"
STRENGTH = "strength"
RANKING = "ranking"
RATIONALE = "rationale"
PREFERENCE_LABELS = {"1": "Response 1 is better", "2": "Response 2 is better", "tie": "Tie"}
STRENGTH_VALUES = [1, 2, 3]  # slight, clear, strong
METADATA = ("round", "prompt_id", "runs", "order", "sampling", "source")

GUIDELINES = """\
**Which response is better?** Read the prompt, then each response.

- Prefer the response that answers the prompt correctly, helpfully and safely.
- If both are equally good (or equally bad), choose **Tie**.
- **Strength**: 1 = slightly better, 2 = clearly better, 3 = much better.
- A short rationale helps reviewers and trains better reward models, but is optional.

Keyboard: `1` / `2` choose a response, `t` tie, `s` skip, `Enter` submit.
"""


def candidate_field(i: int) -> str:
    return f"candidate_{i + 1}"


def preference_settings(n_candidates: int, min_submitted: int = 1, guidelines: str = GUIDELINES) -> Any:
    """`rg.Settings` for a round with `n_candidates` per prompt and `min_submitted` annotators per record."""
    import argilla as rg

    fields = [rg.TextField(name="prompt", title="Prompt", use_markdown=True)]
    fields += [
        rg.TextField(name=candidate_field(i), title=f"Response {i + 1}", use_markdown=True) for i in range(n_candidates)
    ]
    if n_candidates == 2:
        questions: list[Any] = [
            rg.LabelQuestion(name=PREFERENCE, title="Which response is better?", labels=PREFERENCE_LABELS),
            rg.RatingQuestion(name=STRENGTH, title="How much better?", values=STRENGTH_VALUES, required=False),
        ]
    else:
        values = {candidate_field(i): f"Response {i + 1}" for i in range(n_candidates)}
        questions = [rg.RankingQuestion(name=RANKING, title="Rank the responses (1 = best)", values=values)]
    questions.append(rg.TextQuestion(name=RATIONALE, title="Why? (optional)", required=False))
    metadata: list[Any] = [rg.TermsMetadataProperty(name=name) for name in METADATA]
    metadata.append(rg.FloatMetadataProperty(name="priority"))  # ordering.priority: higher = rate sooner
    # the reward model's pre-label (push with a scorer): declared, since Argilla shows annotators declared metadata only
    metadata += [rg.IntegerMetadataProperty(name="suggested", min=0), rg.FloatMetadataProperty(name="suggested_p")]
    return rg.Settings(
        fields=fields,
        questions=questions,
        metadata=metadata,
        guidelines=guidelines,
        distribution=rg.TaskDistribution(min_submitted=min_submitted),
        allow_extra_metadata=True,
    )


def n_candidates(field_names: list[str]) -> int:
    """How many candidate fields a round's dataset has."""
    return sum(1 for name in field_names if name.startswith("candidate_"))


# ---- review rounds: accept / edit / reject single responses (e.g. from `alignkit synth`) ------------------------

REVIEW = "review"
EDITED_RESPONSE = "edited_response"
REVIEW_LABELS = {"accept": "Accept", "reject": "Reject"}
REVIEW_GUIDELINES = """\
**Is this a good training example?** Read the prompt, then the response.

- **Accept** a correct, helpful and safe response to a sensible prompt.
- To fix a response that is almost right, correct it under *Edited response* (it starts with the response) and
  **Accept**: your version replaces the response.
- **Reject** a nonsensical prompt, or a response that is wrong, unsafe or not worth fixing.
"""


def is_review(settings: Any) -> bool:
    """Whether a dataset's `rg.Settings` are a review round's (accept / edit / reject) rather than a rating round's."""
    return REVIEW in {question.name for question in settings.questions}


def review_settings(min_submitted: int = 1, guidelines: str = REVIEW_GUIDELINES) -> Any:
    """`rg.Settings` for a review round: one response per prompt, accept/reject plus an optional edited response."""
    import argilla as rg

    return rg.Settings(
        fields=[
            rg.TextField(name="prompt", title="Prompt", use_markdown=True),
            rg.TextField(name="response", title="Response", use_markdown=True),
        ],
        questions=[
            rg.LabelQuestion(name=REVIEW, title="Keep this example?", labels=REVIEW_LABELS),
            rg.TextQuestion(
                name=EDITED_RESPONSE, title="Edited response (optional: replaces the response)", required=False
            ),
        ],
        metadata=[
            rg.TermsMetadataProperty(name="prompt_id"),
            rg.FloatMetadataProperty(name="priority"),  # the annotate app's queue order; here the file's order
        ],
        guidelines=guidelines,
        distribution=rg.TaskDistribution(min_submitted=min_submitted),
        allow_extra_metadata=True,
    )
