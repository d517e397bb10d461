"""Doubles of the switch side (what EnforcementService calls a network) and
of the clock, for tests of everything above the switches: the gRPC API, the
lifecycle, the store, TLS, leadership. The Mininet tests use real switches."""
import contextlib
from collections.abc import Iterator

import grpc

from enforcement.api.servicer import create_server
from enforcement.domain import policy
from enforcement.domain.desired import SwitchState, apply_change, diff, diff_part
from enforcement.domain.errors import SwitchError, SwitchUnreachable
from enforcement.domain.flows import FlowRule
from enforcement.domain.model import HostView, LinkView, Location, SwitchView, TopologyView
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store

NOTHING = diff(SwitchState.empty(), SwitchState.empty())


@contextlib.contextmanager
def served(service) -> Iterator:
    """A stub of the service's gRPC API on a real loopback socket."""
    from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
    server, port = create_server("127.0.0.1:0", service)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.EnforcementServiceStub(channel)
    finally:
        server.stop(None)


def take_part(holdings: dict, dpid, rules, meters):
    """What a switch double does with Network.sync_part: holdings[dpid]
    becomes a copy with the difference applied; returns the difference."""
    held = holdings.get(dpid, SwitchState.empty())
    held = SwitchState(dict(held.rules), dict(held.meters))
    change = diff_part(held, rules, meters)
    apply_change(held, change)
    holdings[dpid] = held
    return change


class RecordingNetwork:
    def __init__(self):
        self.hosts = {"10.0.0.1": Location(1, 1, "00:00:00:00:00:01"),
                      "10.0.0.3": Location(2, 1, "00:00:00:00:00:03")}
        self.connected = {1, 2}
        self.state = {}
        self.refuse = None

    def locate(self, ip):
        return self.hosts.get(ip)

    def host(self, ip):
        where = self.locate(ip)
        return None if where is None else HostView(where.mac, ip, where.dpid, where.port)

    def subscriber(self, mac):
        return next((HostView(mac, ip, where.dpid, where.port)
                     for ip, where in self.hosts.items() if where.mac == mac), None)

    def is_connected(self, dpid):
        return dpid in self.connected

    def sync(self, dpid, desired, timeout, verify=False):
        if self.refuse:
            raise SwitchError(self.refuse)
        change = diff(self.state.get(dpid, desired.empty()), desired)
        self.state[dpid] = desired
        return change

    def audit(self, dpid, timeout):
        # What the double holds is both what the switch reports and what it
        # confirmed: drift shows in the service's full sync against it.
        return NOTHING

    def sync_part(self, dpid, rules, meters, timeout, meanwhile=None):
        if self.refuse:
            raise SwitchError(self.refuse)
        return take_part(self.state, dpid, rules, meters)

    @property
    def flows(self):
        return {rule for state in self.state.values() for rule in state.rules.values()}

    def topology(self):
        # dns and portal behind switch 2, reached from switch 1 through port 3
        return TopologyView(
            (SwitchView(1, ()), SwitchView(2, ())),
            (LinkView(1, 3, 2, 3), LinkView(2, 3, 1, 3)),
            (HostView("00:00:00:00:00:fa", "10.0.0.250", 2, 5),
             HostView("00:00:00:00:00:fb", "10.0.0.251", 2, 6)))


V6 = "2001:db8:1::1"


class DualStackNetwork(RecordingNetwork):
    """10.0.0.1 is also 2001:db8:1::1 in its /64, with a link-local address."""
    IPV6 = ("fe80::200:ff:fe00:1", V6, "2001:db8:1::/64")

    def locate(self, ip):
        return super().locate("10.0.0.1" if ip in self.IPV6 else ip)

    def host(self, ip):
        where = self.locate(ip)
        if where is None:
            return None
        if where == self.hosts["10.0.0.1"]:
            return HostView(where.mac, "10.0.0.1", where.dpid, where.port, account="ACME-1",
                            pinned=True, ipv6=self.IPV6)
        return HostView(where.mac, ip, where.dpid, where.port)

    def topology(self):
        view = super().topology()
        return TopologyView(view.switches, view.links,
                            (*view.hosts, self.host("10.0.0.1"), self.host("10.0.0.3")))


