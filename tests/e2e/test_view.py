"""The topology view in real headless Chromium (Debian's chromium, driven by
Playwright), against the real controller and a Mininet network: switches and
hosts appear, a decision marks its host within 2 s without a reload, the
host's details show case, violation, rules and live counters, a lift unmarks
it, a link brought down shows down. Each test saves a screenshot in
test-artifacts/.

Topology (topologies.LinearTopo(3, 1)): h1-s1-s2-s3, h2 on s2, h3 on s3.
"""
import pathlib
import shutil
import time

import pytest

import lab as harness
import topologies
from enforcement.v1 import enforcement_pb2 as pb

pytestmark = pytest.mark.mininet

ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


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
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing (Debian package chromium; scripts/setup.sh)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"])  # launch() gives it a fresh, empty profile
        page = browser.new_page(viewport={"width": 1400, "height": 800})
        page.goto(f"http://{lab.controller.http_address}/")
        yield page
        browser.close()


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"view-{name}.png"))


def host(page, ip):
    return page.locator(f'g.host[data-ip="{ip}"]')


def test_every_switch_and_host_appears(lab, page):
    page.wait_for_function("document.querySelectorAll('g.switch').length === 3", timeout=10000)
    page.wait_for_function("document.querySelectorAll('g.host').length === 3", timeout=10000)
    for h in ("h1", "h2", "h3"):
        assert host(page, lab.host(h).IP()).count() == 1
    assert page.locator("line.link.up").count() == 2  # s1-s2, s2-s3
    # The inventory names h2's account; the view and GetTopology show it.
    pinned = next(h for h in lab.stub.GetTopology(pb.GetTopologyRequest()).hosts
                  if h.ip == lab.host("h2").IP())
    assert (pinned.account, pinned.pinned, pinned.datapath_id, pinned.port) == (
        "ACME-0002", True, 2, 1)
    host(page, lab.host("h2").IP()).click()
    page.wait_for_selector(".account", timeout=3000)
    assert page.inner_text(".account") == "ACME-0002"
    shot(page, "topology")


def test_a_decision_marks_its_host_within_two_seconds_and_a_lift_unmarks_it(lab, page):
    h1, h3 = lab.host("h1"), lab.host("h3")
    record = lab.stub.Apply(pb.ApplyRequest(
        request_id="view-1", case_id="CASE-VIEW", subscriber=pb.Subscriber(ip=h1.IP()),
        violation=pb.VIOLATION_SPAM, reason="view test"))
    applied = time.monotonic()
    page.wait_for_selector(f'g.host.block[data-ip="{h1.IP()}"]', timeout=2000)
    print(f"marked {time.monotonic() - applied:.2f} s after the answer")
    assert page.locator("g.host.block").count() == 1  # h1 only
    shot(page, "marked")

    # Details: case, violation, rules, and counters that move with real traffic.
    host(page, h1.IP()).click()
    page.wait_for_selector(f'.enforcement[data-id="{record.id}"] .case', timeout=3000)
    assert page.inner_text(".enforcement .case") == "CASE-VIEW"
    assert page.inner_text(".enforcement .violation") == "spam"
    assert "tcp_dst=25" in page.inner_text(".enforcement .rules")
    before = int(page.inner_text(".enforcement .packets"))
    assert not harness.tcp_connects(h1, h3.IP(), 25, timeout=1)
    page.wait_for_function(
        f"Number(document.querySelector('.enforcement .packets').textContent) > {before}",
        timeout=5000)
    shot(page, "details")

    lab.stub.Lift(pb.LiftRequest(id=record.id, reason="view test"))
    lifted = time.monotonic()
    page.wait_for_selector("g.host.block", state="detached", timeout=2000)
    print(f"unmarked {time.monotonic() - lifted:.2f} s after the lift")
    page.wait_for_selector("#no-enforcement", timeout=3000)
    shot(page, "lifted")


def test_a_link_brought_down_shows_down(lab, page):
    lab.net.configLinkStatus("s2", "s3", "down")
    try:
        page.wait_for_selector("line.link.down", timeout=15000)
        assert page.locator("line.link.down").count() == 1
        assert page.locator("line.link.up").count() == 1
        shot(page, "link-down")
    finally:
        lab.net.configLinkStatus("s2", "s3", "up")
    page.wait_for_selector("line.link.down", state="detached", timeout=20000)
    shot(page, "link-up")
