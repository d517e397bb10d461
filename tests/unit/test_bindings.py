"""DHCP snooping's binding table (controller/topology/dhcp/bindings.py): the server
decides, leases end on the table's clock, and every change is told."""
import math

import pytest

from controller.topology.dhcp.bindings import Binding, BindingTable, Release
from controller.topology.dhcp.replies import Lease, ServerReply

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def table(clock):
    return BindingTable(clock)


def ack(mac, ip, seconds=120.0, kind="ACK", family=4):
    return ServerReply(family, kind, mac, (Lease(ip, seconds),) if ip else (), "10.0.0.253",
                       "02:00:00:00:00:fd", offered=ip or "")


def test_an_ack_binds_the_address_to_the_mac_until_the_lease_ends(table):
    assert table.apply(ack(A, "10.0.0.101")) == [Binding(A, "10.0.0.101", 1120.0)]
    assert table.by_ip("10.0.0.101") == Binding(A, "10.0.0.101", 1120.0)
    assert table.by_mac(A) == (Binding(A, "10.0.0.101", 1120.0),)
    assert table.by_mac(B) == () and table.by_ip("10.0.0.102") is None
    assert len(table) == 1 and table.next_end() == 1120.0


def test_a_renewal_moves_the_lease_end(table, clock):
    table.apply(ack(A, "10.0.0.101"))
    clock.now += 60
    assert table.apply(ack(A, "10.0.0.101")) == [Binding(A, "10.0.0.101", 1180.0)]
    assert table.bindings() == [Binding(A, "10.0.0.101", 1180.0)]


def test_offers_change_nothing(table):
    assert table.apply(ack(A, "10.0.0.101", kind="OFFER")) == []
    assert table.apply(ack(A, "2001:db8::1", kind="ADVERTISE", family=6)) == []
    assert len(table) == 0


def test_the_same_address_given_to_another_mac_replaces_the_first(table):
    table.apply(ack(A, "10.0.0.101"))
    changes = table.apply(ack(B, "10.0.0.101"))
    assert changes == [Release(Binding(A, "10.0.0.101", 1120.0), "reassigned"),
                       Binding(B, "10.0.0.101", 1120.0)]
    assert table.by_mac(A) == () and table.by_ip("10.0.0.101").mac == B


def test_a_new_ipv4_address_for_a_mac_ends_its_old_one(table):
    table.apply(ack(A, "10.0.0.101"))
    changes = table.apply(ack(A, "10.0.0.150"))
    assert changes == [Release(Binding(A, "10.0.0.101", 1120.0), "moved"),
                       Binding(A, "10.0.0.150", 1120.0)]
    assert table.by_ip("10.0.0.101") is None


def test_a_nak_ends_the_macs_ipv4_binding_only(table):
    table.apply(ack(A, "10.0.0.101"))
    table.apply(ack(A, "2001:db8::101", family=6, kind="REPLY"))
    table.apply(ack(B, "10.0.0.102"))
    changes = table.apply(ack(A, None, kind="NAK"))
    assert changes == [Release(Binding(A, "10.0.0.101", 1120.0), "nak")]
    assert [b.ip for b in table.by_mac(A)] == ["2001:db8::101"]
    assert table.by_ip("10.0.0.102") is not None
    assert table.apply(ack(A, None, kind="NAK")) == []  # nothing left to end


def test_leases_expire_at_their_end_and_are_returned_once(table, clock):
    table.apply(ack(A, "10.0.0.101", 60))
    table.apply(ack(B, "10.0.0.102", 120))
    clock.now = 1059.9
    assert table.expire() == []
    clock.now = 1060.0
    assert table.expire() == [Release(Binding(A, "10.0.0.101", 1060.0), "expired")]
    assert table.expire() == []
    clock.now = 5000
    assert table.expire() == [Release(Binding(B, "10.0.0.102", 1120.0), "expired")]
    assert len(table) == 0 and table.next_end() is None


def test_an_infinite_lease_never_expires(table, clock):
    table.apply(ack(A, "10.0.0.101", math.inf))
    clock.now = 1e12
    assert table.expire() == [] and table.next_end() is None
    assert "no lease end" in table.by_ip("10.0.0.101").text()


def test_dhcpv6_gives_several_addresses_and_withdraws_one_at_a_time(table):
    reply = ServerReply(6, "REPLY", A, (Lease("2001:db8::101", 3600), Lease("2001:db8::1:1", 60)),
                        "0003", "02:00:00:00:00:fd", client_duid="00030001")
    assert table.apply(reply) == [Binding(A, "2001:db8::101", 4600.0, "00030001"),
                                  Binding(A, "2001:db8::1:1", 1060.0, "00030001")]
    withdrawn = ServerReply(6, "REPLY", A, (Lease("2001:db8::1:1", 0),), "0003", "x")
    assert table.apply(withdrawn) == [Release(Binding(A, "2001:db8::1:1", 1060.0, "00030001"),
                                              "withdrawn")]
    # Nobody else's address is withdrawn by naming it.
    assert table.apply(ServerReply(6, "REPLY", B, (Lease("2001:db8::101", 0),), "", "x")) == []
    assert [b.ip for b in table.by_mac(A)] == ["2001:db8::101"]


def test_addresses_and_macs_are_looked_up_in_any_spelling(table):
    table.bind(A.upper(), "2001:DB8:0::101", 60)
    assert table.by_ip("2001:db8::101").mac == A
    assert table.by_mac(A.upper())[0].ip == "2001:db8::101"


def test_release_reasons_are_known():
    with pytest.raises(ValueError):
        Release(Binding(A, "10.0.0.1", 1.0), "because")
