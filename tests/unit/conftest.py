"""A throwaway PostgreSQL server for the store tests: the same code must
serve SQLite files and PostgreSQL, so both are tested for real."""
import glob
import itertools
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(*args, **kw):
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True,
                          capture_output=True, text=True, **kw)


@pytest.fixture(scope="session")
def postgres_server():
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    missing = (not binaries and "PostgreSQL is not installed (apt-get install postgresql)") \
        or (os.geteuid() != 0 and "needs root to run PostgreSQL as its own user")
    if missing:
        if os.environ.get("CI") or os.environ.get("ENFORCEMENT_NO_SKIP"):
            pytest.fail(f"store tests on PostgreSQL cannot run: {missing}")
        pytest.skip(missing)
    bin_dir = pathlib.Path(binaries[-1]).parent
    home = pathlib.Path(tempfile.mkdtemp(prefix="enforcement-pg-"))
    shutil.chown(home, "postgres", "postgres")
    port = _free_port()
    try:
        _as_postgres(str(bin_dir / "initdb"), "-D", str(home / "data"), "-U", "postgres",
                     "--auth=trust", "-E", "UTF8")
        _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(home / "data"), "-w", "-l",
                     str(home / "server.log"), "-o",
                     f"-p {port} -k {home} -c listen_addresses='' -c fsync=off", "start")
        yield bin_dir, home, port
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(bin_dir / "pg_ctl"), "-D",
                        str(home / "data"), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    bin_dir, home, port = request.getfixturevalue("postgres_server")
    name = f"enforcement_{os.getpid()}_{next(_names)}"
    _as_postgres(str(bin_dir / "createdb"), "-h", str(home), "-p", str(port), name)
    return f"postgresql+psycopg://postgres@/{name}?host={home}&port={port}"
