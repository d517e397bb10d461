"""An Open vSwitch of the harness's own: never the machine's, never the lab's.

A private ovsdb-server and `ovs-vswitchd --enable-dummy=override` (OVS's own
way of testing itself at scale, without namespaces or a kernel datapath),
each with its own run directory, database file, pid file, control socket
and log, so that thousands of bridges come and go without touching
/var/run/openvswitch or a bridge anyone else made. OVS_RUNDIR points both
at the private directory: without it every bridge's management socket
(BRIDGE.mgmt, what ovs-ofctl talks to) lands in the machine's run directory.

Both daemons are children of the harness (not --detach) started through
setpriv --pdeathsig, so they die with it even when it is killed; stop()
asks each to exit over its control socket first.

The database is written with OVSDB's own protocol (RFC 7047 "transact",
over the `ovs` library's JSON-RPC, which OS-Ken depends on): one
transaction adds a whole batch of bridges, ports and controllers, where
ovs-vsctl would re-read the growing database once per call.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence

import ovs.jsonrpc
import ovs.stream
import ovs.unixctl.client

from testbed.lab import _die_with_parent_prefix

SCHEMA = pathlib.Path("/usr/share/openvswitch/vswitch.ovsschema")
DB = "Open_vSwitch"


class OvsError(RuntimeError):
    pass


class PrivateOvs:
    """ovsdb-server plus ovs-vswitchd in a temporary directory of their own.
    Use as a context manager (or start() and stop())."""

    def __init__(self, workdir: pathlib.Path | None = None):
        self._owned = workdir is None
        self.dir = workdir or pathlib.Path(tempfile.mkdtemp(prefix="scale-ovs-"))
        self.db_socket = self.dir / "db.sock"
        self.vswitchd_ctl = self.dir / "vswitchd.ctl"
        self.ovsdb_ctl = self.dir / "ovsdb.ctl"
        self.ovsdb: subprocess.Popen | None = None
        self.vswitchd: subprocess.Popen | None = None
        self._unixctl: ovs.unixctl.client.UnixctlClient | None = None
        self._appctl_lock = threading.Lock()

    def __enter__(self) -> PrivateOvs:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- the daemons ---------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {**os.environ, "OVS_RUNDIR": str(self.dir), "OVS_LOGDIR": str(self.dir),
                "OVS_DBDIR": str(self.dir)}

    def start(self, timeout: float = 30.0) -> None:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        db = self.dir / "conf.db"
        subprocess.run(["ovsdb-tool", "create", str(db), str(SCHEMA)], check=True,
                       capture_output=True)
        common = ["--no-chdir", "-vconsole:off", "-vfile:info"]
        self.ovsdb = subprocess.Popen(
            [*_die_with_parent_prefix(), "ovsdb-server", str(db),
             f"--remote=punix:{self.db_socket}", f"--pidfile={self.dir / 'ovsdb.pid'}",
             f"--unixctl={self.ovsdb_ctl}", f"--log-file={self.dir / 'ovsdb.log'}", *common],
            env=self._env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        self._wait_for(self.db_socket, self.ovsdb, timeout)
        # Interface statistics stay at their 5 s default: the same timer
        # refreshes the Controller rows' is_connected and role, which the
        # harness reads.
        self.transact([{"op": "insert", "table": "Open_vSwitch", "row": {}}])
        self.vswitchd = subprocess.Popen(
            [*_die_with_parent_prefix(), "ovs-vswitchd", f"unix:{self.db_socket}",
             "--enable-dummy=override", "--disable-system", "--disable-system-route",
             f"--pidfile={self.dir / 'vswitchd.pid'}", f"--unixctl={self.vswitchd_ctl}",
             f"--log-file={self.dir / 'vswitchd.log'}", *common],
            env=self._env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        self._wait_for(self.vswitchd_ctl, self.vswitchd, timeout)

    @staticmethod
    def _wait_for(path: pathlib.Path, proc: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if proc.poll() is not None:
                raise OvsError(f"{proc.args[len(_die_with_parent_prefix())]} exited with "
                               f"{proc.returncode} (log in {path.parent})")
            if time.monotonic() > deadline:
                raise OvsError(f"{path} did not appear within {timeout} s")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Asks each daemon to exit (vswitchd first: it holds the bridges),
        then terminates and kills what did not; removes the directory it
        made. Nothing of them outlives their processes (the dummy datapath
        lives in ovs-vswitchd's memory), and a vswitchd busy configuring
        thousands of ports answers nothing for minutes: hence the short
        waits."""
        if self._unixctl is not None:
            self._unixctl.close()
            self._unixctl = None
        for proc, ctl in ((self.vswitchd, self.vswitchd_ctl), (self.ovsdb, self.ovsdb_ctl)):
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(["ovs-appctl", "-t", str(ctl), "--timeout=5", "exit"],
                               capture_output=True, timeout=timeout, check=False)
            for end in (proc.terminate, proc.kill):
                try:
                    proc.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    end()
            proc.wait()
        if self._owned:
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in (("ovs-vswitchd", self.vswitchd),
                                                  ("ovsdb-server", self.ovsdb))
                if proc is not None and proc.poll() is None}

    # ---- the database (RFC 7047) -----------------------------------------------

    def transact(self, ops: Sequence[dict], timeout: float = 120.0) -> list:
        """One OVSDB transaction; its results, or OvsError naming the first
        operation that failed. A connection per call: the server probes an
        idle client and drops one that does not answer."""
        error, stream = ovs.stream.Stream.open_block(
            ovs.stream.Stream.open(f"unix:{self.db_socket}"), timeout * 1000)
        if error:
            raise OvsError(f"cannot reach ovsdb-server: {os.strerror(error)}")
        conn = ovs.jsonrpc.Connection(stream)
        try:
            request = ovs.jsonrpc.Message.create_request("transact", [DB, *ops])
            error, reply = conn.transact_block(request)
        finally:
            conn.close()
        if error:
            raise OvsError(f"ovsdb transaction: {os.strerror(error)}")
        if reply.error is not None:
            raise OvsError(f"ovsdb transaction refused: {reply.error}")
        for op, result in zip(ops, reply.result, strict=False):
            if isinstance(result, dict) and "error" in result:
                raise OvsError(f"ovsdb {op.get('op')} on {op.get('table')}: "
                               f"{result['error']}: {result.get('details', '')}")
        if len(reply.result) > len(ops):  # a commit-time error comes last
            raise OvsError(f"ovsdb transaction: {reply.result[-1]}")
        return reply.result

    def configure(self, ops: Sequence[dict], timeout: float = 3600.0,
                  check: Callable[[], None] = lambda: None) -> float:
        """A transaction that changes the configuration, and the wait until
        ovs-vswitchd has applied it (what `ovs-vsctl --wait` does: next_cfg
        raised with it, cur_cfg catching up), as the transaction's reply
        comes from ovsdb-server at once, long before the bridges exist.
        Returns the seconds it took; check() runs while waiting (a budget)."""
        started = time.monotonic()
        (*_, bumped) = self.transact([*ops, {"op": "mutate", "table": "Open_vSwitch",
                                            "where": [],
                                            "mutations": [["next_cfg", "+=", 1]]},
                                      {"op": "select", "table": "Open_vSwitch", "where": [],
                                       "columns": ["next_cfg"]}])
        wanted = bumped["rows"][0]["next_cfg"]
        deadline = started + timeout
        while self.select("Open_vSwitch", ["cur_cfg"])[0]["cur_cfg"] < wanted:
            check()
            if self.vswitchd is not None and self.vswitchd.poll() is not None:
                raise OvsError(f"ovs-vswitchd exited with {self.vswitchd.returncode}:\n"
                               + self.log_tail())
            if time.monotonic() > deadline:
                raise OvsError(f"ovs-vswitchd did not apply the configuration within "
                               f"{timeout:.0f} s")
            time.sleep(0.2)
        return time.monotonic() - started

    def select(self, table: str, columns: Sequence[str], where: Sequence = ()) -> list[dict]:
        """Rows of a table. With _uuid among the columns: ovsdb-server
        answers equal rows once when a select leaves it out."""
        (result,) = self.transact([{"op": "select", "table": table, "where": list(where),
                                    "columns": ["_uuid", *columns]}])
        return result["rows"]

    # ---- ovs-vswitchd's control socket ---------------------------------------------

    def appctl(self, command: str, *args: str) -> str:
        """A command on ovs-vswitchd's control socket, from this process (no
        ovs-appctl process per call). One connection, reopened after a
        failure, used by one thread at a time (a reply goes to whoever
        reads first)."""
        with self._appctl_lock:
            return self._appctl(command, args)

    def _appctl(self, command: str, args: Sequence[str]) -> str:
        for attempt in (0, 1):
            if self._unixctl is None:
                error, client = ovs.unixctl.client.UnixctlClient.create(str(self.vswitchd_ctl))
                if error:
                    raise OvsError(f"cannot reach ovs-vswitchd: {os.strerror(error)}")
                self._unixctl = client
            error, problem, result = self._unixctl.transact(command, list(args))
            if not error:
                if problem is not None:
                    raise OvsError(f"ovs-appctl {command}: {problem.strip()}")
                return result or ""
            self._unixctl.close()
            self._unixctl = None
            if attempt:
                raise OvsError(f"ovs-appctl {command}: {os.strerror(error)}")
        raise AssertionError("unreachable")

    # ---- the bridges' OpenFlow management sockets ------------------------------------

    def mgmt(self, bridge: str) -> str:
        return f"unix:{self.dir / bridge}.mgmt"

    def ofctl(self, command: str, bridge: str, *args: str) -> str:
        """ovs-ofctl in OpenFlow 1.3 against the bridge's management socket in
        the private run directory."""
        return subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", command, self.mgmt(bridge),
                               *args], capture_output=True, text=True, check=True).stdout

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            text = (self.dir / "vswitchd.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""
