"""Browser fixtures: one gateway subprocess slow enough to watch (mock/slow, two requests at a time), Debian's
Chromium driven by Playwright (never a downloaded browser), a fresh page per test that records console
errors and CSP violations, and the folder for screenshots (test-artifacts/ui, gitignored)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import MOCK_PRICES, Gateway

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Two lines on the wire at a time, 200 ms each: 30 lines take ~3 s, long enough for the page to see
# the progress bar between 0 and 100 (the stream pushes at most once a second). mock/echo gets prices
# (USD per 1M tokens) so the overview has spend to chart.
CONFIG = """
[executor]
concurrency = 2
[mock]
slow_latency_ms = 200
""" + MOCK_PRICES
RECORDER = """
window.__uiErrors = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__uiErrors.push(`CSP ${e.violatedDirective} blocked ${e.blockedURI}`));
"""


@pytest.fixture(scope="module")
def ui_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("ui") / "data", config=CONFIG)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped on purpose: while Playwright's sync API runs, its event loop counts as running in
    this thread, and later tests that call asyncio.run() would fail."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing and could not be installed (`make test` installs Debian's chromium "
                    "with apt-get when it is root and apt works); the browser tests need it")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


class PageProblems:
    """Console errors, uncaught exceptions and CSP violations seen by a page."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.messages: list[str] = []
        self.allowed: list[str] = []
        page.on("console", lambda m: self.messages.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.messages.append(f"uncaught: {e}"))

    def allow(self, fragment: str) -> None:
        """Expect console errors containing `fragment` (e.g. the 401 of a deliberately wrong key)."""
        self.allowed.append(fragment)

    def all(self) -> list[str]:
        try:
            in_page = list(self.page.evaluate("window.__uiErrors || []"))
        except Exception:  # the page may be closed already
            in_page = []
        return [m for m in self.messages + in_page if not any(a in m for a in self.allowed)]


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.add_init_script(RECORDER)
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    problems = PageProblems(pg)
    pg.problems = problems
    yield pg
    found = problems.all()
    context.close()
    assert found == [], f"the page reported problems: {found}"
