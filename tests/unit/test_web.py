"""The topology view's HTTP server over a real socket (aiohttp on its own
thread): read-only, token when configured, client certificates when given,
JSON that matches the service, a stream that pushes each change; and its
pure parts (layout, host slots, search, diffs, quarantine paths). The
browser tests in tests/e2e/test_view*.py drive the page itself."""
import http.client
import ipaddress
import json
import math
import ssl
import time
import urllib.error
import urllib.request

import pytest

from controller.view import server as webmodule
from controller.view.feed import build_index, diff, normalise, search
from controller.view.scene import HostSlots, SwitchLayout
from controller.view.server import MissingAsset, TopologyWeb, ViewModel
from enforcement.domain import policy
from enforcement.domain.model import Violation
from enforcement.domain.validation import validate_apply
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from tests.doubles import RecordingNetwork

TOKEN = "s3cret-token-0123456789"
V6_ONLY = "2001:db8:7::1"
S1, S2 = f"{1:016x}", f"{2:016x}"


class ViewNetwork(RecordingNetwork):
    """The recording double whose topology also shows the subscribers it
    locates (10.0.0.1 on switch 1, 10.0.0.3 on switch 2), next to the
    walled garden's servers."""

    def topology(self):
        from enforcement.domain.model import HostView, TopologyView
        view = super().topology()
        located = tuple(HostView(where.mac, ip, where.dpid, where.port)
                        for ip, where in sorted(self.hosts.items()))
        return TopologyView(view.switches, view.links, (*located, *view.hosts))


@pytest.fixture
def service(tmp_path):
    return EnforcementService(ViewNetwork(), policy.load(),
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


def apply(service, request_id, ip="10.0.0.1", violation=Violation.SPAM, case="C-1"):
    return service.apply(validate_apply(request_id=request_id, case_id=case, ip=ip, mac="",
                                        violation=violation, reason="r"))


def test_page_and_topology_json(service):
    record = apply(service, "w1", case="C-<script>")
    web = start(service)
    try:
        status, page = fetch(web, "/")
        assert status == 200 and b'<div id="map">' in page
        assert b"static/cytoscape.min.js" in page and b"//cdn" not in page
        status, library = fetch(web, "/static/cytoscape.min.js")
        assert status == 200 and b"cytoscape" in library[:2000]
        assert fetch(web, "/static/../web.py")[0] == 404
        status, body = fetch(web, "/api/topology")
        topo = json.loads(body)
        assert status == 200
        # Named as enforcementctl prints a datapath id, not s1.
        assert [(s["id"], s["name"]) for s in topo["switches"]] == [(S1, S1), (S2, S2)]
        assert [(s["hosts"], s["enforced"]) for s in topo["switches"]] == [(1, 1), (3, 0)]
        assert topo["links"] == [{"a": S1, "a_port": 3, "b": S2, "b_port": 3, "up": True}]
        assert all(0 <= s["x"] <= 1 and 0 <= s["y"] <= 1 for s in topo["switches"])
        assert sorted(h["slot"] for h in topo["hosts"]) == [0, 0, 1, 2]
        status, body = fetch(web, f"/api/enforcements/{record.id}")
        detail = json.loads(body)
        assert status == 200 and detail["case"] == "C-<script>"
        assert detail["action"] == "block" and any("tcp_dst=25" in r for r in detail["rules"])
        assert fetch(web, "/api/enforcements/enf-nope")[0] == 404
        assert fetch(web, "/nothing")[0] == 404
    finally:
        web.stop()


def test_the_page_may_load_nothing_from_elsewhere(service):
    web = start(service)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web.port}/", timeout=5) as response:
            policy_header = response.headers["Content-Security-Policy"]
            assert response.headers["Server"] == "enforcement-view"
    finally:
        web.stop()
    assert "default-src 'self'" in policy_header


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
    from enforcement.domain.model import TopologyView
    view = ViewNetwork().topology()
    return TopologyView(view.switches, (), view.hosts)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_the_view_is_read_only(service, method):
    web = start(service, token=TOKEN)
    try:
        # Refused for what it is before anyone is asked who they are.
        for path in ("/api/topology", "/api/stream", "/"):
            status, _ = fetch(web, path, method=method, token=TOKEN)
            assert status == 405
        assert fetch(web, "/api/topology", method="HEAD", token=TOKEN)[0] == 200
    finally:
        web.stop()


