"""`alignkit feedback pull`: submitted ratings -> TRL preference rows, with inter-annotator agreement.

Per record, every annotator's answer becomes votes on candidate pairs (a choice between two: one vote; a ranking: a
vote on every ordered pair). Per pair the majority wins; `agreement` is the majority's share of the votes. Records
below `min_agreement` are dropped; ties are dropped or kept (margin 0) as configured. Krippendorff's alpha (nominal,
over pair decisions with 2+ annotators) is computed here, since Argilla 2.x does not.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit import runs
from alignkit.errors import AlignkitError, option
from alignkit.feedback import argilla_schema as schema
from alignkit.feedback.annotation import review_edit
from alignkit.feedback.client import connect, find_dataset, submitted_answers, usernames
from alignkit.feedback.push import record_sources
from alignkit.jsonl import write_jsonl

TIE = "tie"


@dataclass
class PullResult:
    pairs: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def votes_from_choice(value: str, strength: float | None) -> dict[tuple[int, int], list[tuple[str, float]]]:
    """A two-candidate answer ("1", "2" or "tie") as a vote on the shown pair (0, 1)."""
    winner = {"1": "0", "2": "1"}.get(str(value), TIE)
    return {(0, 1): [(winner, float(strength or 1))]}


def votes_from_ranking(ranking: list[dict[str, Any]]) -> dict[tuple[int, int], list[tuple[str, float]]]:
    """A ranking ([{"value": candidate field, "rank": 1 = best}], shared ranks for ties) as a vote on every pair of
    shown candidates; the strength is the rank distance."""
    rank = {int(item["value"].rsplit("_", 1)[1]) - 1: int(item["rank"]) for item in ranking}
    votes: dict[tuple[int, int], list[tuple[str, float]]] = {}
    shown = sorted(rank)
    for a_index, a in enumerate(shown):
        for b in shown[a_index + 1 :]:
            winner = TIE if rank[a] == rank[b] else str(a) if rank[a] < rank[b] else str(b)
            votes[(a, b)] = [(winner, float(abs(rank[a] - rank[b])))]
    return votes


def record_votes(record: Any, n: int) -> dict[str, dict[tuple[int, int], list[tuple[str, float]]]]:
    """{annotator: {(i, j): [(winner, strength)]}} from a record's submitted responses."""
    votes = {}
    for user, answers in submitted_answers(record).items():
        if n == 2 and schema.PREFERENCE in answers:
            votes[user] = votes_from_choice(answers[schema.PREFERENCE], answers.get(schema.STRENGTH))
        elif schema.RANKING in answers:
            votes[user] = votes_from_ranking(list(answers[schema.RANKING]))
    return votes


def pairwise_agreement(labels: list[str]) -> float:
    """Share of annotator pairs that gave the same label."""
    m = len(labels)
    return sum(c * (c - 1) for c in Counter(labels).values()) / (m * (m - 1))


def krippendorff_alpha(units: list[list[str]]) -> float | None:
    """Nominal alpha over units (each a list of the labels its annotators gave); None when undefined."""
    import krippendorff
    import numpy as np

    units = [u for u in units if len(u) >= 2]
    if not units:
        return None
    labels = sorted({label for unit in units for label in unit})
    width = max(len(u) for u in units)
    matrix = np.full((width, len(units)), np.nan)
    for j, unit in enumerate(units):
        for i, label in enumerate(unit):
            matrix[i, j] = labels.index(label)
    if len(labels) == 1:
        return 1.0
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))


PAIRINGS = ("all", "best-worst")


def pull(
    dataset_name: str,
    workspace: str = "alignkit",
    ties: str = "drop",
    min_agreement: float = 0.0,
    min_annotators: int = 1,
    client: Any = None,
    pairing: str = "all",
) -> PullResult:
    """Preference pairs from a round's submitted responses: every decided pair, or (`pairing="best-worst"`) one per
    record, the widest."""
    if ties not in ("drop", "keep"):
        raise AlignkitError(f"ties={ties!r}: expected drop or keep")
    if pairing not in PAIRINGS:
        raise AlignkitError(f"pairs={pairing!r}: expected one of {', '.join(PAIRINGS)}")
    if not 0.0 <= min_agreement <= 1.0:  # a majority share: above 1 every pair would be dropped without a word
        raise AlignkitError(f"{option('min_agreement')} {min_agreement}: expected a share between 0 and 1", "e.g. 0.6")
    if min_annotators < 1:
        raise AlignkitError(f"{option('min_annotators')} {min_annotators}: expected 1 or more")
    dataset = find_dataset(client or connect(), dataset_name, workspace)
    n = schema.n_candidates([f.name for f in dataset.settings.fields])
    if n < 2:
        hint = (
            "use `feedback review pull` for a review round"
            if schema.is_review(dataset.settings)
            else "choose a rating round"
        )
        raise AlignkitError(f"dataset {dataset_name!r} is not a rating round (no candidates to compare)", hint)
    names = usernames(dataset)
    pairs, units, per_pair_agreement = [], [], []
    counts: Counter[str] = Counter()
    annotators: set[str] = set()
    for record in dataset.records(with_responses=True):
        counts["records"] += 1
        votes = record_votes(record, n)
        if not votes:
            counts["unrated_records"] += 1
            continue
        if len(votes) < min_annotators:
            counts["below_min_annotators"] += 1
            continue
        counts["rated_records"] += 1
        annotators |= set(votes)
        order = [int(i) for i in record.metadata["order"].split(",")]
        texts = [record.fields[schema.candidate_field(i)] for i in range(n)]
        prompt = json.loads(record.metadata.get("prompt_messages") or "null") or [
            {"role": "user", "content": record.fields["prompt"]}
        ]
        pooled: dict[tuple[int, int], list[tuple[str, float]]] = defaultdict(list)
        voters: dict[tuple[int, int], list[str]] = defaultdict(list)
        for user, user_votes in votes.items():
            for pair, pair_votes in user_votes.items():
                pooled[pair] += pair_votes
                voters[pair].append(user)
        for (a, b), pair_votes in pooled.items():
            labels = [label for label, _ in pair_votes]
            units.append(labels)
            winner, top = Counter(labels).most_common(1)[0]
            agreement = top / len(labels)
            per_pair_agreement.append(agreement)
            if agreement < min_agreement or (top == len(labels) / 2 and len(set(labels)) > 1):
                counts["dropped_low_agreement"] += 1
                continue
            if winner == TIE:
                counts["ties"] += 1
                if ties == "drop":
                    continue
                chosen, rejected, margin = a, b, 0.0
            else:
                chosen = int(winner)
                rejected = b if chosen == a else a
                margin = sum(s for label, s in pair_votes if label == winner) / top
            pairs.append(
                {
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": texts[chosen]}],
                    "rejected": [{"role": "assistant", "content": texts[rejected]}],
                    "margin": margin,
                    "annotators": sorted(names.get(user, user) for user in voters[(a, b)]),
                    "agreement": agreement,
                    **record_origin(dataset_name, record.metadata),
                    "record_id": str(record.id),
                    "chosen_candidate": order[chosen],
                    "rejected_candidate": order[rejected],
                    "tie": winner == TIE,
                }
            )
    if not counts["rated_records"]:
        raise nothing_rated(dataset_name, workspace, counts, min_annotators)
    multi = [pairwise_agreement(unit) for unit in units if len(unit) >= 2]
    if pairing == "best-worst":
        pairs = best_vs_worst(pairs)
    summary = {
        "dataset": dataset_name,
        "records": counts["records"],
        "rated_records": counts["rated_records"],
        "unrated_records": counts["unrated_records"],
        "pairs": len(pairs),
        "pairing": pairing,
        "ties": counts["ties"],
        "dropped_low_agreement": counts["dropped_low_agreement"],
        "below_min_annotators": counts["below_min_annotators"],  # rated, by fewer than --min-annotators
        "annotators": len(annotators),
        "pairwise_agreement": sum(multi) / len(multi) if multi else None,
        "mean_majority_share": sum(per_pair_agreement) / len(per_pair_agreement) if per_pair_agreement else None,
        "krippendorff_alpha": krippendorff_alpha(units),
    }
    return PullResult(pairs=pairs, summary=summary)


