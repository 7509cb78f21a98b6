"""Argilla access, in one place: the owner/admin client (SDK) and annotator sessions (REST, own credentials).

Where Argilla is: `ARGILLA_API_URL` / `ARGILLA_API_KEY` (any deployment, e.g. Elasticsearch-backed), else the local
server started by `alignkit feedback server start` / `alignkit serve`.

SDK gaps covered here (each has a contract test in tests/integration): `rg.User` exposes no API key, so annotators
log in with username/password at `/api/v1/token` and read their key from `/api/v1/me`; annotators may not list
`dataset.records` (admin endpoint), so their queue comes from `/api/v1/me/datasets/{id}/records/search`, the endpoint
Argilla's own UI uses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from alignkit.errors import AlignkitError, option
from alignkit.feedback import server

TIMEOUT_S = 15.0
RETRY_PAUSES_S = (0.5, 1.0, 2.0)  # a busy server (SQLite write lock, restart) gets a few seconds to answer


class ArgillaUnavailable(AlignkitError):
    """Argilla could not be reached (or answered "unavailable"): retrying later may succeed, nothing was refused."""


PRIORITY = "priority"  # record metadata written by `feedback push` (ordering.priority): higher = rate sooner


def server_location(url: str | None = None, api_key: str | None = None) -> tuple[str, str | None]:
    """(url, api key): explicit values, else the environment, else the local server's state file."""
    url = url or os.environ.get("ARGILLA_API_URL")
    api_key = api_key or os.environ.get("ARGILLA_API_KEY")
    if not url:
        state = server.status()
        if state is None:
            raise AlignkitError(
                "no Argilla server: ARGILLA_API_URL is not set and no local server is running",
                "run `alignkit feedback server start` (or `alignkit serve`), or set ARGILLA_API_URL/ARGILLA_API_KEY "
                "(a server started with --data-dir DIR: export ALIGNKIT_ARGILLA_DATA_DIR=DIR)",
            )
        url, api_key = state["url"], api_key or state.get("api_key")
    return url.rstrip("/"), api_key


def check_reachable(url: str) -> None:
    try:
        httpx.get(f"{url}/api/v1/status", timeout=5.0)
    except httpx.HTTPError as exc:
        raise AlignkitError(
            f"Argilla at {url} is unreachable ({type(exc).__name__})",
            "start it with `alignkit feedback server start`, or fix ARGILLA_API_URL",
        ) from None


def connect(url: str | None = None, api_key: str | None = None) -> Any:
    """An `argilla.Argilla` client for an owner/admin (push, pull, users)."""
    import argilla as rg
    from argilla._exceptions import ArgillaError  # the SDK's base error; `rg` does not export it

    url, api_key = server_location(url, api_key)
    check_reachable(url)
    if not api_key:
        raise AlignkitError(f"no API key for Argilla at {url}", "set ARGILLA_API_KEY (an owner or admin key)")
    try:
        with no_implicit_root_handler():
            client = rg.Argilla(api_url=url, api_key=api_key, timeout=int(TIMEOUT_S))
        client.me  # noqa: B018 — validates the key now, not at the first real call
    except ArgillaError as exc:
        raise AlignkitError(
            f"Argilla at {url} refused the API key ({type(exc).__name__})", "check ARGILLA_API_KEY"
        ) from None
    return client


@contextlib.contextmanager
def no_implicit_root_handler() -> Iterator[None]:
    """The SDK's client logs "Logged in as ..." with the module-level `logging.log`, which calls `basicConfig()` when
    the root logger has no handler: from then on a notebook or script printed every INFO record of alignkit, the
    trainer's per-step dicts included. A handler held on the root for that call keeps logging as the user set it."""
    root = logging.getLogger()
    guard = None if root.handlers else logging.NullHandler()
    if guard is not None:
        root.addHandler(guard)
    try:
        yield
    finally:
        if guard is not None:
            root.removeHandler(guard)


def find_dataset(client: Any, name: str, workspace: str) -> Any:
    """An existing dataset of a workspace; one clear error when either is missing (the SDK fails on a missing
    workspace with an AttributeError)."""
    if client.workspaces(workspace) is None:
        raise AlignkitError(f"no workspace {workspace!r} in Argilla", f"check {option('workspace')}")
    dataset = client.datasets(name, workspace=workspace)
    if dataset is None:
        raise AlignkitError(
            f"no dataset {name!r} in workspace {workspace!r}", f"check {option('dataset')}/{option('workspace')}"
        )
    return dataset


def usernames(dataset: Any) -> dict[str, str]:
    """{user id: username} of the dataset's workspace members, so pairs name their annotators as people know them;
    {} where this key may not list them (an admin of another workspace), and the ids stand."""
    from argilla._exceptions import ArgillaError

    try:
        return {str(user.id): user.username for user in dataset.workspace.users}
    except ArgillaError:
        return {}