def test_with_a_token_every_request_for_data_needs_it(service):
    web = start(service, token=TOKEN)
    try:
        for path in ("/api/topology", "/api/stream", "/api/search?q=x",
                     "/api/enforcements/x", "/api/nothing-here"):
            assert fetch(web, path)[0] == 401
            assert fetch(web, path, token="wrong-token-0123456789")[0] == 401
        assert fetch(web, "/api/topology", token=TOKEN)[0] == 200
        # The page and its files load without it (a browser cannot add the
        # header to a navigation) and hold no subscriber's data.
        for path in ("/", "/static/view.js", "/static/view.css"):
            status, body = fetch(web, path)
            assert status == 200
            assert b"10.0.0." not in body and b"00:00:00:00:00:0" not in body
    finally:
        web.stop()


def test_with_client_certificates_the_access_file_decides(service, tmp_path):
    from enforcement.api.tlsgate import server_context
    from enforcement.clients.certs import generate
    generate(tmp_path, clients=["noc", "intruder"], server_hosts=["127.0.0.1"])
    context = server_context(str(tmp_path / "server.pem"), str(tmp_path / "server.key"),
                             str(tmp_path / "ca.pem"), alpn=("http/1.1",))
    web = start(service, ssl_context=context, may_read=lambda name: name == "noc")

    def get(client):
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        if client:
            ctx.load_cert_chain(str(tmp_path / f"{client}.pem"), str(tmp_path / f"{client}.key"))
        connection = http.client.HTTPSConnection("127.0.0.1", web.port, context=ctx, timeout=5)
        try:
            connection.request("GET", "/api/topology")
            return connection.getresponse().status
        except (ssl.SSLError, OSError):
            return "refused"
        finally:
            connection.close()

    try:
        assert get("noc") == 200
        assert get("intruder") == 403
        assert get(None) == "refused"
    finally:
        web.stop()


def test_without_its_browser_library_the_view_says_what_to_do(service, tmp_path, monkeypatch):
    (tmp_path / "static").mkdir()
    for name in ("index.html", "view.js", "view.css"):
        (tmp_path / "static" / name).write_text("x")
    monkeypatch.setattr(webmodule.importlib.resources, "files", lambda package: tmp_path)
    with pytest.raises(MissingAsset, match=r"cytoscape.min.js.*scripts/setup.sh") as caught:
        TopologyWeb(ViewModel(service, service._network), "127.0.0.1", 0)
    assert isinstance(caught.value, OSError)  # main reports it as a view it cannot serve


def test_a_host_shows_its_ipv6_addresses_and_the_enforcements_they_named(tmp_path):
    from tests.doubles import V6, DualStackNetwork
    dual = EnforcementService(DualStackNetwork(), policy.load(),
                              Store(f"sqlite:///{tmp_path}/dual.db"))
    record = apply(dual, "w6", ip=V6, case="C-6")
    web = start(dual)
    try:
        topo = json.loads(fetch(web, "/api/topology")[1])
        script = fetch(web, "/static/view.js")[1]
        # Any spelling of the address finds the host.
        found = json.loads(fetch(web, "/api/search?q=" + V6.upper())[1])["hosts"]
    finally:
        web.stop()
    host = next(h for h in topo["hosts"] if h["ip"] == "10.0.0.1")
    assert host["ipv6"] == list(DualStackNetwork.IPV6)
    [shown] = host["enforcements"]
    assert shown["id"] == record.id and shown["subscriber"] == V6
    assert {V6, "10.0.0.1"} <= set(shown["addresses"])
    neighbour = next(h for h in topo["hosts"] if h["ip"] == "10.0.0.3")
    assert neighbour["ipv6"] == [] and neighbour["enforcements"] == []
    assert {h["mac"] for h in found} == {host["mac"]}
    # The page lists them in the details and keeps them on each host's node.
    assert b'class="ipv6"' in script and b"ipv6: (h.ipv6" in script


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

    from enforcement.domain.model import HostView, Subscriber, TopologyView
    record = apply(service, "w7", case="C-7")
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
    assert [m for m, _ in search(build_index(topo["hosts"]), V6_ONLY)] == [owner["mac"]]


# ---- the pushed stream, over a real socket ------------------------------------

