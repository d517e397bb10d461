"""What a lab network leaves on the machine, recorded so that a later run
removes exactly that and nothing else.

Mininet's own clean-up (`mn -c`) kills every process called ping, controller,
mnexec... and deletes every OVS bridge and every `*-ethN` link on the
machine: on a developer's machine that takes their own pings, captures and
networks with it. Instead, start_network (lab.py) records the network it
builds in a small file under /run (it survives a crash of the harness and
goes with a reboot, like the network itself), and remove() takes down only
what such records name:

- OVS bridges by name, and only those that carry the run's tag in
  external_ids (set in the same transaction that creates them), so a
  developer's own `s1` survives a stale record;
- root-namespace link ends by name, and only while the name still has the
  interface index it had then;
- processes by id: the node shells Mininet started (a pid counts only while
  its start time and its `mininet:<name>` argument still match, which rules
  out a reused pid), what runs in such a shell's session or in its host's
  network namespace, and, once the shell is gone, what is left of its session
  in that namespace. When the harness dies, the shells die with its
  pseudo-terminals and take their background jobs along on SIGHUP; a job that
  ignores SIGHUP stays in the session, a daemon (setsid) would stay out of
  reach, which is why the harness starts none.

A record is removed once everything it names is gone (it stays for the next
try when something resisted); records of another harness process that is
still running are left alone.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import signal
import subprocess
import time
import uuid

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

STATE_DIR = pathlib.Path("/run/sdn-enforcement-lab")
# The key in a bridge's external_ids whose value is the run that created it.
BRIDGE_TAG = "sdn-enforcement-lab"


def new_run() -> str:
    return uuid.uuid4().hex[:12]


def record(run: str, net) -> pathlib.Path:
    """Writes the record of a built, not yet started network: its bridges
    (to be made by net.start()), node shells and root-namespace link ends.
    Returns the record's path."""
    nodes = []
    for node in (*net.hosts, *net.switches, *net.controllers):
        entry = {"name": node.name, "pid": node.pid, "start": _stat(node.pid)["start"]}
        if node.inNamespace:
            entry["netns"] = _netns(node.pid)
        nodes.append(entry)
    ends = []
    with IPRoute() as ipr:
        for link in net.links:
            for intf in (link.intf1, link.intf2):
                if not intf.node.inNamespace:
                    ends.append({"name": intf.name,
                                 "index": ipr.link_lookup(ifname=intf.name)[0]})
    state = {"run": run, "owner": {"pid": os.getpid(), "start": _stat(os.getpid())["start"]},
             "bridges": [switch.name for switch in net.switches],
             "nodes": nodes, "links": ends}
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = STATE_DIR / f"{run}.json"
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(state, indent=1))
    os.replace(partial, path)
    return path


def forget(path: pathlib.Path) -> None:
    """After a clean net.stop(): nothing of the network is left."""
    path.unlink(missing_ok=True)


def remove() -> None:
    """Removes what the records of this process and of dead harness
    processes name, then the records. Does nothing without a record. This
    process must not be running a network of its own at the time."""
    if not STATE_DIR.is_dir():
        return
    for path in sorted(STATE_DIR.glob("*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written, or not ours to judge
        owner = state["owner"]
        if owner["pid"] != os.getpid() and _same_process(owner["pid"], owner["start"]):
            continue  # another harness that is still running owns it
        stopped = _stop_processes(state["nodes"])
        _delete_bridges(state["run"], state["bridges"])
        _delete_links(state["links"])
        if stopped:
            forget(path)


# ---- processes ----------------------------------------------------------------

def _stop_processes(nodes: list[dict]) -> bool:
    """Kills the network's processes; whether they are all gone."""
    running = {pid: stat for pid in _pids() if (stat := _stat(pid)) and stat["state"] != "Z"}
    root = _netns(os.getpid())
    targets = set()
    for node in nodes:
        shell, netns = node["pid"], node.get("netns")
        if netns == root:
            netns = None  # never sweep the machine's own namespace
        if _same_process(shell, node["start"]) and f"mininet:{node['name']}" in _cmdline(shell):
            # The shell, alive: its session is this run's, and so is its host's
            # namespace with whatever runs there (a daemon leaves the session).
            targets.add(shell)
            targets |= {pid for pid, stat in running.items() if stat["session"] == shell
                        or (netns is not None and _netns(pid) == netns)}
        elif netns is not None:
            # The shell is gone: its session id stays reserved only while
            # members are left, so they must be in the host's recorded
            # namespace and younger than the shell as well to count.
            targets |= {pid for pid, stat in running.items() if stat["session"] == shell
                        and stat["start"] >= node["start"] and _netns(pid) == netns}
    targets.discard(os.getpid())
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in targets):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _pids() -> list[int]:
    return [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()]


def _stat(pid: int) -> dict | None:
    try:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces, parentheses or bytes that
    # are no UTF-8 (cut at 15 bytes): split after it, as bytes.
    fields = raw.rsplit(b")", 1)[1].split()
    return {"state": fields[0].decode(), "session": int(fields[3]), "start": int(fields[19])}


def _same_process(pid: int, start: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat["start"] == start and stat["state"] != "Z"


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat["state"] != "Z"


def _cmdline(pid: int) -> list[str]:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode(
            errors="replace").split("\0")
    except OSError:
        return []


def _netns(pid: int) -> list[int] | None:
    try:
        info = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return [info.st_dev, info.st_ino]


# ---- bridges and links ----------------------------------------------------------

def _delete_bridges(run: str, names: list[str]) -> None:
    tagged = subprocess.run(
        ["ovs-vsctl", "--timeout=10", "--bare", "--columns=name", "find", "Bridge",
         f"external_ids:{BRIDGE_TAG}={run}"],
        capture_output=True, text=True, check=True).stdout.split()
    doomed = [name for name in names if name in tagged]
    if doomed:
        args = [arg for name in doomed for arg in ("--", "--if-exists", "del-br", name)]
        subprocess.run(["ovs-vsctl", "--timeout=10", *args], capture_output=True, check=True)


def _delete_links(ends: list[dict]) -> None:
    with IPRoute() as ipr:
        for end in ends:
            if end["index"] not in ipr.link_lookup(ifname=end["name"]):
                continue  # gone (a veth goes with its peer), or someone else's now
            try:
                ipr.link("del", index=end["index"])
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise
