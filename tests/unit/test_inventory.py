"""The static inventory: parsing with named errors, and pinned locations in
the host table."""
import pytest

from controller.hosts import HostTable
from enforcement import inventory

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