class Switches:
    """What each switch holds, as a real one would report it."""

    def __init__(self):
        self.hosts = {"10.0.0.1": Location(1, 1, "00:00:00:00:00:01"),
                      "10.0.0.2": Location(1, 2, "00:00:00:00:00:02")}
        self.ipv6 = {"00:00:00:00:00:01": ("2001:db8::1", "fe80::200:ff:fe00:1")}
        self.connected = {1, 2}
        self.held: dict[int, SwitchState] = {}
        self.confirmed: dict[int, SwitchState] = {}  # what each switch confirmed holding
        self.unreachable_once = False

    def locate(self, ip):
        host = self.host(ip)
        return None if host is None else Location(host.dpid, host.port, host.mac)

    def host(self, ip):
        """The identity of either family's address (hosts by IPv4, with the
        IPv6 addresses of their MAC)."""
        for v4, where in self.hosts.items():
            v6 = self.ipv6.get(where.mac, ())
            if ip == v4 or ip in v6:
                return HostView(where.mac, v4, where.dpid, where.port, ipv6=v6)
        return None

    def subscriber(self, mac):
        return next((self.host(ip) for ip, where in self.hosts.items() if where.mac == mac),
                    None)

    def is_connected(self, dpid):
        return dpid in self.connected

    def sync(self, dpid, desired, timeout, verify=False):
        if self.unreachable_once:
            self.unreachable_once = False
            raise SwitchUnreachable("no answer")
        change = diff(self.held.get(dpid, SwitchState.empty()), desired)
        self.held[dpid] = self.confirmed[dpid] = desired
        return change

    def audit(self, dpid, timeout):
        """Like SwitchSync.audit: what the switch holds against what it
        confirmed (a state put in held by hand is drift), repaired."""
        confirmed = self.confirmed.get(dpid)
        if confirmed is None or self.held.get(dpid) is confirmed:
            return NOTHING
        change = diff(self.held.get(dpid, SwitchState.empty()), confirmed)
        self.held[dpid] = confirmed
        return change

    def sync_part(self, dpid, rules, meters, timeout, meanwhile=None):
        if self.unreachable_once:
            self.unreachable_once = False
            raise SwitchUnreachable("no answer")
        change = take_part(self.held, dpid, rules, meters)
        self.confirmed[dpid] = self.held[dpid]
        return change

    def topology(self):
        return TopologyView((SwitchView(1, ()), SwitchView(2, ())),
                            (LinkView(1, 3, 2, 3), LinkView(2, 3, 1, 3)),
                            (HostView("00:00:00:00:00:fa", "10.0.0.250", 2, 5),
                             HostView("00:00:00:00:00:fb", "10.0.0.251", 2, 6)))

    def rules(self, dpid=1):
        return list(self.held.get(dpid, SwitchState.empty()).rules.values())


class Clock:
    """The time a service reads: moved on by the test."""

    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


def recording_service(url: str) -> EnforcementService:
    """A service on the recording double and a real store at url."""
    return EnforcementService(RecordingNetwork(), policy.load(), Store(url))


# ---- what SwitchSync calls besides the switch, and rules to push through it

DPID = 5


def rule(n):
    """Enforcement rule n (a TCP port blocked) on switch DPID."""
    return FlowRule(DPID, 0, 3000, 0x5DE0_0000_0000_0000 | n,
                    (("eth_type", 0x800), ("ip_proto", 6), ("ipv4_src", "10.0.0.1"),
                     ("tcp_dst", 1000 + n)))


class Fabric:
    """The fabric SwitchSync tells of audits and closings: it does nothing."""

    def audit(self, dpid):
        pass

    def set_closing(self, dpid, **_):
        pass
