import pytest

from enforcement.domain.model import HostView, LinkView, SwitchView, TopologyView
from enforcement.domain.routing import Hop, NoRoute, route


def view(links, hosts):
    dpids = {a for a, _, _, _ in links} | {c for _, _, c, _ in links} | {h[2] for h in hosts}
    both_ways = [LinkView(a, b, c, d) for a, b, c, d in links] + [LinkView(c, d, a, b)
                                                                for a, b, c, d in links]
    return TopologyView(tuple(SwitchView(d, ()) for d in sorted(dpids)), tuple(both_ways),
                        tuple(HostView(f"00:00:00:00:00:{i:02x}", ip, d, p)
                              for i, (ip, _, d, p) in enumerate(hosts)))


ISP = view([(2, 3, 1, 1), (3, 3, 1, 2), (9, 5, 1, 3)], [("10.0.0.251", None, 9, 2)])


def test_hops_from_access_switch_to_the_servers_port():
    assert route(ISP, 2, "10.0.0.251") == (Hop(2, None, 3), Hop(1, 1, 3), Hop(9, 5, 2))


def test_same_switch_is_a_single_hop():
    assert route(ISP, 9, "10.0.0.251") == (Hop(9, None, 2),)


def test_equal_paths_are_chosen_the_same_way_every_time():
    ring = view([(1, 1, 2, 1), (2, 2, 4, 1), (1, 2, 3, 1), (3, 2, 4, 2)],
                [("10.0.0.251", None, 4, 9)])
    assert [h.dpid for h in route(ring, 1, "10.0.0.251")] == [1, 2, 4]


def test_unknown_host_or_no_path_is_said():
    with pytest.raises(NoRoute, match="has not been seen"):
        route(ISP, 2, "10.0.0.99")
    island = view([(2, 3, 1, 1)], [("10.0.0.251", None, 7, 1)])
    with pytest.raises(NoRoute, match="no path"):
        route(island, 2, "10.0.0.251")


def test_a_link_reported_in_one_direction_only_carries_no_path():
    # s1 -- s2 -- s4 and s1 -- s3 -- s4; the s1 -> s2 direction stopped
    # answering LLDP (a silent failure): the path goes round by s3.
    ring = view([(1, 1, 2, 1), (2, 2, 4, 1), (1, 2, 3, 1), (3, 2, 4, 2)],
                [("10.0.0.251", None, 4, 9)])
    one_way = TopologyView(ring.switches,
                           tuple(link for link in ring.links
                                 if (link.src_dpid, link.dst_dpid) != (1, 2)),
                           ring.hosts)
    assert [h.dpid for h in route(one_way, 1, "10.0.0.251")] == [1, 3, 4]


def test_a_server_is_found_by_any_spelling_of_its_ipv6_address():
    server = HostView("00:00:00:00:00:fb", "10.0.0.251", 9, 2,
                      ipv6=("fe80::fb", "2001:db8::fb", "2001:db8:1::/64"))
    dual = TopologyView(ISP.switches, ISP.links, (server,))
    by_ipv4 = route(dual, 2, "10.0.0.251")
    for spelling in ("2001:db8::fb", "2001:DB8:0::FB", "2001:0db8:0000::00fb", "fe80::fb"):
        assert route(dual, 2, spelling) == by_ipv4, spelling


def test_an_inventory_prefix_or_an_unknown_ipv6_address_is_no_host():
    server = HostView("00:00:00:00:00:fb", None, 9, 2, ipv6=("2001:db8:1::/64",))
    v6_only = TopologyView(ISP.switches, ISP.links, (server,))
    for address in ("2001:db8:1::", "2001:db8:1::/64", "2001:db8::99"):
        with pytest.raises(NoRoute, match="has not been seen"):
            route(v6_only, 2, address)
