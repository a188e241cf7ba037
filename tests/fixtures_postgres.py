"""Fixtures for the PostgreSQL index: a private server (session) and a database per test.

``db_url`` runs a test on both index backends: ``sqlite`` (None: the default SQLite file
at ``<site>/index.db``) and ``postgres`` (a fresh database on the test server).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from .services.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL on 127.0.0.1, started once per session (installed if missing)."""
    server = PostgresServer()
    try:
        server.start()
    except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        server.stop()
        if os.environ.get("CI"):
            pytest.fail(f"no PostgreSQL test server: {exc}")
        pytest.skip(f"no PostgreSQL test server: {exc}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database on the test server (dropped afterwards)."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    """The index database URL of a test site: None (SQLite) or an empty PostgreSQL one."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("postgres_url"))
