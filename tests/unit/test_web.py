"""The topology view's HTTP server over a real socket: read-only, token when
configured, JSON that matches the service (the browser tests in
tests/e2e/test_view.py drive the page itself)."""
import ipaddress
import json
import urllib.error
import urllib.request

import pytest

from controller.web import TopologyWeb, ViewModel
from enforcement import policy
from enforcement.model import Violation
from enforcement.service import EnforcementService
from enforcement.store import Store
from enforcement.validation import validate_apply
from test_api import RecordingNetwork

TOKEN = "s3cret-token-0123456789"
V6_ONLY = "2001:db8:7::1"


@pytest.fixture
def service(tmp_path):
    return EnforcementService(RecordingNetwork(), policy.load(),
                              Store(f"sqlite:///{tmp_path}/state.db"))


def start(service, **kw):
    web = TopologyWeb(ViewModel(service, service._network), "127.0.0.1", 0, **kw)
    web.start()
    return web


def fetch(web, path, method="GET", token=None):
    request = urllib.request.Request(f"http://127.0.0.1:{web.port}{path}", method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_page_and_topology_json(service):
    record = service.apply(validate_apply(
        request_id="w1", case_id="C-<script>", ip="10.0.0.1", mac="",
        violation=Violation.SPAM, reason="r"))
    web = start(service)
    try:
        status, page = fetch(web, "/")
        assert status == 200 and b"<svg id=\"map\"" in page
        status, body = fetch(web, "/api/topology")
        topo = json.loads(body)
        assert status == 200
        assert {s["id"] for s in topo["switches"]} == {f"{1:016x}", f"{2:016x}"}
        assert topo["links"] == [{"a": f"{1:016x}", "a_port": 3, "b": f"{2:016x}",
                                  "b_port": 3, "up": True}]
        assert all(0 <= n["x"] <= 1 and 0 <= n["y"] <= 1
                   for n in topo["switches"] + topo["hosts"])
        status, body = fetch(web, f"/api/enforcements/{record.id}")
        detail = json.loads(body)
        assert status == 200 and detail["case"] == "C-<script>"
        assert detail["action"] == "block" and any("tcp_dst=25" in r for r in detail["rules"])
        assert fetch(web, "/api/enforcements/enf-nope")[0] == 404
        assert fetch(web, "/nothing")[0] == 404
    finally:
        web.stop()


def test_a_link_that_goes_away_stays_on_the_map_as_down(service):
    web = start(service)
    try:
        fetch(web, "/api/topology")
        service._network.topology = _without_links
        topo = json.loads(fetch(web, "/api/topology")[1])
        assert [link["up"] for link in topo["links"]] == [False]
    finally:
        web.stop()


def _without_links():
    from enforcement.model import TopologyView
    view = RecordingNetwork().topology()
    return TopologyView(view.switches, (), view.hosts)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_the_view_is_read_only(service, method):
    web = start(service)
    try:
        status, _ = fetch(web, "/api/topology", method=method)
        assert status == 405
    finally:
        web.stop()


def test_with_a_token_every_request_needs_it(service):
    web = start(service, token=TOKEN)
    try:
        assert fetch(web, "/")[0] == 401
        assert fetch(web, "/api/topology", token="wrong-token-0123456789")[0] == 401
        assert fetch(web, "/api/topology", token=TOKEN)[0] == 200
    finally:
        web.stop()


def test_a_host_shows_its_ipv6_addresses_and_the_enforcements_they_named(tmp_path):
    from test_api import V6, DualStackNetwork
    dual = EnforcementService(DualStackNetwork(), policy.load(),
                              Store(f"sqlite:///{tmp_path}/dual.db"))
    record = dual.apply(validate_apply(request_id="w6", case_id="C-6", ip=V6, mac="",
                                       violation=Violation.SPAM, reason="r"))
    web = start(dual)
    try:
        topo = json.loads(fetch(web, "/api/topology")[1])
        page = fetch(web, "/")[1]
    finally:
        web.stop()
    host = next(h for h in topo["hosts"] if h["ip"] == "10.0.0.1")
    assert host["ipv6"] == list(DualStackNetwork.IPV6)
    [shown] = host["enforcements"]
    assert shown["id"] == record.id and shown["subscriber"] == V6
    assert {V6, "10.0.0.1"} <= set(shown["addresses"])
    neighbour = next(h for h in topo["hosts"] if h["ip"] == "10.0.0.3")
    assert neighbour["ipv6"] == [] and neighbour["enforcements"] == []
    # The page lists them (tooltip, details) and marks each host's addresses.
    assert b'"data-ipv6"' in page and b'class="ipv6"' in page and b'el("title"' in page


class _Live:
    """A service whose only live enforcement was planned before addresses
    were recorded: named by an IPv6 address, nothing else known."""

    def __init__(self, record, view):
        self.record, self.view = record, view

    def topology(self):
        return self.view, {}

    def list(self, states=()):
        return [self.record]


def test_a_host_known_by_ipv6_only_is_found_by_the_address_its_enforcement_named(service):
    import dataclasses

    from enforcement.model import HostView, Subscriber, TopologyView
    record = service.apply(validate_apply(request_id="w7", case_id="C-7", ip="10.0.0.1",
                                          mac="", violation=Violation.SPAM, reason="r"))
    decision = dataclasses.replace(record.decision,
                                   subscriber=Subscriber(ip=ipaddress.ip_address(V6_ONLY)))
    record = dataclasses.replace(record, decision=decision, addresses=())
    hosts = (HostView("00:00:00:00:00:07", None, 1, 7,
                      ipv6=("fe80::7", "2001:db8:7::/64")),
             HostView("00:00:00:00:00:08", None, 1, 8, ipv6=("fe80::7",)))
    view = TopologyView(service._network.topology().switches, (), hosts)
    topo = ViewModel(_Live(record, view), service._network).topology()
    owner, other = topo["hosts"]
    assert [e["id"] for e in owner["enforcements"]] == [record.id]
    assert owner["ip"] == "" and owner["ipv6"] == ["fe80::7", "2001:db8:7::/64"]
    assert other["enforcements"] == []
