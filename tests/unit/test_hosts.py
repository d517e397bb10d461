from controller.topology.hosts import HostTable


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


# ---- IPv6 -----------------------------------------------------------------------

A = "00:00:00:00:00:01"
B = "00:00:00:00:00:02"


def test_a_host_is_one_identity_found_by_any_of_its_addresses():
    table = HostTable()
    table.learn(1, 1, A, "10.0.0.1")
    table.learn(1, 1, A, None, "2001:db8::1")
    table.learn(1, 1, A, None, "fe80::1")
    for address in ("10.0.0.1", "2001:db8::1", "fe80::1"):
        host = table.by_ip(address)
        assert (host.mac, host.ip, host.ipv6) == (A, "10.0.0.1", ("2001:db8::1", "fe80::1"))
    assert not table.learn(1, 1, A, None, "2001:db8::1")  # nothing new


def test_an_ipv6_address_moves_to_the_newest_host_and_the_table_stays_bounded():
    from controller.topology.hosts import MAX_IPV6_PER_HOST
    table = HostTable()
    table.learn(1, 1, A, "10.0.0.1", "2001:db8::1")
    table.learn(1, 2, B, None, "2001:db8::1")
    assert table.by_ip("2001:db8::1").mac == B
    assert table.by_mac(A).ipv6 == () and table.by_ip("10.0.0.1").mac == A
    # A host claiming address after address keeps only its newest few, and
    # the old ones find nobody.
    for n in range(100):
        table.learn(1, 2, B, None, f"2001:db8::1:{n:x}")
    assert len(table.by_mac(B).ipv6) == MAX_IPV6_PER_HOST
    assert table.by_ip("2001:db8::1:0") is None
    assert table.by_ip("2001:db8::1:63").mac == B
    assert table.forget_port(1, 2) == [B]
    assert table.by_ip("2001:db8::1:63") is None


def test_an_inventory_prefix_names_the_pinned_subscriber_by_any_address_in_it():
    from enforcement.domain.inventory import Pinned
    table = HostTable([Pinned("ACME-1", "10.0.0.1", A, 1, 1, ("2001:db8:1::/64", "2001:db8::1"))])
    for address in ("2001:db8:1::99", "2001:db8::1", "10.0.0.1"):
        host = table.by_ip(address)
        assert (host.account, host.dpid, host.port, host.pinned) == ("ACME-1", 1, 1, True)
        assert "2001:db8:1::/64" in host.ipv6
    assert table.by_ip("2001:db8:2::1") is None
    # seen elsewhere with an address of its prefix: not believed
    assert not table.learn(2, 5, B, None, "2001:db8:1::7")
    assert table.pinned_elsewhere("2001:db8:1::7", 2, 5).account == "ACME-1"
