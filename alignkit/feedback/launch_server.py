"""Entry script for the local Argilla's processes, run by the *server* virtualenv's python (not alignkit's).

    python launch_server.py redis  --port P     an in-memory Redis (fakeredis) on 127.0.0.1:P
    python launch_server.py server --port P     migrations, owner user, then Argilla's API + UI on 127.0.0.1:P
    python launch_server.py worker              one RQ worker for Argilla's background jobs

Settings come from the environment that alignkit/feedback/server.py builds (ARGILLA_* variables; the owner's
credentials in ALIGNKIT_ARGILLA_OWNER_*, kept off the command line so `ps` does not show them).
argilla_server's own CLI (`python -m argilla_server ...`) cannot be used: it crashes with the current
click ("Secondary flag is not valid for non-boolean flag"), so migrations and user creation are done here.

Every process watches its parent (the alignkit process that started it) and takes its whole process group down
when that parent is gone, so a killed notebook or test run leaves no server behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
PARENT_POLL_S = 1.0
GRACEFUL_EXIT_S = 5.0
REDIS_WAIT_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["redis", "server", "worker"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    watch_parent(os.getppid())
    if args.role == "redis":
        run_redis(args.port)
    else:
        load_search_engine()
        if args.role == "server":
            run_server(args.port)
        else:
            run_worker()


def watch_parent(parent_pid: int) -> None:
    """Stop this process group once the parent exits (it is re-parented, so getppid changes)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os.killpg(os.getpgrp(), signal.SIGTERM)
        time.sleep(GRACEFUL_EXIT_S)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def load_search_engine() -> None:
    """Import search_engine.py from beside this file, which registers the SQLite engine with argilla_server.

    Loaded by path (not via sys.path[0], which is removed) so alignkit's other modules here shadow nothing.
    """
    here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != here]
    spec = importlib.util.spec_from_file_location("alignkit_argilla_search_engine", here / "search_engine.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


def run_redis(port: int) -> None:
    from fakeredis import TcpFakeServer
    from fakeredis._clients._tcp_server import TCPFakeRequestHandler
    from redis.exceptions import ResponseError

    class KeepConnectionOnErrorReply(TCPFakeRequestHandler):
        """fakeredis's TCP handler closes the connection after any error reply. RQ's worker sends INFO, which
        fakeredis lacks, expects the error and goes on with the same connection: answer it, stay open.
        """

        def setup(self) -> None:
            super().setup()
            read_response = self.current_client.read_response

            def read_response_or_error(*args: object, **kwargs: object) -> object:
                try:
                    return read_response(*args, **kwargs)
                except ResponseError as error:
                    return error  # written back to the client as `-ERR ...`, as a real Redis would

            self.current_client.read_response = read_response_or_error

    server = TcpFakeServer((LOOPBACK, port), server_type="redis")
    server.RequestHandlerClass = KeepConnectionOnErrorReply
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # in-memory: nothing to flush, no threads to wait for
    print(f"fakeredis listening on {LOOPBACK}:{port}", flush=True)
    server.serve_forever()


def run_server(port: int) -> None:
    import uvicorn

    migrate_database()
    asyncio.run(
        ensure_owner(
            username=os.environ["ALIGNKIT_ARGILLA_OWNER_USERNAME"],
            password=os.environ["ALIGNKIT_ARGILLA_OWNER_PASSWORD"],
            api_key=os.environ["ALIGNKIT_ARGILLA_OWNER_API_KEY"],
        )
    )
    uvicorn.run("argilla_server:app", host=LOOPBACK, port=port, log_level="info")


def migrate_database() -> None:
    """`alembic upgrade head` with argilla_server's own alembic configuration (what its CLI would run)."""
    from alembic import command
    from alembic.config import Config
    from argilla_server.database import ALEMBIC_CONFIG_FILE

    command.upgrade(Config(ALEMBIC_CONFIG_FILE), "head")
    # WAL (kept in the database file): annotators' searches read while another annotator's answer is being written.
    with contextlib.closing(sqlite3.connect(Path(os.environ["ARGILLA_HOME_PATH"]) / "argilla.db")) as db:
        db.execute("PRAGMA journal_mode=WAL")


async def ensure_owner(username: str, password: str, api_key: str) -> None:
    """Create the owner user, or reset an existing one to these credentials (start()'s caller decides)."""
    from argilla_server.contexts import accounts
    from argilla_server.database import AsyncSessionLocal, async_engine
    from argilla_server.models import User, UserRole

    async with AsyncSessionLocal() as session:
        user = await accounts.get_user_by_username(session, username)
        if user is None:
            await User.create(
                session,
                first_name=username,
                username=username,
                role=UserRole.owner,
                password_hash=accounts.hash_password(password),
                api_key=api_key,
            )
            print(f"created owner user {username!r}", flush=True)
        elif (
            user.role != UserRole.owner
            or user.api_key != api_key
            or not accounts.verify_password(password, user.password_hash)
        ):
            user.role = UserRole.owner
            user.api_key = api_key
            user.password_hash = accounts.hash_password(password)
            await session.commit()
            print(f"updated owner user {username!r} to the requested credentials", flush=True)
    await async_engine.dispose()  # its pooled connections belong to this event loop, not uvicorn's


def run_worker() -> None:
    from argilla_server.jobs.queues import DEFAULT_QUEUE, HIGH_QUEUE, REDIS_CONNECTION
    from redis.exceptions import ConnectionError as RedisConnectionError
    from rq import Worker

    deadline = time.monotonic() + REDIS_WAIT_S
    while True:
        try:
            REDIS_CONNECTION.ping()
            break
        except RedisConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    Worker([HIGH_QUEUE, DEFAULT_QUEUE], connection=REDIS_CONNECTION).work()


if __name__ == "__main__":
    main()
