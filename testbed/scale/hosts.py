"""Making hosts appear: frames injected into their ports, thousands a second,
at a pace the control plane is built to take, until the controller has
located every one.

Each frame enters its host's dummy port through ovs-vswitchd's control
socket (`netdev-dummy/receive PORT FRAME...`, several frames of one port in
one call), from this process: no ovs-appctl process per frame. (The dummy
port's rxq_pcap option only records what the port receives; it reads no
file, so it is no way in.)

The pace matters because the switches are built to refuse a burst: every
copy to the controller passes the port's learning meter (50/s), the
switch-wide controller meter and Open vSwitch's own cap (1,000/s each), and
the controller's queue of 1,024 packet-ins drops the oldest beyond. A host
whose frame was dropped on the way is sent it again, as a real host
retries its ARP; how many needed it is reported.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable, Sequence

from testbed.scale import frames
from testbed.scale.measure import Budget
from testbed.scale.ovs import PrivateOvs
from testbed.scale.tree import Host, Tree


@dataclasses.dataclass
class Appearance:
    """How hosts came to be located."""
    hosts: int
    seconds: float = 0.0       # first frame sent -> last host located
    frames: int = 0            # frames injected, resent ones included
    resent: int = 0            # hosts sent their announcement again
    rounds: int = 0
    # Located hosts whose held announcement never reached the router, sent
    # again once (as a host retries its ARP; known now, it passes at once).
    not_sent_on: int = 0


class Injector:
    def __init__(self, ovs: PrivateOvs):
        self._ovs = ovs
        self.frames = 0

    def send(self, port: str, data: Sequence[bytes]) -> None:
        self._ovs.appctl("netdev-dummy/receive", port, *(f.hex() for f in data))
        self.frames += len(data)

    def paced(self, batches: Iterable[tuple[str, Sequence[bytes]]], rate: float,
              budget: Budget | None = None, phase: str = "injecting") -> None:
        """Each (port, frames) in turn, at most `rate` frames a second overall."""
        started, sent = time.monotonic(), 0
        for n, (port, data) in enumerate(batches):
            self.send(port, data)
            sent += len(data)
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
            if budget is not None and n % 1000 == 0:
                budget.check(phase)


def interleaved(hosts: Sequence[Host]) -> list[Host]:
    """The hosts switch by switch in turn (the first of each switch, then the
    second...), so that a fast stream of frames spreads over every switch's
    budget instead of exhausting one switch's after another."""
    by_switch: dict[str, list[Host]] = {}
    for host in hosts:
        by_switch.setdefault(host.switch, []).append(host)
    rounds = itertools.zip_longest(*by_switch.values())
    return [h for row in rounds for h in row if h is not None]


def announcements(hosts: Iterable[Host], router: Host, ipv6: Callable[[Host], bool]
                  ) -> Iterable[tuple[str, list[bytes]]]:
    for host in hosts:
        data = [frames.arp_announce(host, router)]
        if ipv6(host):
            data.append(frames.neighbour_advert(host, router))
        yield host.port_name, data


def appear(injector: Injector, tree: Tree, hosts: Sequence[Host],
           located: Callable[[], set[str]], *, rate: float, ipv6: Callable[[Host], bool],
           budget: Budget, settle: float = 2.0, rounds: int = 5) -> Appearance:
    """Announces the hosts and waits until located() (the IPv4 addresses of
    the hosts the controller has whole: port, and IPv6 address if
    announced) holds them all, resending to the missing ones up to `rounds`
    times. Raises TimeoutError naming how
    many are still missing."""
    router = tree.service("router")
    report = Appearance(len(hosts))
    started = time.monotonic()
    frames_before = injector.frames
    waiting = interleaved(hosts)
    for report.rounds in range(1, rounds + 1):
        injector.paced(announcements(waiting, router, ipv6), rate, budget,
                       f"announcing {len(waiting)} hosts")
        # What was sent is still in flight (meters, queues, the controller's
        # pushes): wait while the count grows, at least `settle` seconds.
        deadline = time.monotonic() + settle + len(waiting) / rate
        known = located()
        while time.monotonic() < deadline:
            budget.check(f"locating {len(hosts)} hosts")
            time.sleep(min(1.0, settle))
            now = located()
            if len(now) > len(known):
                deadline = max(deadline, time.monotonic() + settle)
            known = now
            if all(h.ip in known for h in waiting):
                break
        waiting = [h for h in waiting if h.ip not in known]
        if not waiting:
            break
        report.resent += len(waiting)
    report.seconds = time.monotonic() - started
    report.frames = injector.frames - frames_before
    if waiting:
        raise TimeoutError(f"{len(waiting)} of {len(hosts)} hosts not located after "
                           f"{report.rounds} rounds (first: {waiting[0]})")
    return report


def leases(injector: Injector, tree: Tree, hosts: Iterable[Host], rate: float,
           budget: Budget) -> int:
    """The DHCP server acknowledges each host's lease from its trusted port
    (the controller snoops the binding). Sent once the hosts are located,
    so that each goes to its host alone rather than flooding the tree.
    Returns how many were sent."""
    server = tree.service("dhcp")
    batch = [(server.port_name, [frames.dhcp_ack(server, host)]) for host in hosts]
    injector.paced(batch, rate, budget, "DHCP acknowledgements")
    return len(batch)
