"""The embedded Argilla server: process hygiene, and the contract alignkit relies on through the real SDK.

Annotators use only what the Argilla UI uses: a password login (`/api/v1/token`), their own API key from
`/api/v1/me`, their queue from `/api/v1/me/datasets/{id}/records/search`, and response submission.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import argilla as rg
import httpx
import psutil
import pytest

from alignkit import processes
from alignkit.errors import AlignkitError
from alignkit.feedback import server
from tests.conftest import run_cli

pytestmark = pytest.mark.argilla

ANNOTATOR = {"username": "annotator-1", "password": "annotator-1-password"}
PENDING_FOR_ME = {
    "filters": {
        "and": [{"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": ["pending"]}]
    }
}
RECORDS = [
    {"id": "r1", "prompt": "Explain photosynthesis.", "topic": "science"},
    {"id": "r2", "prompt": "Write a haiku about autumn leaves.", "topic": "poetry"},
    {"id": "r3", "prompt": "What is the boiling point of water?", "topic": "science"},
    {"id": "r4", "prompt": "Summarise the French revolution (法国大革命).", "topic": "history"},
    {"id": "r5", "prompt": "Give me a recipe for pancakes.", "topic": "cooking"},
]


def preference_settings(min_submitted: int) -> rg.Settings:
    return rg.Settings(
        fields=[
            rg.TextField(name="prompt"),
            rg.TextField(name="candidate_a"),
            rg.TextField(name="candidate_b"),
        ],
        questions=[
            rg.LabelQuestion(name="preferred", labels=["a", "b", "tie"]),
            rg.RatingQuestion(name="quality", values=[1, 2, 3, 4, 5]),
            rg.TextQuestion(name="rationale", required=False),
        ],
        metadata=[rg.TermsMetadataProperty(name="topic")],
        distribution=rg.TaskDistribution(min_submitted=min_submitted),
    )


def log_records(dataset: rg.Dataset, records: list[dict]) -> None:
    dataset.records.log(
        [record | {"candidate_a": f"A answer to {record['id']}", "candidate_b": "B answer"} for record in records]
    )


def login(url: str, username: str, password: str) -> httpx.Client:
    """What an annotator's app does: password -> session token -> the user's own API key."""
    token = httpx.post(f"{url}/api/v1/token", data={"username": username, "password": password})
    token.raise_for_status()
    me = httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    me.raise_for_status()
    return httpx.Client(base_url=url, headers={"X-Argilla-Api-Key": me.json()["api_key"]})


def my_records(annotator: httpx.Client, dataset_id: object, body: dict) -> list[dict]:
    found = annotator.post(
        f"/api/v1/me/datasets/{dataset_id}/records/search", params={"include": ["responses"]}, json=body
    )
    found.raise_for_status()
    return [item["record"] for item in found.json()["items"]]


def submit(session: httpx.Client, record_id: str, preferred: str, quality: int) -> None:
    values = {
        "preferred": {"value": preferred},
        "quality": {"value": quality},
        "rationale": {"value": "clearer"},
    }
    created = session.post(f"/api/v1/records/{record_id}/responses", json={"values": values, "status": "submitted"})
    created.raise_for_status()


def external_ids(records: object) -> set[str]:
    return {record.id for record in records}


@pytest.fixture(scope="module")
def owner(argilla_server: server.LocalArgilla) -> rg.Argilla:
    return rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)


@pytest.fixture(scope="module")
def feedback_round(argilla_server: server.LocalArgilla, owner: rg.Argilla) -> SimpleNamespace:
    """A workspace, an annotator in it, and a 5-record preference dataset needing 2 submissions per record."""
    workspace = rg.Workspace(name="feedback", client=owner).create()
    annotator = rg.User(role="annotator", client=owner, **ANNOTATOR).create()
    annotator.add_to_workspace(workspace)
    dataset = rg.Dataset(name="round-1", workspace=workspace, settings=preference_settings(2), client=owner)
    dataset.create()
    log_records(dataset, RECORDS)
    return SimpleNamespace(dataset=dataset, annotator=annotator)


@pytest.fixture(scope="module")
def submitted(argilla_server: server.LocalArgilla, feedback_round: SimpleNamespace) -> SimpleNamespace:
    """The annotator has submitted one response, on record r1, through the REST API."""
    session = login(argilla_server.url, **ANNOTATOR)
    queue = my_records(session, feedback_round.dataset.id, PENDING_FOR_ME)
    record = next(record for record in queue if record["external_id"] == "r1")
    submit(session, record["id"], preferred="a", quality=4)
    return SimpleNamespace(session=session, record_id=record["id"])


def listening_addresses(argilla: server.LocalArgilla) -> list[tuple[str, int]]:
    processes = [psutil.Process(record["pid"]) for record in server.status(argilla.data_dir)["processes"]]
    processes += [child for process in processes for child in process.children(recursive=True)]
    return [
        (conn.laddr.ip, conn.laddr.port)
        for process in processes
        for conn in process.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]


def test_server_answers_and_listens_on_loopback_only(argilla_server: server.LocalArgilla) -> None:
    state = server.status(argilla_server.data_dir)
    assert state["healthy"] and state["url"] == argilla_server.url
    assert {process["name"] for process in state["processes"]} == {"redis", "server", "worker"}
    assert httpx.get(argilla_server.url + "/").status_code == 200  # the bundled web UI

    addresses = listening_addresses(argilla_server)
    assert (processes.LOOPBACK, state["port"]) in addresses
    assert all(ip == processes.LOOPBACK for ip, _ in addresses), addresses


def test_start_refuses_a_busy_port_and_a_running_data_dir(argilla_server: server.LocalArgilla, tmp_path: Path) -> None:
    port = server.status(argilla_server.data_dir)["port"]
    with pytest.raises(AlignkitError, match="already in use"):
        server.start(data_dir=tmp_path, port=port)
    with pytest.raises(AlignkitError, match="already running"):
        server.start(data_dir=argilla_server.data_dir)


def test_a_server_of_another_data_dir_says_how_other_shells_reach_it(argilla_server: server.LocalArgilla) -> None:
    """Feedback commands look for the local server in the default data dir only: one started with `--data-dir` gave
    "no local server is running" in every other shell, and nothing said what to set (without printing its key)."""
    no_remote = {"ARGILLA_API_URL": "", "ARGILLA_API_KEY": "", "ALIGNKIT_ARGILLA_DATA_DIR": ""}
    status = run_cli("feedback", "server", "status", "--data-dir", str(argilla_server.data_dir), env=no_remote)
    assert status.returncode == 0, status.stderr
    export = next(line for line in status.stderr.splitlines() if "export " in line)  # the console is stderr
    name, value = export.split("export ", 1)[1].split("=", 1)
    assert Path(value) == argilla_server.data_dir.resolve()
    users = run_cli("feedback", "users", "list", env=no_remote | {name: value})
    assert users.returncode == 0 and "owner" in users.stdout + users.stderr, users.stderr
    assert argilla_server.api_key not in status.stdout + status.stderr + users.stdout + users.stderr


def test_annotator_gets_own_api_key_from_password(
    argilla_server: server.LocalArgilla, feedback_round: SimpleNamespace
) -> None:
    session = login(argilla_server.url, **ANNOTATOR)
    me = session.get("/api/v1/me").json()
    assert me["username"] == ANNOTATOR["username"] and me["role"] == "annotator"
    assert [dataset["name"] for dataset in session.get("/api/v1/me/datasets").json()["items"]] == ["round-1"]
    # the admin listing the SDK uses is closed to annotators, which is why apps use /me/.../search
    listing = session.get(f"/api/v1/datasets/{feedback_round.dataset.id}/records")
    assert listing.status_code == 403


def test_annotator_queue_shrinks_after_a_submission(
    feedback_round: SimpleNamespace, submitted: SimpleNamespace
) -> None:
    pending = my_records(submitted.session, feedback_round.dataset.id, PENDING_FOR_ME)
    assert sorted(record["external_id"] for record in pending) == ["r2", "r3", "r4", "r5"]

    everything = my_records(submitted.session, feedback_round.dataset.id, {})
    answered = [record for record in everything if record["responses"]]
    assert [record["external_id"] for record in answered] == ["r1"]


def test_owner_sees_the_annotator_response_through_the_sdk(
    feedback_round: SimpleNamespace, submitted: SimpleNamespace
) -> None:
    records = {record.id: record for record in feedback_round.dataset.records(with_responses=True)}
    assert set(records) == {"r1", "r2", "r3", "r4", "r5"}
    responses = records["r1"].responses
    assert [response.value for response in responses["preferred"]] == ["a"]
    assert [response.value for response in responses["quality"]] == [4]
    assert {response.user_id for response in responses} == {feedback_round.annotator.id}
    assert records["r1"].status == "pending"  # min_submitted=2: one submission is not enough
    assert all(len(records[name].responses) == 0 for name in ("r2", "r3", "r4", "r5"))


def test_search_by_text_metadata_and_response_status(
    feedback_round: SimpleNamespace, submitted: SimpleNamespace
) -> None:
    dataset = feedback_round.dataset
    assert external_ids(dataset.records(query=rg.Query(query="photosynthesis"))) == {"r1"}
    assert external_ids(dataset.records(query=rg.Query(query="water boiling"))) == {"r3"}
    assert external_ids(dataset.records(query=rg.Query(query="haiku | pancakes"))) == {"r2", "r5"}
    assert external_ids(dataset.records(query=rg.Query(query="answer -r4"))) == {"r1", "r2", "r3", "r5"}
    assert external_ids(dataset.records(query=rg.Query(query="革命"))) == {"r4"}  # a word inside unspaced Chinese
    assert external_ids(dataset.records(query=rg.Query(filter=("metadata.topic", "==", "science")))) == {
        "r1",
        "r3",
    }
    submitted_records = dataset.records(query=rg.Query(filter=("response.status", "==", "submitted")))
    assert external_ids(submitted_records) == {"r1"}
    science_with_water = rg.Query(query="water", filter=("metadata.topic", "in", ["science", "poetry"]))
    assert external_ids(dataset.records(query=science_with_water)) == {"r3"}

    topic_metrics = httpx.get(
        f"{dataset._client.api_url}/api/v1/metadata-properties/{dataset.settings.metadata['topic'].id}/metrics",
        headers={"X-Argilla-Api-Key": dataset._client.api_key},
    ).json()
    assert topic_metrics["total"] == 5 and topic_metrics["values"][0] == {"term": "science", "count": 2}


def test_sqlite_engine_sorts_and_searches_by_suggestion_and_vector(
    argilla_server: server.LocalArgilla, owner: rg.Argilla, feedback_round: SimpleNamespace
) -> None:
    settings = rg.Settings(
        fields=[rg.TextField(name="prompt")],
        questions=[rg.LabelQuestion(name="preferred", labels=["a", "b"])],
        metadata=[rg.IntegerMetadataProperty(name="length")],
        vectors=[rg.VectorField(name="embedding", dimensions=2)],
    )
    dataset = rg.Dataset(name="engine-check", workspace="feedback", settings=settings, client=owner).create()
    dataset.records.log(
        [
            rg.Record(
                id=f"e{i}",
                fields={"prompt": f"prompt {i}"},
                metadata={"length": 10 * i},
                vectors={"embedding": [1.0, float(i)]},
                suggestions=[rg.Suggestion("preferred", "ab"[i % 2], score=i / 10, agent="rm")],
            )
            for i in range(4)
        ]
    )
    by_suggestion = rg.Query(filter=[("preferred", "==", "b"), ("preferred.score", ">=", 0.2)])
    assert external_ids(dataset.records(query=by_suggestion)) == {"e3"}
    assert external_ids(dataset.records(query=rg.Query(filter=("metadata.length", "<=", 15)))) == {"e0", "e1"}
    similar = dataset.records(query=rg.Query(similar=rg.Similar("embedding", [1.0, 3.2])), limit=2)
    assert [record.id for record, _ in similar] == ["e3", "e2"]

    session = httpx.Client(base_url=argilla_server.url, headers={"X-Argilla-Api-Key": argilla_server.api_key})
    longest_first = {"sort": [{"scope": {"entity": "metadata", "metadata_property": "length"}, "order": "desc"}]}
    found = session.post(f"/api/v1/datasets/{dataset.id}/records/search", json=longest_first).json()
    assert [item["record"]["external_id"] for item in found["items"]] == ["e3", "e2", "e1", "e0"]


def test_worker_updates_record_status_when_distribution_changes(
    argilla_server: server.LocalArgilla, owner: rg.Argilla, feedback_round: SimpleNamespace
) -> None:
    """Lowering min_submitted runs an RQ job in the worker process, which updates the shared search index."""
    dataset = rg.Dataset(name="worker-check", workspace="feedback", settings=preference_settings(2), client=owner)
    dataset.create()
    log_records(dataset, RECORDS[:2])
    session = httpx.Client(base_url=argilla_server.url, headers={"X-Argilla-Api-Key": argilla_server.api_key})
    record = my_records(session, dataset.id, {})[0]
    submit(session, record["id"], preferred="b", quality=2)
    completed = rg.Query(filter=("status", "==", "completed"))
    assert external_ids(dataset.records(query=completed)) == set()

    session.patch(f"/api/v1/datasets/{dataset.id}", json={"distribution": {"strategy": "overlap", "min_submitted": 1}})
    deadline = time.monotonic() + 30
    while not external_ids(dataset.records(query=completed)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert external_ids(dataset.records(query=completed)) == {record["external_id"]}


def start_in_child_process(data_dir: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """Start a server from another python process; return that process and every process the server runs."""
    script = (
        "import json, sys; from alignkit.feedback import server; "
        f"argilla = server.start(data_dir={str(data_dir)!r}); "
        "print(json.dumps(server.status(argilla.data_dir)), flush=True); sys.stdin.read()"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    state = json.loads(parent.stdout.readline())
    assert state["healthy"]
    leaders = [psutil.Process(record["pid"]) for record in state["processes"]]
    return parent, leaders + [child for leader in leaders for child in leader.children(recursive=True)]


def assert_all_gone(processes: list[psutil.Process], timeout_s: float = 15) -> None:
    """Every process has exited (a zombie left for its own parent to reap counts as exited)."""
    deadline = time.monotonic() + timeout_s
    while (alive := [process for process in processes if running(process)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, [process.cmdline() for process in alive]


def running(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.NoSuchProcess):
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    return False


def test_stop_from_another_shell_ends_the_server_and_its_start_command(tmp_path: Path) -> None:
    start = subprocess.Popen(
        [sys.executable, "-m", "alignkit.cli", "feedback", "server", "start", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (state := server.status(tmp_path)) or not state["healthy"]:
        assert start.poll() is None and time.monotonic() < deadline, start.stdout.read() if start.stdout else ""
        time.sleep(0.5)
    leaders = [psutil.Process(record["pid"]) for record in state["processes"]]
    processes = leaders + [child for leader in leaders for child in leader.children(recursive=True)]

    assert server.stop(tmp_path) is True  # what `alignkit feedback server stop` does in the other shell
    assert_all_gone(processes)
    assert server.status(tmp_path) is None
    assert server.stop(tmp_path) is False
    output, _ = start.communicate(timeout=30)  # the shell that started it gets its prompt back, saying why
    assert start.returncode == 0, output
    assert "Argilla stopped" in output


def test_sigterm_to_the_starting_process_stops_its_server(tmp_path: Path) -> None:
    parent, processes = start_in_child_process(tmp_path)
    os.kill(parent.pid, signal.SIGTERM)
    parent.wait(timeout=30)
    assert_all_gone(processes)
    assert server.status(tmp_path) is None
