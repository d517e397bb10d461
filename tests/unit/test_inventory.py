"""The static inventory: parsing with named errors, and pinned locations in
the host table."""
import dataclasses

import pytest

from controller.topology.hosts import HostTable
from enforcement.domain import inventory

GOOD = {"subscriber": [
    {"account": "ACME-0001", "ip": "10.0.0.1", "switch": "0000000000000002", "port": 1},
    {"account": "ACME-0002", "ip": "10.0.0.2", "mac": "00:00:00:00:00:02", "switch": 2,
     "port": 2},
]}


def test_entries_are_read():
    first, second = inventory.parse(GOOD)
    assert (first.account, first.ip, first.mac, first.dpid, first.port) == (
        "ACME-0001", "10.0.0.1", None, 2, 1)
    assert second.mac == "00:00:00:00:00:02"


@pytest.mark.parametrize("change, message", [
    ({"ip": "010.0.0.1"}, "subscriber[0].ip"),
    ({"mac": "zz"}, "subscriber[0].mac"),
    ({"port": 0}, "subscriber[0].port"),
    ({"switch": "nope"}, "subscriber[0].switch"),
    ({"account": ""}, "subscriber[0].account"),
    ({"colour": "red"}, "unknown field(s) ['colour']"),
    ({"ip": "10.0.0.2"}, "have the same address"),
    ({"port": 2, "switch": 2}, "have the same port"),
])
def test_mistakes_name_the_entry_and_field(change, message):
    data = {"subscriber": [dict(GOOD["subscriber"][0], **change), GOOD["subscriber"][1]]}
    with pytest.raises(inventory.InventoryError) as caught:
        inventory.parse(data)
    assert message in str(caught.value)


def test_ipv6_addresses_and_prefixes_are_read_in_canonical_form():
    entry = dict(GOOD["subscriber"][0], ipv6=[
        "2001:DB8:1:0::5", "2001:db8:1::/64", "2001:db8:1::5/128", "2001:db8:ff00::/40"])
    first, second = inventory.parse({"subscriber": [entry, GOOD["subscriber"][1]]})
    # One address is itself, no /128; a prefix keeps its length; repeats go.
    assert first.ipv6 == ("2001:db8:1::5", "2001:db8:1::/64", "2001:db8:ff00::/40")
    assert second.ipv6 == ()
    assert [f.name for f in dataclasses.fields(inventory.Pinned)][-1] == "ipv6"
    assert inventory.Pinned("A", "10.0.0.1", None, 1, 1).ipv6 == ()


@pytest.mark.parametrize("ipv6, message", [
    ("2001:db8:1::5", "subscriber[0].ipv6 must be a list"),
    ([5], "subscriber[0].ipv6 must be a list"),
    (["fe80::1"], "subscriber[0].ipv6[0] 'fe80::1' is link-local"),
    (["2001:db8:1::5", "fe80::/64"], "subscriber[0].ipv6[1] 'fe80::/64' is link-local"),
    (["::/0"], "subscriber[0].ipv6[0] '::/0' is link-local"),
    (["ff02::1"], "subscriber[0].ipv6[0] 'ff02::1' is multicast"),
    (["10.0.0.9"], "subscriber[0].ipv6[0] '10.0.0.9' is IPv4"),
    (["10.0.0.0/24"], "is IPv4"),
    (["::1"], "is not a unicast address"),
    (["::"], "is not a unicast address"),
    (["2001:db8:1::5/64"], "subscriber[0].ipv6[0]"),
    (["2001:db8:1::5%eth0"], "subscriber[0].ipv6[0]"),
    (["2001:db8::g"], "subscriber[0].ipv6[0]"),
    ([f"2001:db8:1::{n:x}" for n in range(17)], "at most 16"),
])
def test_ipv6_mistakes_name_the_entry_and_field(ipv6, message):
    data = {"subscriber": [dict(GOOD["subscriber"][0], ipv6=ipv6), GOOD["subscriber"][1]]}
    with pytest.raises(inventory.InventoryError) as caught:
        inventory.parse(data)
    assert message in str(caught.value)


@pytest.mark.parametrize("first, second", [
    (["2001:db8:1::5"], ["2001:db8:1::5"]),
    (["2001:db8:1::/64"], ["2001:db8:1::5"]),
    (["2001:db8:1::5"], ["2001:db8:1::/64"]),
    (["2001:db8::/32"], ["2001:db8:1::/64"]),
    # The clash hides behind the first entry's own nested address.
    (["2001:db8:1::/56", "2001:db8:1::1"], ["2001:db8:1:2::/64"]),
])
def test_two_entries_may_not_share_ipv6_addresses(first, second):
    data = {"subscriber": [dict(GOOD["subscriber"][0], ipv6=first),
                           dict(GOOD["subscriber"][1], ipv6=second)]}
    with pytest.raises(inventory.InventoryError) as caught:
        inventory.parse(data)
    assert str(caught.value).startswith(
        f"ACME-0001 and ACME-0002 have overlapping IPv6 addresses ({first[0]} and ")
    assert "/128" not in str(caught.value)


def test_apart_and_self_nested_ipv6_are_fine():
    third = {"account": "ACME-0003", "ip": "10.0.0.3", "switch": 3, "port": 1,
             "ipv6": ["2001:db8:3::/48", "2001:db8:3:1::9"]}
    data = {"subscriber": [dict(GOOD["subscriber"][0], ipv6=["2001:db8:1::/64"]),
                           dict(GOOD["subscriber"][1], ipv6=["2001:db8:2::1"]),
                           third]}
    assert [p.ipv6 for p in inventory.parse(data)] == [
        ("2001:db8:1::/64",), ("2001:db8:2::1",), ("2001:db8:3::/48", "2001:db8:3:1::9")]


def test_a_pinned_subscriber_is_located_before_it_is_seen_and_stays_put():
    table = HostTable(inventory.parse(GOOD))
    pinned = table.by_ip("10.0.0.2")
    assert (pinned.dpid, pinned.port, pinned.account, pinned.pinned) == (2, 2, "ACME-0002", True)
    assert {h.ip for h in table.all()} == {"10.0.0.1", "10.0.0.2"}
    # Seen at its pinned port: its MAC is learned, the pin holds.
    assert table.learn(2, 1, "00:00:00:00:00:01", "10.0.0.1")
    assert table.by_ip("10.0.0.1").mac == "00:00:00:00:00:01"
    # Seen somewhere else: not believed.
    assert not table.learn(3, 7, "00:00:00:00:00:01", "10.0.0.1")
    assert table.pinned_elsewhere("10.0.0.1", 3, 7).account == "ACME-0001"
    assert (table.by_ip("10.0.0.1").dpid, table.by_ip("10.0.0.1").port) == (2, 1)
    # Hosts the inventory does not name are learned as before.
    assert table.learn(1, 4, "00:00:00:00:00:09", "10.0.0.9")
    assert table.by_ip("10.0.0.9").account == ""


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(inventory.InventoryError, match="No such file"):
        inventory.load(tmp_path / "missing.toml")
