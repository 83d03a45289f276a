"""The history's backends for the tests: a SQLite file, and a database of a PostgreSQL cluster
the tests start themselves (tests/history/pgcluster.py) and always remove."""

from __future__ import annotations

import itertools
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from pgcluster import running  # noqa: E402

_names = itertools.count(1)


@pytest.fixture(scope="session")
def cluster():
    with running() as started:
        yield started


@pytest.fixture
def pg_url(cluster):
    """A new, empty database of the test cluster (unix socket, no password)."""
    return cluster.socket_url(cluster.new_database(f"h{next(_names)}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    """A new, empty history on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "history.sqlite")
    return request.getfixturevalue("pg_url")
