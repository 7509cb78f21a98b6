"""Shared fixtures for integration tests: one real local Argilla server per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from alignkit.feedback import server


@pytest.fixture(scope="session")
def argilla_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[server.LocalArgilla]:
    """A LocalArgilla on a free 127.0.0.1 port, data in a temp dir (the server venv is the shared one)."""
    with server.start(data_dir=tmp_path_factory.mktemp("argilla-data")) as argilla:
        yield argilla
