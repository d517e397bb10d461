"""The topology view at an ISP's size, in real headless Chromium (Debian's
chromium, driven by Playwright): 100 switches and 2,000 subscribers, served
by the same aiohttp server, ViewModel and feed as the controller's, over a
real EnforcementService and store whose network is synthetic (no Mininet
runs 2,000 hosts; tests/e2e/test_view.py covers the live one).

Search finds a host among 2,000 by IPv4, IPv6, MAC, case and account and
shows its enforcement; switches start collapsed with their host counts and
expand on a click; a quarantine's path to the walled garden is drawn over
the switches its rules are on; a decision is pushed to the page without a
reload, and nothing already on the map moves. Screenshots go to
test-artifacts/view-scale-*.png.
"""
import contextlib

import pytest

from controller.view.server import TopologyWeb, ViewModel
from enforcement.domain import policy
from enforcement.domain.model import (
    HostView,
    LinkView,
    Location,
    SwitchView,
    TopologyView,
    Violation,
)
from enforcement.domain.validation import validate_apply
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from tests.doubles import RecordingNetwork
from tests.e2e import browser
from tests.e2e.browser import fit

SWITCHES, HOSTS_PER_SWITCH = 100, 20
CORE = 0xA000  # the walled garden's switch; the others hang off a ring around it


def dpid(n: int) -> int:
    return CORE + n


