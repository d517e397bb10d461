"""Who may claim what: a subscriber cannot rewrite who is where.

Every frame a subscriber sends is a claim: its source MAC says "this MAC is
here", an ARP or a neighbour advertisement says "this address is mine". The
controller's picture of the network rests on those claims (where to forward,
whom an enforcement binds), so each is judged before it is learned, the way
access switches do it (DHCP snooping, dynamic ARP inspection; RFC 7039's
source address validation, RFC 6620's first come, first served for
addresses no server hands out):

- an address under a DHCP binding belongs to the MAC the server gave it to,
  and to nobody else until the server says otherwise;
- any other address belongs to whoever claimed it first, until its holder's
  port goes down or away (the subscriber left). A claim from the holder's
  own port is the same line's business (a new router behind the same line)
  and is let through;
- a MAC belongs to the port it was learned on until that port goes down or
  away: the same MAC from another live port is someone copying it.

A refused claim changes nothing: the switch holds claims until the
controller accepts them (controller/openflow/dataplane.py), so a refused ARP is never
forwarded, and the case system hears of it (an IdentityEvent).

Pure: the host table's answers and the port states in, a verdict out.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from enforcement.domain.model import HostView

# (dpid, port) -> whether that port is known and up. A port on a switch the
# controller is not connected to counts as up: its hosts are still there.
PortLive = Callable[[int, int], bool]


@dataclasses.dataclass(frozen=True)
class Refusal:
    kind: str          # an IDENTITY_KINDS key: "address_claim" or "mac_claim"
    claimed: str       # the address or MAC claimed
    owner: str         # whose it is, in words


def where(host: HostView) -> str:
    return f"{host.mac or 'an unseen MAC'} at switch {host.dpid:016x} port {host.port}"


def judge_mac(mac: str, dpid: int, port: int, known: HostView | None,
              live: PortLive) -> Refusal | None:
    """A frame with source MAC mac arrived at (dpid, port); known is that
    MAC's host as learned. Refused while the MAC is held by another live
    port."""
    if known is None or (known.dpid, known.port) == (dpid, port):
        return None
    if not live(known.dpid, known.port):
        return None  # unplugged there, plugged in here: a move
    return Refusal("mac_claim", mac, where(known))


def judge_address(address: str, mac: str, dpid: int, port: int, holder: HostView | None,
                  bound_to: str | None, live: PortLive) -> Refusal | None:
    """MAC mac at (dpid, port) claims address (an ARP sender address, a
    neighbour advertisement's target, a solicitation's source). holder: the
    host that holds it now (the inventory's pin included); bound_to: the MAC
    a DHCP binding gives it to, if any."""
    if bound_to is not None:
        if bound_to == mac:
            return None
        owner = where(holder) if holder is not None and holder.mac == bound_to else bound_to
        return Refusal("address_claim", address, f"{owner} (DHCP lease)")
    if holder is None or holder.mac == mac:
        return None
    if holder.pinned:
        if (holder.dpid, holder.port) == (dpid, port):
            return None
        return Refusal("address_claim", address,
                       f"account {holder.account or '?'} pinned to switch "
                       f"{holder.dpid:016x} port {holder.port} (inventory)")
    if not holder.mac:
        return None
    if (holder.dpid, holder.port) == (dpid, port) or not live(holder.dpid, holder.port):
        return None
    return Refusal("address_claim", address, where(holder))
