"""A throwaway PostgreSQL server for the store tests: the same code must
serve SQLite files and PostgreSQL, so both are tested for real. The server
is testbed/pgcluster.py's."""
import itertools
import os

import pytest

from testbed import pgcluster


@pytest.fixture(scope="session")
def postgres_server():
    missing = pgcluster.unavailable()
    if missing:
        if os.environ.get("CI") or os.environ.get("ENFORCEMENT_NO_SKIP"):
            pytest.fail(f"store tests on PostgreSQL cannot run: {missing}")
        pytest.skip(missing)
    with pgcluster.PgCluster(durable=False) as cluster:
        yield cluster


_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    cluster = request.getfixturevalue("postgres_server")
    return cluster.create_database(f"enforcement_{os.getpid()}_{next(_names)}")