class Stream:
    """An SSE client as a browser's EventSource reads the stream."""

    def __init__(self, web, token=None):
        self.connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.connection.request("GET", "/api/stream", headers=headers)
        self.response = self.connection.getresponse()

    def next(self) -> tuple[str, dict]:
        kind, data = "", ""
        while True:
            raw = self.response.fp.readline()
            if not raw:
                raise EOFError("the server ended the stream")
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and kind:
                return kind, json.loads(data)

    def close(self):
        self.connection.close()


def test_the_stream_pushes_a_decision_and_a_lift_as_differences(service):
    web = start(service)
    stream = Stream(web)
    try:
        assert stream.response.headers["Content-Type"] == "text/event-stream"
        kind, first = stream.next()
        assert kind == "snapshot" and first["topology"]["hosts"]
        record = apply(service, "s1")
        kind, change = stream.next()
        assert kind == "diff" and change["version"] == first["version"] + 1
        [host] = change["hosts"]["changed"]
        assert host["ip"] == "10.0.0.1" and [e["id"] for e in host["enforcements"]] == [record.id]
        assert "links" not in change  # only what changed
        service.lift(record.id, "done")
        kind, change = stream.next()
        assert kind == "diff" and change["hosts"]["changed"][0]["enforcements"] == []
    finally:
        stream.close()
        web.stop()


def test_the_stream_pushes_a_host_that_moved_without_any_event(service):
    from enforcement.domain.model import Location
    web = start(service)
    stream = Stream(web)
    try:
        stream.next()
        service._network.hosts["10.0.0.9"] = Location(2, 9, "00:00:00:00:00:09")
        kind, change = stream.next()
        assert kind == "diff" and [h["mac"] for h in change["hosts"]["changed"]] == [
            "00:00:00:00:00:09"]
        assert change["switches"]["changed"][0]["hosts"] == 4
    finally:
        stream.close()
        web.stop()


def test_no_snapshot_is_taken_while_no_page_watches(service):
    """Each snapshot of a big network costs the GIL that decisions need:
    with no page open, decisions build none; the next page to connect gets
    one that holds them."""
    web = start(service)
    try:
        idle = web._feed.version
        records = [apply(service, f"idle-{n}", ip=f"10.0.0.{n}") for n in (1, 3)]
        time.sleep(1.0)  # several of the feed's ticks
        assert web._feed.version == idle
        stream = Stream(web)
        try:
            kind, first = stream.next()
            marked = {h["ip"]: [e["id"] for e in h["enforcements"]]
                      for h in first["topology"]["hosts"]}
            assert kind == "snapshot" and first["version"] == idle + 1
            assert marked["10.0.0.1"] == [records[0].id]
            assert marked["10.0.0.3"] == [records[1].id]
        finally:
            stream.close()
    finally:
        web.stop()


def test_a_burst_of_decisions_is_one_push(service, monkeypatch):
    """After a push the feed waits before the next: decisions that come
    meanwhile go out together, in the next one."""
    from controller.view import feed as viewfeed
    from enforcement.domain.model import Location
    monkeypatch.setattr(viewfeed, "COALESCE_SECONDS", 5.0)
    service._network.hosts["10.0.0.2"] = Location(1, 2, "00:00:00:00:00:02")
    web = start(service)
    stream = Stream(web)
    try:
        _, first = stream.next()
        apply(service, "burst-0", ip="10.0.0.1")
        _, pushed = stream.next()  # the first decision, at once
        assert pushed["version"] == first["version"] + 1
        records = [apply(service, "burst-2", ip="10.0.0.2")]
        time.sleep(0.5)  # long enough for a feed that did not wait to push it alone
        records.append(apply(service, "burst-3", ip="10.0.0.3"))
        _, together = stream.next()  # both, in one push after the pause
        assert together["version"] == pushed["version"] + 1
        changed = {h["ip"]: [e["id"] for e in h["enforcements"]]
                   for h in together["hosts"]["changed"]}
        assert changed == {"10.0.0.2": [records[0].id], "10.0.0.3": [records[1].id]}
    finally:
        stream.close()
        web.stop()


