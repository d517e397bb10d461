"""A throwaway PostgreSQL server: for the store tests (tests/unit/conftest.py)
and for the main job's high-availability mode (run.py --ha), where several
controllers share one database.

It runs Debian's `postgresql` binaries (/usr/lib/postgresql/*/bin) as the
`postgres` user on a cluster of its own: initdb with trust authentication,
then the server on a unix socket in the cluster's home directory (no TCP
listener; the port only names the socket), fsync off unless durable.

    with PgCluster() as cluster:
        url = cluster.create_database("enforcement")
        # postgresql+psycopg://postgres@/enforcement?host=/tmp/...&port=...

What a crashed run leaves is cleaned in two ways, neither of them by name:

- the server is this process's own child (not daemonized by `pg_ctl start`)
  and gets SIGINT, PostgreSQL's fast shutdown, when the thread that started
  it dies, even by SIGKILL (setpriv --pdeathsig);
- each cluster is recorded under /run/sdn-enforcement-lab/postgresql (next
  to leftovers.py's network records, which ignore that subfolder: a server
  is stopped with pg_ctl and its data dir, not killed like a Mininet node).
  Every start() first stops the servers of records whose owner process is
  dead (postmaster by pid and start time, pg_ctl on its data dir, fast, then
  immediate) and removes the homes it created, then the records.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from typing import Self

from testbed import leftovers

RECORDS = leftovers.STATE_DIR / "postgresql"
USER = "postgres"


def unavailable() -> str | None:
    """Why no cluster can run here, or None."""
    if os.geteuid() != 0:
        return "needs root to run PostgreSQL as its own user"
    if _bin_dir() is None:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if shutil.which("setpriv") is None or shutil.which("runuser") is None:
        return "setpriv and runuser (util-linux) are missing"
    return None


class PgCluster:
    """One PostgreSQL cluster and its server.

    home: the directory for the data (home/data), the socket and the log
    (home/server.log); by default a new temporary directory, removed by
    stop(). A given home is kept. port: the socket's port number (a free
    one by default). durable: fsync on (off makes tests faster and a crash
    of the machine lose the cluster)."""

    def __init__(self, home: pathlib.Path | None = None, port: int | None = None,
                 durable: bool = True):
        self.home = pathlib.Path(home) if home is not None else None
        self._own_home = home is None
        self.port = port
        self.durable = durable
        self._bin: pathlib.Path | None = None
        self._proc: subprocess.Popen | None = None
        self._record: pathlib.Path | None = None

    # ---- life ----------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs (setpriv execs it: no wrapper)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def data(self) -> pathlib.Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> pathlib.Path:
        return self.home

    def start(self, timeout: float = 60.0) -> Self:
        missing = unavailable()
        if missing:
            raise RuntimeError(f"PostgreSQL cannot run: {missing}")
        if self._proc is not None:
            raise RuntimeError("already started")
        remove_stale()
        self._bin = _bin_dir()
        if self._own_home:
            self.home = pathlib.Path(tempfile.mkdtemp(prefix="sdn-enforcement-pg-"))
        else:
            self.home.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        self._write_record(postmaster=None)
        try:
            shutil.chown(self.home, USER, USER)
            if not (self.data / "PG_VERSION").exists():
                self._as_postgres(str(self._bin / "initdb"), "-D", str(self.data),
                                  "-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C",
                                  *(() if self.durable else ("--no-sync",)))
            settings = {"listen_addresses": "", "port": str(self.port),
                        "unix_socket_directories": str(self.home)}
            if not self.durable:
                settings["fsync"] = "off"
            with open(self.home / "server.log", "a") as log:
                self._proc = subprocess.Popen(
                    # Two setprivs: a change of user clears the parent-death
                    # signal, so it is set after, by the postgres user.
                    ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--",
                     "setpriv", "--pdeathsig", "INT", "--",
                     str(self._bin / "postgres"), "-D", str(self.data),
                     *(arg for key, value in settings.items()
                       for arg in ("-c", f"{key}={value}"))],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=self.home, start_new_session=True)  # Ctrl-C reaches us, not it
            self._write_record(postmaster=self._proc.pid)
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def create_database(self, name: str) -> str:
        """Creates database name; returns its SQLAlchemy URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database name {name!r}: lower-case letters, digits, _")
        self._as_postgres(str(self._bin / "createdb"), "-h", str(self.home),
                          "-p", str(self.port), name)
        return self.url(name)

    def url(self, name: str) -> str:
        query = urllib.parse.urlencode({"host": str(self.home), "port": self.port},
                                       safe="/")
        return f"postgresql+psycopg://{USER}@/{name}?{query}"

    def stop(self) -> None:
        """Stops the server (pg_ctl fast, then immediate, then SIGKILL) and
        removes its home when it made it. Safe to call twice."""
        if self._proc is not None:
            if self._proc.poll() is None:
                _stop_server(self._bin, self.data, self._proc.pid)
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._own_home and self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
        if self._record is not None:
            self._record.unlink(missing_ok=True)
            self._record = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- parts -----------------------------------------------------------------

    def _wait_ready(self, timeout: float) -> None:
        """postmaster.pid's 8th line says `ready` once connections are
        accepted (PostgreSQL 10 and later)."""
        deadline = time.monotonic() + timeout
        pidfile = self.data / "postmaster.pid"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited with {self._proc.returncode}; "
                                   f"see {self.home / 'server.log'}:\n{self._log_tail()}")
            with contextlib.suppress(OSError):
                lines = pidfile.read_text().splitlines()
                if len(lines) >= 8 and lines[0].strip() == str(self._proc.pid) \
                        and lines[7].strip() == "ready":
                    return
            time.sleep(0.05)
        raise TimeoutError(f"PostgreSQL not ready in {timeout} s:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.home / "server.log").read_text(
                errors="replace").splitlines()[-10:])
        return ""

    def _as_postgres(self, *args: str) -> None:
        result = subprocess.run(["runuser", "-u", USER, "--", *args], cwd=self.home,
                                capture_output=True, text=True, check=False)
        if result.returncode:
            raise RuntimeError(f"{pathlib.Path(args[0]).name} failed ({result.returncode}): "
                               f"{result.stderr.strip() or result.stdout.strip()}")

    def _write_record(self, postmaster: int | None) -> None:
        RECORDS.mkdir(parents=True, exist_ok=True)
        if self._record is None:
            self._record = RECORDS / f"{uuid.uuid4().hex[:12]}.json"
        state = {"owner": {"pid": os.getpid(), "start": _start_time(os.getpid())},
                 "postmaster": None if postmaster is None else
                 {"pid": postmaster, "start": _start_time(postmaster)},
                 "bin": str(self._bin), "data": str(self.data),
                 "remove": str(self.home) if self._own_home else None}
        partial = self._record.with_suffix(".tmp")
        partial.write_text(json.dumps(state, indent=1))
        os.replace(partial, self._record)