@dataclass
class AnnotatorSession:
    """An annotator's own REST session (their API key, their permissions)."""

    url: str
    username: str
    http: httpx.Client

    def datasets(self) -> list[dict[str, Any]]:
        """Datasets in the annotator's workspaces."""
        return self.get("/api/v1/me/datasets")["items"]

    def queue(self, dataset_id: str, status: str = "pending", limit: int = 50) -> list[dict[str, Any]]:
        """Records where this annotator's response has `status` (`pending` = not answered yet, and only records still
        needing answers; `draft`, ...), highest priority first."""
        return self.search(dataset_id, status, limit)["items"]

    def search(self, dataset_id: str, status: str, limit: int) -> dict[str, Any]:
        found = self.request(
            "POST",
            f"/api/v1/me/datasets/{dataset_id}/records/search",
            params={"include": ["responses"], "limit": limit},
            json=queue_query(status),
        )
        return {"total": found["total"], "items": [item["record"] for item in found["items"]]}

    def progress(self, dataset_id: str) -> dict[str, int]:
        """This annotator's counts: submitted, draft, discarded, pending."""
        return self.get(f"/api/v1/me/datasets/{dataset_id}/metrics")["responses"]

    def respond(self, record_id: str, values: dict[str, Any], status: str = "submitted") -> dict[str, Any]:
        """Create or replace this annotator's response (submitted, draft or discarded) to a record.

        Uses the bulk upsert endpoint: `POST /records/{id}/responses` answers 409 once any response exists (a draft).
        """
        item = {"record_id": record_id, "status": status, "values": {k: {"value": v} for k, v in values.items()}}
        result = self.request("POST", "/api/v1/me/responses/bulk", json={"items": [item]})["items"][0]
        if result.get("error"):
            detail = str(result["error"].get("detail"))
            if "Forbidden" in detail:
                raise AlignkitError(f"{self.username} may not access record {record_id}", "ask an owner to add you")
            raise AlignkitError(f"Argilla did not store the answer: {detail}")
        return result["item"]

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call, retried with backoff on a timeout, a dropped connection or a 5xx: every call a session makes
        is a read, a search or an upsert, so sending it twice is harmless. Still failing: `ArgillaUnavailable`."""
        for pause in (*RETRY_PAUSES_S, None):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.ConnectError:  # nothing listens: down, not busy (the app goes offline at once)
                raise ArgillaUnavailable(
                    f"Argilla at {self.url} is unreachable (ConnectError)", "retry later"
                ) from None
            except httpx.HTTPError as exc:
                failure = f"is unreachable ({type(exc).__name__})"
            else:
                if response.status_code < 500:
                    break
                failure = f"failed ({response.status_code}: {response.text[:120]})"
            if pause is None:
                raise ArgillaUnavailable(f"Argilla at {self.url} {failure}", "retry when it is back") from None
            time.sleep(pause)
        if response.status_code == 403:
            raise AlignkitError(f"{self.username} may not access {path}", "ask an owner to add you to the workspace")
        if response.status_code >= 400:
            raise AlignkitError(f"Argilla answered {response.status_code} to {method} {path}: {response.text[:200]}")
        return response.json() if response.content else None


def queue_query(my_status: str) -> dict[str, Any]:
    """Search body: records where this annotator's response has `my_status`, by priority; unanswered ones (`pending`)
    only while they still need answers. A draft stays in its annotator's queue after others complete its record:
    it would otherwise be counted in their sidebar with no way to reach it."""
    mine = {"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": [my_status]}
    needed = {"type": "terms", "scope": {"entity": "record", "property": "status"}, "values": ["pending"]}
    return {
        "filters": {"and": [needed, mine] if my_status == "pending" else [mine]},
        "sort": [{"scope": {"entity": "metadata", "metadata_property": PRIORITY}, "order": "desc"}],
    }


def annotator_session(username: str, password: str, url: str | None = None) -> AnnotatorSession:
    """Log in with an annotator's own credentials (password -> token -> their API key)."""
    url, _ = server_location(url, api_key="unused")
    check_reachable(url)
    token = httpx.post(f"{url}/api/v1/token", data={"username": username, "password": password}, timeout=TIMEOUT_S)
    if token.status_code in (401, 403, 422):
        raise AlignkitError(f"Argilla login failed for {username!r}", "check the username and password")
    token.raise_for_status()
    me = httpx.get(
        f"{url}/api/v1/me",
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        timeout=TIMEOUT_S,
    )
    me.raise_for_status()
    http = httpx.Client(base_url=url, headers={"X-Argilla-Api-Key": me.json()["api_key"]}, timeout=TIMEOUT_S)
    return AnnotatorSession(url=url, username=username, http=http)


def add_user(
    client: Any, username: str, password: str, role: str = "annotator", workspaces: list[str] | None = None
) -> Any:
    """Create an Argilla user (annotator by default) and add it to workspaces (created if missing)."""
    import argilla as rg

    if role not in ("annotator", "admin", "owner"):
        raise AlignkitError(f"role {role!r}: expected annotator, admin or owner")
    if len(password) < 8:
        raise AlignkitError(f"password for {username!r} is too short", "Argilla needs at least 8 characters")
    user = client.users(username) or rg.User(username=username, password=password, role=role, client=client).create()
    for name in workspaces or []:
        workspace = client.workspaces(name) or rg.Workspace(name=name, client=client).create()
        if username not in {u.username for u in workspace.users}:
            user.add_to_workspace(workspace)
    return user


def list_users(client: Any) -> list[dict[str, Any]]:
    """Every user with role and workspaces (never API keys)."""
    member_of: dict[str, list[str]] = {}
    for workspace in client.workspaces:  # the SDK's User has no workspace list; each Workspace lists its users
        for user in workspace.users:
            member_of.setdefault(user.username, []).append(workspace.name)
    return [
        {
            "username": user.username,
            "role": getattr(user.role, "value", str(user.role)),
            "workspaces": member_of.get(user.username, []),
        }
        for user in client.users
    ]


def submitted_answers(record: Any) -> dict[str, dict[str, Any]]:
    """{user id: {question: value}} of a record's submitted responses, as stored on the server.

    Read from the record's API model because the SDK's `record.responses` turns a ranking into a bare list of values,
    dropping the ranks (and with them ties and any order other than best-first).
    """
    answers: dict[str, dict[str, Any]] = {}
    for response in record._model.responses or []:
        if str(response.status) in ("submitted", "ResponseStatus.submitted"):
            answers[str(response.user_id)] = {question: item["value"] for question, item in response.values.items()}
    return answers
