from controller.hosts import HostTable


def test_learns_and_locates_by_ip():
    table = HostTable()
    assert table.learn(1, 1, "00:00:00:00:00:01", None)
    assert table.by_ip("10.0.0.1") is None
    assert table.learn(1, 1, "00:00:00:00:00:01", "10.0.0.1")
    assert not table.learn(1, 1, "00:00:00:00:00:01", "10.0.0.1")
    host = table.by_ip("10.0.0.1")
    assert (host.dpid, host.port, host.mac) == (1, 1, "00:00:00:00:00:01")


def test_ip_sighting_without_address_keeps_the_known_one():
    table = HostTable()
    table.learn(1, 1, "00:00:00:00:00:01", "10.0.0.1")
    table.learn(1, 1, "00:00:00:00:00:01", None)
    assert table.by_ip("10.0.0.1").mac == "00:00:00:00:00:01"


def test_an_address_moves_to_the_newest_host():
    table = HostTable()
    table.learn(1, 1, "00:00:00:00:00:01", "10.0.0.1")
    table.learn(1, 2, "00:00:00:00:00:02", "10.0.0.1")
    assert table.by_ip("10.0.0.1").mac == "00:00:00:00:00:02"
    assert len(table.all()) == 2


def test_hosts_seen_on_a_port_that_turns_out_an_uplink_are_forgotten():
    table = HostTable()
    table.learn(2, 3, "00:00:00:00:00:01", "10.0.0.1")
    table.learn(2, 1, "00:00:00:00:00:03", "10.0.0.3")
    assert table.forget_port(2, 3) == ["00:00:00:00:00:01"]
    assert table.by_ip("10.0.0.1") is None
    assert table.by_ip("10.0.0.3") is not None