def remove_stale() -> None:
    """Stops the clusters of dead owner processes and removes what they
    made (records of live processes, this one's included, stay)."""
    if not RECORDS.is_dir():
        return
    for path in sorted(RECORDS.glob("*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        owner = state["owner"]
        if _start_time(owner["pid"]) == owner["start"]:
            continue
        postmaster = state.get("postmaster")
        if postmaster and _start_time(postmaster["pid"]) == postmaster["start"]:
            _stop_server(pathlib.Path(state["bin"]), pathlib.Path(state["data"]),
                         postmaster["pid"])
            if _start_time(postmaster["pid"]) == postmaster["start"]:
                continue  # resisted: try again next time
        if state.get("remove"):
            shutil.rmtree(state["remove"], ignore_errors=True)
        path.unlink(missing_ok=True)


def _stop_server(bin_dir: pathlib.Path, data: pathlib.Path, pid: int) -> None:
    for mode in ("fast", "immediate"):
        result = subprocess.run(["runuser", "-u", USER, "--", str(bin_dir / "pg_ctl"),
                                 "-D", str(data), "-m", mode, "-w", "-t", "20", "stop"],
                                cwd="/", capture_output=True, check=False)
        if result.returncode == 0:
            return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _bin_dir() -> pathlib.Path | None:
    """The newest installed major version's binaries."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(re.search(r"/(\d+)/bin/", p).group(1)))
    return pathlib.Path(found[-1]).parent if found else None


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), which tells a
    reused pid apart; None when there is no such process (or a zombie)."""
    try:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw.rsplit(b")", 1)[1].split()
    return None if fields[0] == b"Z" else int(fields[19])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
