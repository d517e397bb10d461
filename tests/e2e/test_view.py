"""The topology view in real headless Chromium (Debian's chromium, driven by
Playwright), against the real controller and a Mininet network: switches
(labelled by their datapath id in hex, as enforcementctl prints it) and
hosts appear, a decision pushed by the controller marks its host without a
reload, the host's details show case, violation, rules and live counters, a
lift unmarks it, a link brought down shows down, search finds a host. The
map is Cytoscape.js on a canvas: the tests read its model (window.view.cy)
and click where it drew a node. Each test saves a screenshot in
test-artifacts/.

Topology (topologies.LinearTopo(3, 1)): h1-s1-s2-s3, h2 on s2, h3 on s3.
"""
import time

import pytest

from enforcement.v1 import enforcement_pb2 as pb
from testbed import lab as harness
from testbed import topologies
from tests.e2e import browser
from tests.e2e.browser import fit

pytestmark = pytest.mark.mininet



INVENTORY = """
[[subscriber]]
account = "ACME-0002"
ip = "10.0.0.2"
switch = "0000000000000002"
port = 1
"""


@pytest.fixture(scope="module")
def lab(lab_factory, tmp_path_factory):
    path = tmp_path_factory.mktemp("inventory") / "inventory.toml"
    path.write_text(INVENTORY)
    lab = lab_factory(topologies.LinearTopo(switches=3, hosts_per_switch=1), expected_links=4,
                      controller_args=["--inventory", str(path)])
    harness.start_listener(lab.host("h3"), (25, 80))
    return lab


@pytest.fixture(scope="module")
def page(lab, tmp_path_factory):
    with browser.chromium() as chromium:
        page = chromium.new_page(viewport={"width": 1400, "height": 800})
        page.goto(f"http://{lab.controller.http_address}/")
        yield page


def shot(page, name):
    browser.shot(page, "view-" + name)


def count(page, selector, ip=None):
    """How many of the map's elements match a Cytoscape selector (and,
    for hosts, have that IPv4 address)."""
    return page.evaluate("([s, ip]) => view.cy.$(s).filter(e => ip === null || "
                         "e.data('ip') === ip).length", [selector, ip])


def wait_count(page, selector, n, timeout, ip=None):
    page.wait_for_function("([s, n, ip]) => window.view && view.cy.$(s).filter("
                           "e => ip === null || e.data('ip') === ip).length === n",
                           arg=[selector, n, ip], timeout=timeout)


def click_host(page, ip):
    """A real click where the map drew the host."""
    x, y = page.evaluate("""ip => {
        const node = view.cy.nodes('.host').filter(n => n.data('ip') === ip)[0];
        const at = node.renderedPosition(), box = view.cy.container().getBoundingClientRect();
        return [box.left + at.x, box.top + at.y]; }""", ip)
    page.mouse.click(x, y)


def test_every_switch_and_host_appears(lab, page):
    wait_count(page, "node.switch", 3, 10000)
    wait_count(page, "node.host", 3, 10000)
    for h in ("h1", "h2", "h3"):
        assert count(page, "node.host", lab.host(h).IP()) == 1
    assert count(page, "edge.link.up") == 2  # s1-s2, s2-s3
    labels = page.evaluate("view.cy.nodes('.switch').map(n => n.data('label'))")
    assert sorted(label.split("\n")[0] for label in labels) == [
        "0000000000000001", "0000000000000002", "0000000000000003"]
    # The inventory names h2's account; the view and GetTopology show it.
    pinned = next(h for h in lab.stub.GetTopology(pb.GetTopologyRequest()).hosts
                  if h.ip == lab.host("h2").IP())
    assert (pinned.account, pinned.pinned, pinned.datapath_id, pinned.port) == (
        "ACME-0002", True, 2, 1)
    fit(page)
    click_host(page, lab.host("h2").IP())
    page.wait_for_selector(".account", timeout=3000)
    assert page.inner_text(".account") == "ACME-0002"
    shot(page, "topology")


def test_a_decision_is_pushed_to_its_host_and_a_lift_unmarks_it(lab, page):
    h1, h3 = lab.host("h1"), lab.host("h3")
    record = lab.stub.Apply(pb.ApplyRequest(
        request_id="view-1", case_id="CASE-VIEW", subscriber=pb.Subscriber(ip=h1.IP()),
        violation=pb.VIOLATION_SPAM, reason="view test"))
    applied = time.monotonic()
    wait_count(page, "node.host.block", 1, 2000, ip=h1.IP())
    print(f"marked {time.monotonic() - applied:.2f} s after the answer")
    assert count(page, "node.host.block") == 1  # h1 only
    assert page.evaluate("view.cy.$('node.switch.enforced').map(n => n.data('switch'))") == [
        "0000000000000001"]
    shot(page, "marked")

    # Details: case, violation, rules, and counters that move with real traffic.
    click_host(page, h1.IP())
    page.wait_for_selector(f'.enforcement[data-id="{record.id}"] .case', timeout=3000)
    assert page.inner_text(".enforcement .case") == "CASE-VIEW"
    assert page.inner_text(".enforcement .violation") == "spam"
    assert "tcp_dst=25" in page.inner_text(".enforcement .rules")
    before = int(page.inner_text(".enforcement .packets"))
    assert not harness.tcp_connects(h1, h3.IP(), 25, timeout=1)
    # A function, not an expression: the page's Content-Security-Policy
    # forbids eval, which Playwright would use for a bare expression.
    page.wait_for_function(
        "n => Number(document.querySelector('.enforcement .packets').textContent) > n",
        arg=before, timeout=5000)
    shot(page, "details")

    lab.stub.Lift(pb.LiftRequest(id=record.id, reason="view test"))
    lifted = time.monotonic()
    wait_count(page, "node.host.block", 0, 2000)
    print(f"unmarked {time.monotonic() - lifted:.2f} s after the lift")
    page.wait_for_selector("#no-enforcement", timeout=3000)
    shot(page, "lifted")


def test_search_centres_a_host(lab, page):
    h3 = lab.host("h3")
    page.fill("#search", h3.IP())
    page.press("#search", "Enter")
    wait_count(page, "node.host.found", 1, 3000, ip=h3.IP())
    page.wait_for_selector("#host-title", timeout=3000)
    assert h3.IP() in page.inner_text("#host-title")
    shot(page, "search")


def test_a_link_brought_down_shows_down(lab, page):
    lab.net.configLinkStatus("s2", "s3", "down")
    try:
        wait_count(page, "edge.link.down", 1, 15000)
        assert count(page, "edge.link.up") == 1
        shot(page, "link-down")
    finally:
        lab.net.configLinkStatus("s2", "s3", "up")
    wait_count(page, "edge.link.down", 0, 20000)
    shot(page, "link-up")