def test_a_page_that_falls_behind_is_cut_off_not_buffered_for(service, monkeypatch):
    monkeypatch.setattr(webmodule, "BACKLOG", 2)
    web = start(service)
    stream = Stream(web)
    try:
        assert stream.next()[0] == "snapshot"
        # Five differences in one turn of the loop: the stream cannot take
        # them as they come, and is ended (its EventSource then reconnects).
        web._loop.call_soon_threadsafe(lambda: [web._broadcast('{"version": 0}')
                                                for _ in range(5)])
        with pytest.raises(EOFError):
            stream.next()
    finally:
        stream.close()
        web.stop()


def test_a_quarantine_shows_its_path_to_the_walled_garden(service):
    record = apply(service, "q1", violation=Violation.MALWARE, case="C-Q")
    assert record.action.kind.value == "quarantine"
    topo = ViewModel(service, service._network).topology()
    paths = {p["garden"]: p for p in topo["paths"]}
    # dns and portal sit on switch 2, the subscriber on switch 1.
    assert set(paths) == {"10.0.0.250", "10.0.0.251"}
    assert all(p["switches"] == [S1, S2] and p["enforcement"] == record.id
               and p["host"] == "00:00:00:00:00:01" for p in paths.values())
    assert paths["10.0.0.250"]["garden_host"] == "00:00:00:00:00:fa"
    # The switches the path crosses are the ones the enforcement's rules are on.
    assert {f"{r.dpid:016x}" for r in record.rules} == {S1, S2}
    service.lift(record.id, "done")
    assert ViewModel(service, service._network).topology()["paths"] == []


# ---- pure parts ------------------------------------------------------------------

def test_switch_positions_never_move_once_given():
    ring = [f"{n:016x}" for n in range(1, 9)]
    edges = [(ring[i], ring[(i + 1) % 8]) for i in range(8)]
    layout = SwitchLayout()
    first = layout.positions(ring, edges)
    assert first == SwitchLayout().positions(list(reversed(ring)), edges)  # deterministic
    grown = layout.positions([*ring, f"{9:016x}"], [*edges, (ring[0], f"{9:016x}")])
    assert {s: grown[s] for s in ring} == first
    assert 0 < grown[f"{9:016x}"]["x"] < 1 and 0 < grown[f"{9:016x}"]["y"] < 1
    # A switch that leaves and comes back returns where it was.
    layout.positions(ring[1:], edges)
    assert layout.positions(ring, edges) == first


def test_a_host_keeps_its_slot_while_others_come_and_go():
    slots = HostSlots()
    assert slots.assign({"s": ["b", "a", "c"]}) == {("s", "a"): 0, ("s", "b"): 1, ("s", "c"): 2}
    assert slots.assign({"s": ["c", "a", "d"]}) == {("s", "a"): 0, ("s", "c"): 2, ("s", "d"): 1}
    assert slots.assign({"s": ["a", "c", "d", "e"]})[("s", "e")] == 3


def _host(mac, ip="", ipv6=(), account="", cases=()):
    return {"mac": mac, "ip": ip, "ipv6": list(ipv6), "account": account,
            "enforcements": [{"case": c, "id": f"enf-{c}", "subscriber": ip or ipv6[0],
                              "addresses": [ip]} for c in cases]}


def test_search_finds_a_host_by_any_name_it_goes_by():
    hosts = [_host("00:00:00:00:00:01", "10.0.0.1", ("2001:db8::1",), "ACME-1", ("CASE-9",)),
             _host("00:00:00:00:00:02", "10.0.0.2", account="ACME-2"),
             _host("00:00:00:00:00:12", "10.0.0.12")]
    index = build_index(hosts)

    def macs(query):
        return [m for m, _ in search(index, query)]

    assert macs("10.0.0.1") == ["00:00:00:00:00:01"]  # exact before partial (10.0.0.12)
    assert macs("2001:DB8:0::1") == ["00:00:00:00:00:01"]
    assert macs(" 00-00-00-00-00-02 ") == ["00:00:00:00:00:02"]
    assert macs("case-9") == macs("enf-CASE-9") == ["00:00:00:00:00:01"]
    assert macs("acme-2") == ["00:00:00:00:00:02"]
    assert macs("ACME") == ["00:00:00:00:00:01", "00:00:00:00:00:02"]
    assert macs("nothing") == [] and macs("  ") == []
    assert search(index, "10.0.0.1")[0] == ("00:00:00:00:00:01", "ip")
    assert normalise("2001:DB8::/32") == "2001:db8::/32"


