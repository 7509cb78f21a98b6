"""A durable local outbox for annotators' answers while Argilla is unreachable: no rating is lost to an outage.

The annotate app saves an answer to Argilla directly; when Argilla cannot be reached it stores the answer here
instead (one SQLite row, committed with `synchronous=FULL` before the app says "saved") and sends the outbox as soon
as Argilla answers again.

Exactly once: Argilla stores one response per (record, user) and the endpoint the app uses is an upsert, so sending
the same answer twice leaves one response. The outbox keeps one row per (server, user, record) — a newer answer to the
same record replaces the queued one, as it would in Argilla — and a row is deleted only after Argilla confirmed it. A
crash between the two resends that row, which replaces the response with the same values: never a duplicate.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.feedback.client import AnnotatorSession, ArgillaUnavailable
from alignkit.paths import cache_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    url TEXT NOT NULL,
    username TEXT NOT NULL,
    record_id TEXT NOT NULL,
    status TEXT NOT NULL,
    answer TEXT NOT NULL,
    queued REAL NOT NULL,
    error TEXT,
    PRIMARY KEY (url, username, record_id)
)
"""

# Turning a new file to WAL needs it to itself: the app's sessions are threads of one process, so they take turns.
_CREATE_LOCK = threading.Lock()


def default_path() -> Path:
    """`$ALIGNKIT_OUTBOX`, else `annotate-outbox.sqlite` in alignkit's cache dir."""
    return Path(os.environ.get("ALIGNKIT_OUTBOX") or cache_dir() / "annotate-outbox.sqlite").expanduser()


@dataclass(frozen=True)
class Queued:
    """One answer waiting for Argilla."""

    record_id: str
    status: str
    values: dict[str, Any]
    error: str | None = None


@dataclass
class FlushResult:
    sent: int
    pending: int
    failed: list[Queued]  # refused by Argilla (e.g. the record was deleted): kept, with the reason, for a human


class OfflineQueue:
    """The outbox of one annotator on one Argilla server, in a SQLite file shared by every app session."""

    def __init__(self, url: str, username: str, path: Path | None = None) -> None:
        self.url, self.username = url, username
        self.path = Path(path or default_path())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _CREATE_LOCK, closing(sqlite3.connect(self.path, timeout=30)) as db:
            db.execute("PRAGMA journal_mode=WAL")  # stored in the file: every later connection uses it
            db.execute(SCHEMA)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed (and on disk) on leaving the block, rolled back on an error.

        `BEGIN IMMEDIATE` takes the write lock up front, waiting up to 30 s for it; a deferred transaction that reads
        and then writes can instead fail at once with "database is locked" when another writer holds the file.
        """
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def put(self, record_id: str, values: dict[str, Any], status: str) -> None:
        """Store an answer durably; a newer answer to the same record replaces the queued one."""
        with self.connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO outbox (url, username, record_id, status, answer, queued, error)"
                " VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (self.url, self.username, record_id, status, json.dumps(values), time.time()),
            )

    def items(self) -> list[Queued]:
        """Queued answers, oldest first."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT record_id, status, answer, error FROM outbox WHERE url = ? AND username = ? ORDER BY queued",
                (self.url, self.username),
            ).fetchall()
        return [Queued(record_id, status, json.loads(answer), error) for record_id, status, answer, error in rows]

    def record_ids(self) -> set[str]:
        return {item.record_id for item in self.items()}

    def __len__(self) -> int:
        with self.connect() as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM outbox WHERE url = ? AND username = ?", (self.url, self.username)
            ).fetchone()
        return count

    def flush(self, session: AnnotatorSession) -> FlushResult:
        """Send queued answers oldest first, deleting each once Argilla stored it; stop at the first outage.

        Raises nothing for an outage: what is left stays queued (`pending`).
        """
        sent, failed = 0, []
        for item in self.items():
            try:
                session.respond(item.record_id, item.values, item.status)
            except ArgillaUnavailable:
                break
            except AlignkitError as exc:  # refused for good: keep it visible instead of retrying forever
                failed.append(Queued(item.record_id, item.status, item.values, exc.message))
                self.mark_failed(item.record_id, exc.message)
                continue
            self.remove(item.record_id, item.status, item.values)
            sent += 1
        return FlushResult(sent=sent, pending=len(self) - len(failed), failed=failed)

    def remove(self, record_id: str, status: str, values: dict[str, Any]) -> None:
        """Delete a sent row, unless a newer answer replaced it meanwhile (that one still has to go)."""
        with self.connect() as db:
            db.execute(
                "DELETE FROM outbox WHERE url = ? AND username = ? AND record_id = ? AND status = ? AND answer = ?",
                (self.url, self.username, record_id, status, json.dumps(values)),
            )

    def mark_failed(self, record_id: str, error: str) -> None:
        with self.connect() as db:
            db.execute(
                "UPDATE outbox SET error = ? WHERE url = ? AND username = ? AND record_id = ?",
                (error, self.url, self.username, record_id),
            )
