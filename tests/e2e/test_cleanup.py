"""lab.cleanup() takes down what a network of this harness left behind, after
a failed test and after a crashed run, and nothing else on the machine: not a
ping or a bridge that merely look like Mininet's, not a process whose pid a
stale record names.

No controller runs here: the switches never connect, which changes nothing
for what is cleaned up.
"""
import json
import pathlib
import subprocess
import sys

import pytest
from pyroute2 import IPRoute

from testbed import lab as harness
from testbed import leftovers, topologies

pytestmark = pytest.mark.mininet

def start_time(pid: int) -> int | None:
    """The process's start time, or None once it is gone (or a zombie)."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == b"Z" else int(fields[19])


def running(pid: int, start: int | None = None) -> bool:
    now = start_time(pid)
    return now is not None and (start is None or now == start)


def bridges() -> list[str]:
    return subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True,
                          check=True).stdout.split()


def tagged_bridges(run: str) -> list[str]:
    return subprocess.run(["ovs-vsctl", "--bare", "--columns=name", "find", "Bridge",
                           f"external_ids:{leftovers.BRIDGE_TAG}={run}"],
                          capture_output=True, text=True, check=True).stdout.split()


def links() -> set[str]:
    with IPRoute() as ipr:
        return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}


def background(host, command: str) -> int:
    """Starts command as a background job of host's shell; its pid."""
    return int(host.cmd(f"{command} > /dev/null 2>&1 & echo $!").split()[-1])


def assert_all_gone(state: dict, record: pathlib.Path, others=()) -> None:
    assert not record.exists()
    assert tagged_bridges(state["run"]) == []
    assert not set(state["bridges"]) & set(bridges())
    assert not {end["name"] for end in state["links"]} & links()
    for node in state["nodes"]:
        assert not running(node["pid"], node["start"]), f"{node['name']}'s shell survived"
    for pid in others:
        assert not running(pid), f"process {pid} of the network survived"


def test_cleanup_removes_a_network_that_was_never_stopped(mininet_lock):
    net = harness.start_network(topologies.LinearTopo(switches=2, hosts_per_switch=1),
                                harness.free_port())
    record = net.record_path
    state = json.loads(record.read_text())
    assert set(state["bridges"]) <= set(tagged_bridges(state["run"]))
    h1 = net.get("h1")
    job = background(h1, "sleep 600")
    # A daemon leaves the shell's session; it is still in h1's namespace.
    daemon = int(h1.cmd("(setsid sleep 601 > /dev/null 2>&1 & echo $!)").split()[-1])
    assert running(job) and running(daemon)

    harness.cleanup()  # what a failed test's teardown does when net.stop() did not

    assert_all_gone(state, record, others=(job, daemon))
    for node in (*net.hosts, *net.switches, *net.controllers):
        node.shell.wait(timeout=5)  # reaped: they were this process's children


CRASHING_RUN = """
import json, time
from testbed import lab, topologies
net = lab.start_network(topologies.LinearTopo(switches=2, hosts_per_switch=1), lab.free_port())
out = net.get("h1").cmd("nohup sleep 600 > /dev/null 2>&1 & echo $!")
print(json.dumps({"record": str(net.record_path), "job": int(out.split()[-1])}), flush=True)
time.sleep(600)
"""


def test_cleanup_removes_what_a_crashed_run_left(mininet_lock):
    crashing = subprocess.Popen(
        # From the checkout's root, whose testbed/ the run imports.
        [sys.executable, "-c", CRASHING_RUN], stdout=subprocess.PIPE, text=True,
        cwd=harness.ROOT)
    try:
        started = next((json.loads(line) for line in crashing.stdout
                        if line.startswith("{")), None)
    finally:
        crashing.kill()  # SIGKILL: nothing of the run gets to clean up
        crashing.wait()
    assert started is not None, "the run died before its network was up"
    record = pathlib.Path(started["record"])
    state = json.loads(record.read_text())
    # The shells die with the run's pseudo-terminals; a job that ignores
    # SIGHUP stays, and with it h1's namespace, link and bridges.
    assert running(started["job"])
    assert set(state["bridges"]) <= set(bridges())

    harness.cleanup()

    assert_all_gone(state, record, others=(started["job"],))


def test_cleanup_spares_processes_bridges_and_links_of_others(mininet_lock):
    """A ping (one of `mn -c`'s victims), a bridge and a link of someone
    else's, and a stale record from a dead run that names them (a pid since
    reused, a bridge without the run's tag, an interface index since reused)."""
    ping = subprocess.Popen(["ping", "-q", "-i", "1", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftovers.STATE_DIR.mkdir(parents=True, exist_ok=True)
    record = leftovers.STATE_DIR / "stale-test-record.json"
    try:
        subprocess.run(["ovs-vsctl", "add-br", "testkeep0", "--", "set", "bridge",
                        "testkeep0", "datapath_type=netdev"], check=True)
        with IPRoute() as ipr:
            ipr.link("add", ifname="testkeep1", kind="veth", peer="testkeep2")
            index = ipr.link_lookup(ifname="testkeep1")[0]
        started = start_time(ping.pid)
        record.write_text(json.dumps({
            "run": "stale", "owner": {"pid": dead.pid, "start": 0},
            "bridges": ["testkeep0"],
            "nodes": [{"name": "h1", "pid": ping.pid, "start": started - 1},
                      {"name": "h1", "pid": ping.pid, "start": started}],
            "links": [{"name": "testkeep1", "index": index + 1000}]}))

        harness.cleanup()

        assert ping.poll() is None and running(ping.pid, started)
        assert "testkeep0" in bridges()
        assert {"testkeep1", "testkeep2"} <= links()
        assert not record.exists()  # nothing it named was the dead run's
    finally:
        ping.terminate()
        ping.wait()
        record.unlink(missing_ok=True)
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", "testkeep0"], check=True)
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname="testkeep1"):
                ipr.link("del", index=index)


def test_cleanup_without_a_record_does_nothing(mininet_lock, monkeypatch, tmp_path):
    monkeypatch.setattr(leftovers, "STATE_DIR", tmp_path / "no-records")
    ping = subprocess.Popen(["ping", "-q", "-i", "1", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        before = bridges(), links()
        harness.cleanup()
        assert ping.poll() is None
        assert (bridges(), links()) == before
    finally:
        ping.terminate()
        ping.wait()
