"""`alignkit feedback push`: candidates from `alignkit generate` -> one Argilla dataset per collection round."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from alignkit import runs
from alignkit.data.formats import (
    NO_TOOLS_HERE,
    RowError,
    detect_chat_format,
    message_list,
    read_rows,
    to_messages,
)
from alignkit.data.validate import convert_all
from alignkit.errors import AlignkitError, from_python, option
from alignkit.feedback import argilla_schema as schema
from alignkit.feedback import ordering
from alignkit.feedback.client import connect
from alignkit.jsonl import prompt_id

logger = logging.getLogger("alignkit")


def load_candidates(path: str) -> list[dict[str, Any]]:
    """Rows `{"prompt": [messages], "candidates": [{"text", ...}, ...]}`, validated whole. A candidate's `run` is read
    as a path in a file is (`runs.policy_from_file`: relative to the file's folder where typed by hand; `generate`
    writes it absolute) and recorded absolute with the run's `run_id`, so `feedback pull` finds the run from any
    folder; one that leads to no run (a name of the user's own) is recorded as written, with a warning where it looks
    like a path (`warn_of_paths_to_no_run`)."""
    file_rows = list(read_rows(path, "candidates_file"))
    rows = convert_all(file_rows, candidate_row, "rows from `alignkit generate`: {prompt, candidates: [{text}]}")
    found = policy_finder(path)
    named = [
        (row.where, f"candidates[{i}].run", candidate)
        for row in file_rows
        for i, candidate in enumerate(row.data["candidates"])
        if candidate.get("run")
    ]
    warn_of_paths_to_no_run(named, found)
    for row in rows:
        row["candidates"] = [c | (found(c) or {}) if c.get("run") else c for c in row["candidates"]]
    return rows


def policy_finder(path: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """For the data file at `path`: the run (absolute `run`, its `run_id`) that an entry's `run` (and `run_id`) leads
    to, read as `runs.policy_reader` reads a file's paths, or None where it leads to no run."""
    policy = runs.policy_reader(path)

    def found(entry: dict[str, Any]) -> dict[str, Any] | None:
        named = policy({key: entry[key] for key in ("run", "run_id") if entry.get(key)})
        return named if (Path(named["run"]) / "manifest.json").is_file() else None

    return found


def warn_of_paths_to_no_run(
    named: list[tuple[str, str, dict[str, Any]]], found: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> None:
    """One warning per `run` value that looks like a path (`runs.looks_like_path`) and leads to no run (a run path
    mistyped would label the rows with no policy), naming its first row and field; a label such as "gpt-4o" is a
    policy name of the user's own and passes. `named`: (row's place, field, the entry holding `run`)."""
    missing: dict[str, list[str]] = {}
    for where, field, entry in named:
        if runs.looks_like_path(entry["run"]) and found(entry) is None:
            missing.setdefault(entry["run"], []).append(f"{where}: field `{field}`")
    for run, places in missing.items():
        more = {1: "", 2: " (and once more in the file)"}.get(
            len(places), f" (and {len(places) - 1} more times in the file)"
        )
        logger.warning(
            "%s: %r leads to no run from the file's folder or the working directory%s; pushed as written (fix the "
            "path to label the rows with their run)",
            places[0],
            run,
            more,
        )


def candidate_row(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("tools") not in (None, "", []):  # never dropped: the pairs pulled would train without them
        raise RowError(
            "tools", f"prompts with tools are not rated: annotators are not shown the tools ({NO_TOOLS_HERE})"
        )
    prompt = data.get("prompt")
    prompt = (
        [{"role": "user", "content": prompt}]
        if isinstance(prompt, str)
        else message_list(prompt, "prompt", "role", "content", None)
    )
    candidates = data.get("candidates")
    if not isinstance(candidates, list):
        raise RowError("candidates", "missing (expected a list of {text})")
    for i, candidate in enumerate(candidates):
        if not isinstance(candidate, dict) or not isinstance(candidate.get("text"), str):
            raise RowError(f"candidates[{i}].text", "expected a string")
        for key in ("run", "run_id"):
            if candidate.get(key) is not None and not isinstance(candidate[key], str):
                raise RowError(f"candidates[{i}].{key}", f"expected a string, got {type(candidate[key]).__name__}")
    # the same text twice would be shown as two responses, and a choice between them would become a pair of equals
    distinct: dict[str, dict[str, Any]] = {}
    for candidate in candidates:
        distinct.setdefault(candidate["text"], candidate)
    return {
        "prompt_id": data.get("prompt_id") or prompt_id(prompt),
        "prompt": prompt,
        "candidates": list(distinct.values()),
    }


def render_prompt(prompt: list[dict[str, str]]) -> str:
    """The conversation as annotators read it: the last user turn, with earlier turns above it."""
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n\n".join(f"**{m['role']}:** {m['content']}" for m in prompt)


def stable_seed(*parts: object) -> int:
    """An integer seed from any values (string seeds make the first random bits of a 2-way shuffle identical)."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:16], 16)


def round_dataset(client: Any, workspace: str, name: str, append: bool, settings: Callable[[], Any]) -> Any:
    """The round's dataset: created with `settings()` (workspace too, if missing), or reopened with `append`."""
    import argilla as rg

    ws = client.workspaces(workspace) or rg.Workspace(name=workspace, client=client).create()
    dataset = client.datasets(name, workspace=ws)
    if dataset is not None and not append:
        raise AlignkitError(
            f"dataset {name!r} already exists in workspace {workspace!r}",
            f"pass {option('append', True)} or another {option('dataset')}",
        )
    if dataset is None:
        dataset = rg.Dataset(name=name, workspace=ws, settings=settings(), client=client).create()
    return dataset


def record_id(round_number: int, row_prompt_id: str, texts: list[str]) -> str:
    """A record's id from its content: pushing the same candidates again updates their record, while other candidates
    for the same prompt become a record of their own instead of rewriting one annotators already rated."""
    digest = hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:8]
    return f"r{round_number}-{row_prompt_id}-{digest}"


def records_for_round(
    rows: list[dict[str, Any]], n: int, round_number: int, seed: int, scorer: ordering.Scorer | None = None
) -> list[Any]:
    """Argilla records with the candidates in a per-record shuffled order (recorded in metadata `order`); with a
    scorer, also the reward model's pick as metadata `suggested` (shown index) and `suggested_p` (its probability)."""
    import argilla as rg

    records = []
    for row in rows:
        texts = [c["text"] for c in row["candidates"][:n]]
        order = list(range(n))
        random.Random(stable_seed(seed, row["prompt_id"])).shuffle(order)
        fields = {"prompt": render_prompt(row["prompt"])}
        fields |= {schema.candidate_field(shown): texts[original] for shown, original in enumerate(order)}
        sources = [{k: v for k, v in c.items() if k != "text"} for c in row["candidates"][:n]]
        metadata = {
            "round": str(round_number),
            "prompt_id": row["prompt_id"],
            "runs": ",".join(sorted({s.get("run") or s.get("model", "") for s in sources})),
            "order": ",".join(map(str, order)),
            "sampling": json.dumps(sources[0].get("sampling", {}), sort_keys=True),
            "source": json.dumps(sources),
            "prompt_messages": json.dumps(row["prompt"]),
        }
        if scorer is not None:  # score once; the reward model's pre-label is stored, shown only on request
            rewards = scorer(row["prompt"], texts)
            best, p_best = ordering.suggestion(row["prompt"], texts, lambda *_, r=rewards: r)
            metadata |= {"suggested": order.index(best), "suggested_p": round(p_best, 6)}
            metadata["priority"] = round(ordering.priority(row["prompt"], texts, lambda *_, r=rewards: r), 6)
        else:
            metadata["priority"] = round(ordering.priority(row["prompt"], texts), 6)
        records.append(rg.Record(id=record_id(round_number, row["prompt_id"], texts), fields=fields, metadata=metadata))
    return sorted(records, key=lambda r: -r.metadata["priority"])


def push(
    candidates_file: str,
    dataset_name: str,
    workspace: str = "alignkit",
    round_number: int | None = None,
    min_submitted: int = 1,
    seed: int = 0,
    append: bool = False,
    client: Any = None,
    scorer: ordering.Scorer | None = None,
) -> dict[str, Any]:
    """Create the round's dataset (or append to it) and log one record per prompt; returns a summary.

    `round_number=None`: 1 for a new dataset; appending, the dataset's own round, and candidates of another policy
    than the dataset's (a new round's) are refused rather than filed under that round."""
    rows = load_candidates(candidates_file)
    counts = Counter(min(len(r["candidates"]), 8) for r in rows)
    n = max((k for k, v in counts.items() if k >= 2), key=lambda k: (counts[k], k), default=0)
    if n < 2:
        # an option of another command than push (which has no `n`): `generate`'s, `alignkit.candidates`'s
        more = "alignkit.candidates(..., n=2)" if from_python() else "--n 2"
        raise AlignkitError(f"{candidates_file}: no prompt has 2+ distinct candidates", f"generate with {more} or more")
    usable = [r for r in rows if len(r["candidates"]) >= n]
    client = client or connect()
    dataset = round_dataset(
        client, workspace, dataset_name, append, lambda: schema.preference_settings(n, min_submitted)
    )
    shown = schema.n_candidates([f.name for f in dataset.settings.fields])
    if shown != n:  # Argilla would fail on the first record, with a KeyError from the SDK
        kind = "is a review round" if schema.is_review(dataset.settings) else f"shows {shown} candidates per record"
        raise AlignkitError(
            f"dataset {dataset_name!r} {kind}; {candidates_file} has {n} per prompt",
            f"push to a new {option('dataset')}",
        )
    present, rounds, policies = contents_in(dataset, n) if append else (set(), set(), [])
    new_rows = [
        r for r in usable if content_key(r["prompt_id"], [c["text"] for c in r["candidates"][:n]]) not in present
    ]
    if round_number is None:
        new_policies = distinct_policies(s for row in new_rows for s in candidate_sources(row["candidates"][:n]))
        others = [s for s in new_policies if not any(runs.same_policy(s, p) for p in policies)]
        if policies and others:
            theirs, ours = sorted({policy_label(p) for p in policies}), sorted({policy_label(s) for s in others})
            again = " (trained again since it wrote the dataset's)" if set(ours) <= set(theirs) else ""
            raise AlignkitError(
                f"{candidates_file} holds candidates of {', '.join(ours)}{again}; dataset {dataset_name!r} holds "
                f"those of {', '.join(theirs)}: another policy's candidates are another round, and these would be "
                "filed (and pulled) as its round",
                f"push them to a new {option('dataset')} with {option('round_number', max(rounds, default=1) + 1)}, "
                f"or pass {option('round_number')} to add them to this dataset as that round",
            )
        round_number = max(rounds, default=1)
    if new_rows:
        dataset.records.log(records_for_round(new_rows, n, round_number, seed, scorer))
    return {
        "dataset": dataset_name,
        "workspace": workspace,
        "round": round_number,
        "records": len(new_rows),
        "already_in_dataset": len(usable) - len(new_rows),
        "skipped_fewer_candidates": len(rows) - len(usable),
        "candidates_per_record": n,
        "min_submitted": dataset.settings.distribution.min_submitted,
    }


def content_key(row_prompt_id: str, texts: list[str]) -> tuple[str, frozenset[str]]:
    """What makes two records the same question to an annotator: the prompt and the set of candidates, in any order."""
    return row_prompt_id, frozenset(texts)


def candidate_sources(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Who wrote these candidates, as `generate` records it (`runs.policy_source`: run path and id, else model);
    unknown ones left out."""
    return [
        {k: c[k] for k in ("run", "run_id", "model") if c.get(k)} for c in candidates if c.get("run") or c.get("model")
    ]


def distinct_policies(sources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """`sources` without repeats."""
    return list({json.dumps(s, sort_keys=True): s for s in sources}.values())


def policy_label(source: dict[str, Any]) -> str:
    """A policy as a message names it: its run's path, else its model."""
    return source.get("run") or source.get("model") or "?"


def contents_in(dataset: Any, n: int) -> tuple[set[tuple[str, frozenset[str]]], set[int], list[dict[str, Any]]]:
    """The content of every record already in a round's dataset, whatever its id (pushing one again would reshuffle
    the candidates under the ratings already given, with another --seed, or, with ids from before they were built
    from content, add a second copy), and the rounds and policies (`candidate_sources`) its records were pushed as."""
    contents, rounds, sources = set(), set(), []
    for record in dataset.records(with_suggestions=False, with_responses=False):
        metadata = record.metadata
        contents.add(content_key(metadata["prompt_id"], [record.fields[schema.candidate_field(i)] for i in range(n)]))
        if str(metadata.get("round") or "").isdigit():
            rounds.add(int(metadata["round"]))
        sources += record_sources(metadata)
    return contents, rounds, distinct_policies(sources)


def record_sources(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """Who wrote a record's candidates (`candidate_sources`), from its metadata `source`; for a record pushed by hand,
    the runs' paths of its metadata `runs` alone."""
    if metadata.get("source"):
        try:
            return candidate_sources(json.loads(metadata["source"]))
        except (ValueError, TypeError, AttributeError):
            pass
    return [{"run": run} for run in filter(None, str(metadata.get("runs") or "").split(","))]


def load_reviewable(path: str) -> list[dict[str, Any]]:
    """Chat rows ending with an assistant turn (e.g. from `alignkit synth`), each with any `synth` provenance, its
    `run` read as a candidates file's is (`load_candidates`): from the file's folder, recorded absolute with the run's
    `run_id` where it leads to a run."""
    file_rows = list(read_rows(path))
    rows = convert_all(file_rows, reviewable_row, "chat rows that end with an assistant turn")
    found = policy_finder(path)
    named = [(row.where, "synth.run", row.data["synth"]) for row in file_rows if row.data.get("synth", {}).get("run")]
    warn_of_paths_to_no_run(named, found)
    for row in rows:
        if row.get("synth", {}).get("run"):
            row["synth"] = row["synth"] | (found(row["synth"]) or {})
    return rows


def reviewable_row(data: dict[str, Any]) -> dict[str, Any]:
    messages = to_messages(data, detect_chat_format(data))
    if messages[-1]["role"] != "assistant":
        raise RowError("messages", "expected the conversation to end with the assistant response to review")
    synth = data.get("synth")
    if synth is None:
        return {"messages": messages}
    if not isinstance(synth, dict):
        raise RowError(
            "synth", f"expected an object (the provenance `alignkit synth` writes), got {type(synth).__name__}"
        )
    for key in ("run", "run_id"):
        if synth.get(key) is not None and not isinstance(synth[key], str):
            raise RowError(f"synth.{key}", f"expected a string, got {type(synth[key]).__name__}")
    return {"messages": messages, "synth": synth}


def review_records(rows: list[dict[str, Any]]) -> list[Any]:
    """One Argilla record per row: the conversation up to the last response, and that response to review."""
    import argilla as rg

    records, seen = [], set()
    for i, row in enumerate(rows):
        record_id = f"review-{prompt_id(row['messages'])}"  # stable: pushing a row again updates its record
        if record_id in seen:
            continue
        seen.add(record_id)
        prompt, response = row["messages"][:-1], row["messages"][-1]["content"]
        metadata = {
            "prompt_id": prompt_id(prompt),
            "priority": float(len(rows) - i),  # reviewed in the file's order
            "row": json.dumps(row, ensure_ascii=False),
        }
        fields = {"prompt": render_prompt(prompt), "response": response}
        records.append(rg.Record(id=record_id, fields=fields, metadata=metadata))
    return records


def push_review(
    synth_file: str,
    dataset_name: str,
    workspace: str = "alignkit",
    client: Any = None,
    min_submitted: int = 1,
    append: bool = False,
) -> dict[str, Any]:
    """A review round: every row's last response is accepted, edited or rejected by annotators; returns a summary."""
    rows = load_reviewable(synth_file)
    client = client or connect()
    dataset = round_dataset(client, workspace, dataset_name, append, lambda: schema.review_settings(min_submitted))
    if not schema.is_review(dataset.settings):
        raise AlignkitError(f"dataset {dataset_name!r} is not a review round", f"choose another {option('dataset')}")
    records = review_records(rows)
    dataset.records.log(records)
    return {
        "dataset": dataset_name,
        "workspace": workspace,
        "records": len(records),
        "duplicates": len(rows) - len(records),
        "min_submitted": min_submitted,
    }