def record_origin(dataset_name: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """Where a record's pairs come from: its dataset, collection round (a number, or `playground`) and the policies
    whose candidates it shows (`candidate_policies`), so a pairs file says which policy and round each pair is about."""
    round_name = str(metadata.get("round") or "")
    return {
        "dataset": dataset_name,
        "round": int(round_name) if round_name.isdigit() else round_name or None,
        "candidates_from": candidate_policies(metadata),
    }


def candidate_policies(metadata: dict[str, Any]) -> list[dict[str, str]]:
    """Each policy whose candidates a record shows, once: its run's `run_id` (what names a policy wherever runs/ is
    moved: `runs.same_policy`; for a record pushed before runs had ids, the id of the run its path still leads to:
    `runs.with_run_id`) with the run's path, else its model. `write_pairs` makes the path relative to the pairs file."""
    policies: dict[str, dict[str, str]] = {}
    for source in map(runs.with_run_id, record_sources(metadata)):
        named = {key: str(source[key]) for key in ("run_id", "run") if source.get(key)} or {"model": source["model"]}
        policies.setdefault(runs.policy_key(source), named)
    return [policies[key] for key in sorted(policies)]


def write_pairs(path: Path, pairs: list[dict[str, Any]], overwrite: bool = False) -> None:
    """`pairs` as a pairs file, each policy's run path (`candidates_from`) relative to the file's folder
    (`runs.policy_in_file`), where `data.load_preferences` reads it from: a stage run from another working directory,
    or after the project moved whole, still finds the run."""
    folder = path.expanduser().resolve().parent
    write_jsonl(
        path,
        [
            pair | {"candidates_from": [runs.policy_in_file(p, folder) for p in pair["candidates_from"]]}
            if pair.get("candidates_from")
            else pair
            for pair in pairs
        ],
        overwrite=overwrite,
    )


def nothing_rated(dataset_name: str, workspace: str, counts: Counter[str], min_annotators: int) -> AlignkitError:
    """A pull with no rated record to read (nobody has submitted yet, or too few per record): an empty pairs file
    would only fail later, in `reward` or `dpo`, as "no rows"."""
    where = f"dataset {dataset_name!r} in workspace {workspace!r}"
    if counts["below_min_annotators"]:
        return AlignkitError(
            f"{where}: each of its {counts['below_min_annotators']} rated records has fewer submitted ratings than "
            f"{option('min_annotators')} {min_annotators}",
            f"wait for more annotators, or lower {option('min_annotators')}",
        )
    return AlignkitError(
        f"{where}: none of its {counts['records']} records has a submitted rating yet, so there are no pairs to pull",
        "rate them first (`alignkit serve` for the annotate app, or `alignkit feedback simulate`), then pull again",
    )


def check_decided(result: PullResult, workspace: str, min_agreement: float) -> None:
    """Refuse a pull that decided no pair, each comparison a tie or split (evenly, or below `--min-agreement`),
    before a pairs file is written: an empty one would only fail later, in `reward` or `dpo`, as "no rows". (The demo
    reads `pull`'s result itself: a later round of ties adds no pairs to the earlier rounds'.)"""
    summary = result.summary
    ties, split = summary["ties"], summary["dropped_low_agreement"]
    if result.pairs or not (ties or split):
        return
    if not split:
        found = f"are all ties ({ties} comparisons rated as no difference)"
    else:
        parts = [f"{ties} comparisons rated as no difference"] * bool(ties)
        below = f" or below {option('min_agreement')} {min_agreement}" if min_agreement else ""
        parts.append(f"{split} split evenly{below} between annotators")
        found = f"decided no comparison ({', '.join(parts)})"
    fix = "rate more records, or generate candidates that differ more (e.g. a higher --temperature) and push them as a "
    fix += "new round, then pull again"
    if split:
        lower = f"lower {option('min_agreement')} (the share of annotators who must agree), " if min_agreement else ""
        fix = f"have one more annotator rate the split records, {lower}or {fix}"
    raise AlignkitError(
        f"dataset {summary['dataset']!r} in workspace {workspace!r}: its {summary['rated_records']} rated records "
        f"{found}, so there are no pairs to pull",
        fix,
    )


def best_vs_worst(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One pair per record (per prompt for rows without `record_id`): the widest margin, ties never; for a ranking
    that is the best candidate against the worst. Preference training on these sees the rule's clearest signal, one
    example per prompt, rather than every ordered pair of the same few candidates (correlated, some nearly equal)."""

    def width(pair: dict[str, Any]) -> tuple[float, float]:
        return pair.get("margin", 0), pair.get("agreement", 1)

    widest: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        if pair.get("tie"):
            continue
        key = str(pair.get("record_id") or json.dumps(pair["prompt"], sort_keys=True))
        if key not in widest or width(pair) > width(widest[key]):
            widest[key] = pair
    return list(widest.values())


def pull_review(
    dataset_name: str, workspace: str = "alignkit", client: Any = None, min_reviews: int = 1
) -> list[dict[str, Any]]:
    """The accepted rows of a review round as SFT rows: accepted by a majority of its submitted reviews (a tie is not
    acceptance), with the accepting reviewers' edited response (the most common, if they differ) replacing the
    original. Each row keeps its `synth` provenance and gains `review` (record id, votes, reviewers, edited)."""
    dataset = find_dataset(client or connect(), dataset_name, workspace)
    names = usernames(dataset)
    if not schema.is_review(dataset.settings):
        raise AlignkitError(f"dataset {dataset_name!r} is not a review round", "use `feedback pull` for ratings")
    accepted = []
    for record in dataset.records(with_responses=True):
        answers: dict[str, dict[str, Any]] = defaultdict(dict)
        for response in record.responses:
            if str(response.status) in ("submitted", "ResponseStatus.submitted"):
                answers[str(response.user_id)][response.question_name] = response.value
        verdicts = {user: a.get(schema.REVIEW) for user, a in answers.items() if a.get(schema.REVIEW)}
        accepts = [user for user, verdict in verdicts.items() if verdict == "accept"]
        if len(verdicts) < min_reviews or 2 * len(accepts) <= len(verdicts):
            continue
        row = json.loads(record.metadata.get("row") or "null") or {
            "messages": [
                {"role": "user", "content": record.fields["prompt"]},
                {"role": "assistant", "content": record.fields["response"]},
            ]
        }
        original = row["messages"][-1]["content"]
        edits = [review_edit(str(answers[user].get(schema.EDITED_RESPONSE) or ""), original) for user in accepts]
        edits = [edit[schema.EDITED_RESPONSE] for edit in edits if edit]  # the response unchanged is no edit
        final = Counter(edits).most_common(1)[0][0] if edits else original
        row["messages"] = [*row["messages"][:-1], {"role": "assistant", "content": final}]
        row["review"] = {
            "dataset": dataset_name,
            "record_id": str(record.id),
            "accepts": len(accepts),
            "rejects": len(verdicts) - len(accepts),
            "reviewers": sorted(names.get(user, user) for user in verdicts),
            "edited": bool(edits),
        }
        accepted.append(row)
    return accepted
