"""A real DHCP server and real DHCP clients in the lab's hosts: Debian's
dnsmasq, busybox's udhcpc, and ISC dhclient for DHCPv6 (scripts/setup.sh
installs them).

Each runs in the background of its host's shell, never as a daemon: it stays
in that shell's session and in the host's network namespace, where
leftovers.py finds it after a crash. Normally each is stopped by its pid:
by its stop(), or when the network stops (lab.py runs every host's
`lab_stops` before net.stop(); dnsmasq takes the SIGHUP that ends the
hosts' shells for a reload and would outlive them). Every server and client
has its own configuration, lease, pid and log files in a temporary folder
of its own, removed when it stops; the client's script sets the address in
the host's own namespace and nothing else: Mininet hosts share the
machine's /etc/resolv.conf, which must not change.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import re
import shutil
import signal
import tempfile
import time

CLIENT_SCRIPT = """#!/bin/sh
# udhcpc calls this with what happened ($1) and the lease in its environment.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up ;;
  bound|renew)
    if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/"; then
      ip -4 addr flush dev "$interface"
      ip addr add "$ip/${mask:-24}" dev "$interface"
    fi ;;
esac
echo "$1 ${ip:-} ${lease:-}" >> "$DHCP_STATE"
"""
# dhclient hands its script only its own variables: the state file is
# written in. The address goes on with its /64: no router advertisement in
# the lab says the prefix is on the link, as one would in a real network.
CLIENT6_SCRIPT = """#!/bin/sh
case "$reason" in
  BOUND6|RENEW6|REBIND6|REBOOT6)
    if [ -n "$old_ip6_address" ] && [ "$old_ip6_address" != "$new_ip6_address" ]; then
      ip -6 addr del "$old_ip6_address/64" dev "$interface"
    fi
    ip -6 addr replace "$new_ip6_address/64" dev "$interface" nodad
    echo "bound $new_ip6_address" >> STATE ;;
  EXPIRE6|RELEASE6|STOP6)
    [ -n "$old_ip6_address" ] && ip -6 addr del "$old_ip6_address/64" dev "$interface"
    echo "deconfig" >> STATE ;;
  *) echo "$reason" >> STATE ;;
