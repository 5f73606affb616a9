"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by Playwright,
axe-core injected from disk, screenshots kept where a reviewer looks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devservices.install import axe_core_path
from testsupport.processes import REPO

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google's hosts, which
# this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots of the browser tests, kept after the run (ignored by git).
ARTIFACTS = REPO / "test-artifacts"

PHONE = {"viewport": {"width": 360, "height": 740}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}


@contextmanager
def chromium(*extra_args: str) -> Iterator:
    """A headless browser (never a downloaded one). Open it after the server fixtures, so it
    closes before their teardown: Playwright's sync API keeps an event loop on this thread
    while it is open, and Django refuses a transactional test's database teardown then."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()


def axe_violations(page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """axe-core's violations of these impacts on the page as it is, one line each.

    Evaluated through the DevTools protocol rather than added as a <script>, so a
    Content-Security-Policy without unsafe-inline does not block it.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_core_path().read_text() + "\n;undefined")
    results = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['impact']} {v['id']}: {v['help']} ({', '.join(str(n['target']) for n in v['nodes'][:3])})"
        for v in results["violations"]
        if v["impact"] in impacts
    ]


def keep_screenshot(page, name: str) -> Path:
    """A full-page screenshot under test-artifacts/ (the name says what it shows)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
