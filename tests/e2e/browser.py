"""Debian's headless Chromium driven by Playwright, as the view tests use it
(never a downloaded browser), and what they do with its pages."""
import contextlib
import pathlib
import shutil

import pytest

ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium's own connections are
# refused by this closed network, many at a time.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def chromium():
    """A browser with a fresh, empty profile (launch() gives it one)."""
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing (Debian package chromium; scripts/setup.sh)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def fit(page):
    # A statement, not cy.fit()'s value: Playwright would serialise the
    # whole Cytoscape core it returns, which takes seconds.
    page.evaluate("() => { view.cy.fit(undefined, 30); }")


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