def test_a_difference_names_only_what_changed():
    old = {"switches": [{"id": "a", "hosts": 1}], "hosts": [{"mac": "m1", "x": 1},
                                                             {"mac": "m2", "x": 1}],
           "links": [], "paths": []}
    new = {"switches": [{"id": "a", "hosts": 1}], "hosts": [{"mac": "m1", "x": 2}],
           "links": [], "paths": [{"enforcement": "e"}]}
    assert diff(old, new) == {"hosts": {"changed": [{"mac": "m1", "x": 2}], "removed": ["m2"]},
                              "paths": [{"enforcement": "e"}]}
    assert diff(new, new) is None


def test_switches_that_connect_one_by_one_never_hide_one_another():
    """A line of switches coming up one at a time (as a live network does)
    is placed with every switch well apart from the others and next to
    the one it links to."""
    line = [f"{n:016x}" for n in range(1, 13)]
    edges = [(line[i], line[i + 1]) for i in range(len(line) - 1)]
    layout = SwitchLayout()
    for count in range(1, len(line) + 1):
        at = layout.positions(line[:count], edges[:count - 1])
    points = [(at[s]["x"], at[s]["y"]) for s in line]
    closest = min(math.dist(a, b) for i, a in enumerate(points) for b in points[i + 1:])
    assert closest >= min(0.25, 0.7 / math.sqrt(len(line))) * 0.99
    assert all(0 < c < 1 for p in points for c in p)
    # Each lies nearer its neighbour on the line than the map's mean spacing.
    for a, b in edges:
        assert math.dist((at[a]["x"], at[a]["y"]), (at[b]["x"], at[b]["y"])) < 0.5


def test_a_slow_snapshot_spaces_the_next_ones_out():
    """A snapshot lists every live enforcement: at a hundred thousand it
    takes a while. The feed then waits twice as long as the last one took,
    so a watched page never takes more than a third of the GIL from the
    decisions, however busy the network."""
    from controller.view import feed as viewfeed

    class SlowModel:
        calls = 0

        class network:  # the model's attribute, as ViewModel has it
            @staticmethod
            def topology():
                return time.monotonic()  # always changed

        def topology(self):
            SlowModel.calls += 1
            time.sleep(0.3)
            return {"switches": [], "hosts": [_host(f"00:00:00:00:00:{SlowModel.calls:02x}")],
                    "links": [],
                    "paths": []}

    class Service:
        def add_event_listener(self, listener):
            self.listener = listener

    service = Service()
    feed = viewfeed.Feed(SlowModel(), service, interval=0.05)
    feed.start(lambda version, text: None)
    started = time.monotonic()
    try:
        while time.monotonic() - started < 2.5:
            service.listener("applied", None)  # a stream of decisions
            time.sleep(0.02)
    finally:
        feed.stop()
    # Each cycle: a 0.3 s snapshot, then at least 0.6 s apart; not 0.2 s.
    assert SlowModel.calls <= 4


def _raw_get(port, path, host):
    """A GET with exactly this Host header (urllib would write its own)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.putrequest("GET", path, skip_host=True)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_rebinding_page_reading_the_view_by_another_name_gets_nothing(service):
    apply(service, "r1")
    web = start(service)
    try:
        for host in ("evil.example", f"evil.example:{web.port}", "127.0.0.1.evil.example",
                     "", None):
            for path in ("/", "/api/topology", "/api/search?q=10.0.0.1", "/api/stream"):
                status, body = _raw_get(web.port, path, host)
                # Without any Host header aiohttp refuses HTTP/1.1 itself (400).
                assert status == (400 if host is None else 421), (host, path, status)
                assert b"10.0.0." not in body
        for host in (f"127.0.0.1:{web.port}", f"localhost:{web.port}", "LOCALHOST",
                     f"[::1]:{web.port}"):
            assert _raw_get(web.port, "/api/topology", host)[0] == 200, host
    finally:
        web.stop()


def test_the_view_answers_to_the_names_it_is_given(service):
    web = start(service, names=["ctl.example.net"])
    try:
        assert _raw_get(web.port, "/api/topology", f"ctl.example.net:{web.port}")[0] == 200
        assert _raw_get(web.port, "/api/topology", "CTL.example.net.")[0] == 200
        assert _raw_get(web.port, "/api/topology", "other.example.net")[0] == 421
    finally:
        web.stop()