def subscriber(n: int) -> dict:
    return {"ip": f"10.1.{n // 200}.{n % 200 + 1}", "ipv6": f"2001:db8:1::{n + 1:x}",
            "mac": f"02:00:00:00:{n >> 8:02x}:{n & 255:02x}", "account": f"ACCT-{n:05d}",
            "dpid": dpid(n // HOSTS_PER_SWITCH), "port": 100 + n % HOSTS_PER_SWITCH}


class SyntheticNetwork(RecordingNetwork):
    """The recording switch double with an ISP-sized topology: a ring of
    100 switches with every tenth one also wired to the core, 20
    subscribers on each (inventory accounts, IPv6 addresses), and the
    walled garden's DNS and portal on the core switch."""

    def __init__(self):
        super().__init__()
        self.hosts = {}
        views = []
        for n in range(SWITCHES * HOSTS_PER_SWITCH):
            s = subscriber(n)
            self.hosts[s["ip"]] = Location(s["dpid"], s["port"], s["mac"])
            views.append(HostView(s["mac"], s["ip"], s["dpid"], s["port"],
                                  account=s["account"], pinned=True, ipv6=(s["ipv6"],)))
        for n, ip in enumerate(("10.0.0.250", "10.0.0.251")):
            mac = f"02:ff:00:00:00:{n:02x}"
            self.hosts[ip] = Location(CORE, 90 + n, mac)
            views.append(HostView(mac, ip, CORE, 90 + n))
        self.connected = {dpid(n) for n in range(SWITCHES)}
        links = []
        for n in range(SWITCHES):
            links.append((dpid(n), 1, dpid((n + 1) % SWITCHES), 2))
            if n % 10 == 5:
                links.append((dpid(n), 3, CORE, 10 + n))
        self.view = TopologyView(
            tuple(SwitchView(dpid(n), ()) for n in range(SWITCHES)),
            tuple(LinkView(*link) for a, b, c, d in links for link in ((a, b, c, d),
                                                                        (c, d, a, b))),
            tuple(views))

    def topology(self):
        return self.view

    def host(self, ip):
        return next((h for h in self.view.hosts if h.ip == ip), None)

    def flow_counters(self, dpid, cookie):
        return {"packets": 0, "bytes": 0}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    network = SyntheticNetwork()
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('scale')}/state.db")
    service = EnforcementService(network, policy.load(), store)
    for n in (3, 777, 1500):
        decide(service, n, Violation.SPAM, f"CASE-SPAM-{n}")
    quarantine = decide(service, 1234, Violation.MALWARE, "CASE-Q-1234")
    assert quarantine.action.kind.value == "quarantine"
    web = TopologyWeb(ViewModel(service, network), "127.0.0.1", 0)
    web.start()
    yield service, web, quarantine
    web.stop()


def decide(service, n, violation, case):
    return service.apply(validate_apply(request_id=case, case_id=case, ip=subscriber(n)["ip"],
                                        mac="", violation=violation, reason="scale test"))


@pytest.fixture(scope="module")
def page(served):
    _, web, _ = served
    with browser.chromium() as chromium:
        page = chromium.new_page(viewport={"width": 1400, "height": 800})
        page.goto(f"http://127.0.0.1:{web.port}/")
        page.wait_for_function("() => window.view && view.state.hosts.size === 2002",
                               timeout=20000)
        yield page


def shot(page, name):
    browser.shot(page, "view-scale-" + name)


def switch_id(n: int) -> str:
    return f"{dpid(n):016x}"


def test_switches_start_collapsed_with_their_host_counts(page):
    assert page.evaluate("view.cy.nodes('.switch').length") == SWITCHES
    assert page.evaluate("view.cy.nodes('.host').length") == 0  # 2,000 hosts: none drawn
    assert page.evaluate("view.cy.nodes('.switch.collapsed').length") == SWITCHES
    label = page.evaluate(f"view.cy.getElementById('sw:{switch_id(38)}').data('label')")
    assert label.startswith(f"{switch_id(38)}\n20 hosts · 1 enforced")  # subscriber 777
    enforced = page.evaluate("view.cy.nodes('.switch.enforced').map(n => n.data('switch'))")
    assert sorted(enforced) == sorted(switch_id(n // HOSTS_PER_SWITCH)
                                      for n in (3, 777, 1500, 1234))
    assert page.evaluate("view.cy.edges('.link').length") == 110
    shot(page, "collapsed")


@pytest.mark.parametrize("field", ["ip", "ipv6", "mac", "case", "account"])
def test_search_finds_and_centres_one_host_among_2000(page, field):
    n = 777
    s = subscriber(n)
    query = {"ip": s["ip"], "ipv6": s["ipv6"].upper(), "mac": s["mac"].upper().replace(":", "-"),
             "case": f"case-spam-{n}", "account": s["account"]}[field]
    page.fill("#search", query)
    page.press("#search", "Enter")
    page.wait_for_function("mac => view.state.found === mac && "
                           "view.cy.getElementById('h:' + mac).hasClass('found')",
                           arg=s["mac"], timeout=5000)
    page.wait_for_selector(".enforcement .case", timeout=5000)
    assert page.inner_text(".enforcement .case") == f"CASE-SPAM-{n}"
    assert s["ip"] in page.inner_text("#host-title")
    # Centred: the host is drawn in the middle of the map.
    x, y, width, height = page.evaluate("""mac => {
        const at = view.cy.getElementById('h:' + mac).renderedPosition();
        return [at.x, at.y, view.cy.width(), view.cy.height()]; }""", s["mac"])
    assert abs(x - width / 2) < 5 and abs(y - height / 2) < 5
    # Its switch opened; the other 99 stay collapsed.
    assert page.evaluate("view.cy.nodes('.host').length") == HOSTS_PER_SWITCH
    shot(page, f"search-{field}")


def test_a_click_on_a_switch_shows_its_hosts(page):
    fit(page)
    n = 12
    hosts_before = page.evaluate("view.cy.nodes('.host').length")
    x, y = page.evaluate("""id => {
        const at = view.cy.getElementById('sw:' + id).renderedPosition();
        const box = view.cy.container().getBoundingClientRect();
        return [box.left + at.x, box.top + at.y]; }""", switch_id(n))
    page.mouse.click(x, y)
    page.wait_for_function("id => view.cy.getElementById('sw:' + id).hasClass('expanded')",
                           arg=switch_id(n), timeout=3000)
    shown = page.evaluate("""id => view.cy.nodes('.host').filter(
        h => h.connectedEdges('.hostlink').connectedNodes('#sw\\\\:' + id).length).length""",
                          switch_id(n))
    assert shown == HOSTS_PER_SWITCH
    assert page.evaluate("view.cy.nodes('.host').length") == hosts_before + HOSTS_PER_SWITCH
    shot(page, "expanded")


def test_the_quarantine_path_to_the_walled_garden_is_drawn(page, served):
    _, _, quarantine = served
    drawn = page.evaluate("""() => view.cy.edges('.quarantine-path').map(
        e => [e.data('garden'), e.source().id(), e.target().id()])""")
    assert {garden for garden, _, _ in drawn} == {"10.0.0.250", "10.0.0.251"}
    on_path = {end[3:] for _, a, b in drawn for end in (a, b) if end.startswith("sw:")}
    # The switches drawn are those the service put the enforcement's rules on.
    assert on_path == {f"{rule.dpid:016x}" for rule in quarantine.rules}
    assert switch_id(1234 // HOSTS_PER_SWITCH) in on_path and f"{CORE:016x}" in on_path
    assert len(on_path) > 2
    page.fill("#search", "CASE-Q-1234")
    page.press("#search", "Enter")
    page.wait_for_selector(".garden-path", timeout=5000)
    assert f"{CORE:016x}" in page.inner_text(".garden-path")
    fit(page)
    shot(page, "quarantine-path")


def test_every_host_can_be_drawn_at_once(page):
    switches = """() => Object.fromEntries(view.cy.nodes('.switch').map(
        n => [n.id(), [n.position('x'), n.position('y')]]))"""
    before = page.evaluate(switches)
    page.click("#show-all")
    page.wait_for_function("() => view.cy.nodes('.host').length === 2002", timeout=10000)
    assert page.evaluate("view.cy.edges('.hostlink').length") == 2002
    assert page.evaluate(switches) == before
    fit(page)
    shot(page, "every-host")
    page.click("#hide-all")
    page.wait_for_function("() => view.cy.nodes('.host').length === 0", timeout=10000)


def test_a_decision_is_pushed_without_reload_and_nothing_moves(page, served):
    service, _, _ = served
    positions = """() => Object.fromEntries(view.cy.nodes().map(
        n => [n.id(), [n.position('x'), n.position('y')]]))"""
    before = page.evaluate(positions)
    page.evaluate("window.notReloaded = true")
    n = 1999
    target = subscriber(n)
    decide(service, n, Violation.SPAM, "CASE-PUSHED")
    # Pushed: the page shows it with no reload and no poll, within 1 s.
    page.wait_for_function(
        """([mac, sw]) => window.notReloaded &&
             view.state.hosts.get(mac).enforcements.some(e => e.case === 'CASE-PUSHED') &&
             view.cy.getElementById('sw:' + sw).hasClass('enforced')""",
        arg=[target["mac"], switch_id(n // HOSTS_PER_SWITCH)], timeout=1500)
    after = page.evaluate(positions)
    assert {k: after[k] for k in before} == before
    page.fill("#search", "case-pushed")
    page.press("#search", "Enter")
    page.wait_for_function("mac => view.cy.getElementById('h:' + mac).hasClass('block')",
                           arg=target["mac"], timeout=5000)
    assert {k: page.evaluate(positions)[k] for k in before} == before
    shot(page, "pushed")


def test_behind_a_token_the_page_opened_with_it_is_live_and_one_without_it_gets_nothing(
        served, page):
    """A controller beyond loopback serves the view behind a bearer token.
    A browser cannot put a header on a navigation: the page loads, takes the
    token from its URL's fragment (never sent to the server), sends it on
    every API call and reads the pushed stream with it; a decision still
    arrives without a reload. Without the token the page gets no data."""
    service, _, _ = served
    chromium = page.context.browser  # the module's (one Playwright per thread)
    token = "view-token-0123456789abcdef"
    web = TopologyWeb(ViewModel(service, service._network), "127.0.0.1", 0, token=token)
    web.start()
    try:
        with contextlib.closing(chromium.new_page(viewport={"width": 1400, "height": 800})
                                ) as viewer, contextlib.closing(chromium.new_page()) as stranger:
            asked = []
            viewer.on("request", lambda r: asked.append((r.url, r.headers.get("authorization"))))
            viewer.goto(f"http://127.0.0.1:{web.port}/#token={token}")
            viewer.wait_for_function("() => window.view && view.state.hosts.size >= 2002",
                                   timeout=20000)
            assert "token" not in viewer.url  # taken out of the address bar
            api_calls = [(url, auth) for url, auth in asked if "/api/" in url]
            assert api_calls and all(auth == f"Bearer {token}" for _, auth in api_calls)
            assert all(token not in url for url, _ in asked)
            viewer.evaluate("window.notReloaded = true")
            target = subscriber(1998)
            decide(service, 1998, Violation.SPAM, "CASE-TOKEN")
            viewer.wait_for_function(
                """mac => window.notReloaded && view.state.hosts.get(mac).enforcements
                     .some(e => e.case === 'CASE-TOKEN')""", arg=target["mac"], timeout=1500)
            viewer.fill("#search", "CASE-TOKEN")
            viewer.press("#search", "Enter")
            viewer.wait_for_selector("#results li.result", timeout=5000)
            shot(viewer, "token")

            stranger.goto(f"http://127.0.0.1:{web.port}/")
            stranger.wait_for_function(
                "() => document.getElementById('status').textContent.includes('cannot reach')",
                timeout=10000)
            assert stranger.evaluate("() => view.state.hosts.size") == 0
    finally:
        web.stop()