esac
"""


def trusted_port(topo, switch: str, host: str) -> str:
    """The controller's --dhcp-trusted DPID:PORT for the server host's
    port on switch, known before the network is built (Mininet derives a
    switch's datapath id from the first number in its name, in hex)."""
    dpid = int(re.findall(r"\d+", switch)[0])
    return f"{dpid:x}:{topo.port(switch, host)[0]}"


class _Job:
    """A process started in the background of a host's shell, known by its
    pid and its start time (so a reused pid is never signalled)."""

    def __init__(self, pid: int):
        self.pid = pid
        self._start = _stat(pid)[1]

    def alive(self) -> bool:
        state, start = _stat(self.pid)
        return start == self._start and state not in ("Z", "")

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 3 s; the host's shell reaps it (its job)."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.signal(signal.SIGKILL)
        while self.alive() and time.monotonic() < deadline + 2:
            time.sleep(0.05)


def _start(host, command: str) -> _Job:
    return _Job(int(host.cmd(f"{command} & echo $!").split()[-1]))


@dataclasses.dataclass
class DhcpServer:
    host: object
    job: _Job
    folder: pathlib.Path

    @property
    def log(self) -> str:
        return _read(self.folder / "dnsmasq.log")

    def leases(self) -> list[tuple[str, str, int]]:
        """(MAC, address, lease end as a Unix time) from its lease file."""
        found = []
        for line in _read(self.folder / "leases").splitlines():
            fields = line.split()
            if len(fields) >= 3:
                found.append((fields[1], fields[2], int(fields[0])))
        return found

    def set_static(self, static: dict[str, str]) -> None:
        """MAC -> address reservations, in force from the next request (the
        hosts file is read again on SIGHUP)."""
        _write_hosts(self.folder, static)
        self.job.signal(signal.SIGHUP)

    def stop(self) -> None:
        self.job.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_dhcp_server(host, address_range: tuple[str, str], lease_seconds: int = 120, *,
                      static: dict[str, str] | None = None, netmask: str = "255.255.255.0",
                      ping: bool = True, v6_range: tuple[str, str] | None = None,
                      timeout: float = 10.0) -> DhcpServer:
    """dnsmasq serving DHCP (no DNS) on host's interface: addresses from
    address_range, leases of lease_seconds (dnsmasq's least is 120), the
    reservations static (MAC -> address). It asks nobody else and knows no
    lease from before (authoritative: a client asking for an address it
    does not hold is refused at once, as after a real server's reset).
    Without ping, it offers at once instead of first pinging the address
    (a server in a hurry: the fastest answer a client can get). v6_range:
    DHCPv6 too, from a /64 the host has an address in."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix=f"sdn-dhcp-{host.name}-"))
    intf = host.defaultIntf().name
    _write_hosts(folder, static or {})
    (folder / "dnsmasq.conf").write_text("\n".join([
        "port=0",                      # no DNS: only DHCP
        f"interface={intf}", "bind-interfaces",
        f"dhcp-range={address_range[0]},{address_range[1]},{netmask},{lease_seconds}s",
        *((f"dhcp-range={v6_range[0]},{v6_range[1]},64,{lease_seconds}s",) if v6_range
          else ()),
        f"dhcp-hostsfile={folder / 'hosts'}",
        f"dhcp-leasefile={folder / 'leases'}",
        f"pid-file={folder / 'dnsmasq.pid'}",
        f"log-facility={folder / 'dnsmasq.log'}", "log-dhcp",
        "dhcp-authoritative", "user=root", "no-hosts", "no-resolv",
        *(() if ping else ("no-ping",)), ""]))
    job = _start(host, f"dnsmasq --keep-in-foreground --conf-file={folder / 'dnsmasq.conf'}"
                       f" > {folder / 'stderr'} 2>&1")
    server = DhcpServer(host, job, folder)
    _on_stop(host, server)
    deadline = time.monotonic() + timeout
    while ":67 " not in host.cmd("ss -Huln") or not (folder / "dnsmasq.pid").exists():
        if time.monotonic() > deadline or not job.alive():
            server.stop()
            raise RuntimeError(f"dnsmasq on {host.name} did not start: "
                               f"{_read(folder / 'stderr')}{_read(folder / 'dnsmasq.log')}")
        time.sleep(0.1)
    return server


@dataclasses.dataclass
class DhcpClient:
    host: object
    job: _Job
    folder: pathlib.Path
    family: int = 4

    @property
    def attribute(self) -> str:
        return "dhcp_client" if self.family == 4 else "dhcp6_client"

    def events(self) -> list[tuple[str, str]]:
        """(what, address) as the script was told, in order: deconfig,
        bound, renew, nak, leasefail."""
        return [(f[0], f[1] if len(f) > 1 else "")
                for f in (line.split() for line in _read(self.folder / "state").splitlines())
                if f]

    def address(self) -> str:
        """The address held now ("" before a lease or after a NAK)."""
        held = ""
        for what, ip in self.events():
            held = ip if what in ("bound", "renew") else "" if what == "deconfig" else held
        return held

    def wait_address(self, after: int, timeout: float) -> str:
        """The address of the first bound or renew after the first `after`
        events."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for what, ip in self.events()[after:]:
                if what in ("bound", "renew") and ip:
                    if self.family == 4:
                        _adopt(self.host, ip)
                    return ip
            if not self.job.alive():
                raise RuntimeError(f"the DHCP client of {self.host.name} exited: "
                                   f"{_read(self.folder / 'stderr')}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.host.name}: no DHCP lease within {timeout} s "
                           f"({self.events()[after:]})")

    def stop(self) -> None:
        self.job.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
        if getattr(self.host, self.attribute, None) is self:
            setattr(self.host, self.attribute, None)


def dhcp_client(host, timeout: float = 20.0, wait: bool = True) -> str:
    """Has host take its IPv4 address from DHCP with busybox's udhcpc, which
    goes on running to renew it; returns the address (without wait, ""
    at once: host.dhcp_client.wait_address(0, timeout) waits). Its static
    address goes as soon as the client starts."""
    client = getattr(host, "dhcp_client", None)
    if client is not None and client.job.alive():
        return client.address() or client.wait_address(0, timeout)
    folder = pathlib.Path(tempfile.mkdtemp(prefix=f"sdn-dhcpc-{host.name}-"))
    script = folder / "script"
    script.write_text(CLIENT_SCRIPT)
    script.chmod(0o700)
    # -f: stays this shell's job; a DISCOVER every 2 s, 3 at a time, 3 s
    # between rounds when nobody answers.
    job = _start(host, f"DHCP_STATE={folder / 'state'} busybox udhcpc -f "
                       f"-i {host.defaultIntf().name} -s {script} -p {folder / 'udhcpc.pid'} "
                       f"-t 3 -T 2 -A 3 > {folder / 'stderr'} 2>&1")
    client = DhcpClient(host, job, folder)
    host.dhcp_client = client
    _on_stop(host, client)
    return client.wait_address(0, timeout) if wait else ""


def dhcp6_client(host, timeout: float = 30.0) -> str:
    """Has host take an IPv6 address from DHCPv6 with ISC dhclient (busybox
    has no DHCPv6 client), which goes on running to renew it; returns the
    address. Its DUID is link-layer (its MAC)."""
    client = getattr(host, "dhcp6_client", None)
    if client is not None and client.job.alive():
        return client.address() or client.wait_address(0, timeout)
    folder = pathlib.Path(tempfile.mkdtemp(prefix=f"sdn-dhcpc6-{host.name}-"))
    script = folder / "script"
    script.write_text(CLIENT6_SCRIPT.replace("STATE", str(folder / "state")))
    script.chmod(0o700)
    (folder / "dhclient.conf").write_text("")
    job = _start(host, f"dhclient -6 -d -D LL -sf {script} -lf {folder / 'leases'} "
                       f"-pf {folder / 'dhclient.pid'} -cf {folder / 'dhclient.conf'} "
                       f"{host.defaultIntf().name} > {folder / 'stderr'} 2>&1")
    client = DhcpClient(host, job, folder, family=6)
    host.dhcp6_client = client
    _on_stop(host, client)
    return client.wait_address(0, timeout)


def renew(host, timeout: float = 10.0) -> str:
    """Has host's client renew its lease now (SIGUSR1); returns the address
    it holds afterwards (another one when the server refused the old)."""
    client = host.dhcp_client
    seen = len(client.events())
    client.job.signal(signal.SIGUSR1)
    return client.wait_address(seen, timeout)


def stop_client(host, release: bool = False) -> None:
    """Stops host's client; with release, it gives its lease back first."""
    client = getattr(host, "dhcp_client", None)
    if client is None:
        return
    if release and client.job.alive():
        seen = len(client.events())
        client.job.signal(signal.SIGUSR2)
        deadline = time.monotonic() + 5
        while len(client.events()) == seen and time.monotonic() < deadline:
            time.sleep(0.05)
    client.stop()


def _adopt(host, ip: str) -> None:
    """Mininet's own idea of the host's address (host.IP()), without a
    command: the client's script has set it already."""
    intf = host.defaultIntf()
    intf.ip, intf.prefixLen = ip, 24


def _on_stop(host, thing) -> None:
    """lab.py stops what a host's lab_stops hold (each stop() may run twice)."""
    stops = getattr(host, "lab_stops", None)
    if stops is None:
        stops = host.lab_stops = []
    stops.append(thing)


def _stat(pid: int) -> tuple[str, int]:
    """(state, start time) of pid; ("", 0) when there is none."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except OSError:
        return "", 0
    return fields[0].decode(), int(fields[19])


def _write_hosts(folder: pathlib.Path, static: dict[str, str]) -> None:
    (folder / "hosts").write_text("".join(f"{mac},{ip}\n" for mac, ip in static.items()))


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
