"""Issue 18 in a real browser (Debian's Chromium through Playwright), each page at 1280×800 and 390×844 with
screenshots under test-artifacts/ui/: lines never run shown apart (1), the line inspector (2), cost figures (6),
the list's search and marks (7), stale live views (8), key handling (9) and the phone layout (10)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Gateway, chat_line, free_port, jsonl, wait_for_batch
from tests.ui.conftest import CONFIG, DESKTOP, PHONE
from tests.ui.test_browser import assert_labelled, heading, shot, sign_in, ui_url

SIZES = {"desktop": DESKTOP, "phone": PHONE}
OVERFLOW = "document.scrollingElement.scrollWidth - document.documentElement.clientWidth"


def create(api: httpx.Client, lines: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    f = api.post("/files", files={"file": ("in.jsonl", jsonl(lines))}, data={"purpose": "batch"}).json()
    resp = api.post("/batches", json={"input_file_id": f["id"], "endpoint": "/v1/chat/completions", **extra})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


@pytest.fixture(scope="module")
def seeded(ui_gateway: Gateway) -> dict[str, dict[str, Any]]:
    """The batches the pages show: one cancelled part-way, one mostly failed, one that failed validation, one with
    a big line, tagged by metadata and sessions."""
    api = ui_gateway.client()
    out: dict[str, dict[str, Any]] = {}
    lines = [chat_line("bad-0", "no", model="mock/reject")] + [
        chat_line(f"row-{i:03d}", f"hello {i}", model="mock/slow") for i in range(120)]
    cancelled = create(api, lines, metadata={"team": "inspect-me"}, session_id="agent-run-7")
    deadline = time.monotonic() + 60
    while api.get(f"/batches/{cancelled['id']}").json()["request_counts"]["completed"] < 4:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    api.post(f"/batches/{cancelled['id']}/cancel")
    out["cancelled"] = wait_for_batch(api, cancelled["id"])
    out["mostly_failed"] = wait_for_batch(api, create(api, [chat_line(f"r{i}", "x", model="mock/reject")
                                                            for i in range(3)] + [chat_line("ok", "x")],
                                                      session_id="agent-other")["id"])
    f = api.post("/files", files={"file": ("bad.jsonl", b"{not json\n")}, data={"purpose": "batch"}).json()
    invalid = api.post("/batches", json={"input_file_id": f["id"], "endpoint": "/v1/chat/completions"}).json()
    out["invalid"] = wait_for_batch(api, invalid["id"])
    out["big"] = wait_for_batch(api, create(api, [chat_line("small", "hi"), chat_line("big", "y" * 90_000)])["id"])
    return out


@pytest.fixture(params=list(SIZES))
def size(request: pytest.FixtureRequest, page: Any) -> str:
    page.set_viewport_size(SIZES[request.param])
    return str(request.param)


def test_lines_never_run_are_not_failures_in_list_and_detail(page: Any, ui_gateway: Gateway,
                                                              seeded: dict[str, Any], size: str) -> None:
    batch = seeded["cancelled"]
    c = batch["request_counts"]
    sign_in(page, ui_gateway)
    row = page.locator(f"tr[data-batch='{batch['id']}']")
    row.wait_for()
    text = row.inner_text()
    assert f"{c['completed']} done · 1 failed · {c['cancelled']} not run (cancelled)" in text, text
    ran = (c["completed"] + 1) * 100 // c["total"]
    assert int(row.locator("progress").get_attribute("value") or -1) == ran < 100  # the bar shows what ran
    assert re.search(r"\$\d+\.\d{4}", row.locator(".cost").inner_text())  # fixed precision
    assert page.evaluate(OVERFLOW) <= 0
    shot(page, f"18-1-list-not-run-{size}")
    row.locator("a.mono").click()
    heading(page, batch["id"])
    page.wait_for_selector("#detail-counts")
    assert f"{c['cancelled']} not run (cancelled)" in page.inner_text("#detail-counts")
    assert int(page.get_attribute(".detail-progress progress", "value") or -1) == ran
    facts = page.inner_text("section[aria-labelledby='counts-title']")
    assert "Not run" in facts and "Failed\n1" in facts
    assert page.evaluate(OVERFLOW) <= 0
    shot(page, f"18-1-detail-not-run-{size}")


def test_line_inspector(page: Any, ui_gateway: Gateway, seeded: dict[str, Any], size: str) -> None:
    batch = seeded["cancelled"]
    sign_in(page, ui_gateway)
    page.goto(ui_url(ui_gateway) + f"#/batches/{batch['id']}")
    heading(page, batch["id"])
    page.wait_for_selector(".lines-table tr[data-line]")
    assert "Page 1 of 7" in page.inner_text("#lines-page-status")  # 121 lines, 20 a page
    # filter by status: the one real failure, opened with the keyboard
    page.select_option("#lines-status", "failed")
    page.wait_for_function("() => document.querySelectorAll('.lines-table tr[data-line]').length === 1")
    page.focus(".lines-table tr[data-line]")
    page.keyboard.press("Enter")
    page.wait_for_selector("#line-panel:not([hidden])")
    panel = page.inner_text("#line-panel")
    assert "bad-0" in panel and "mock_rejected" in panel and "mock/reject" in page.inner_text("#line-request")
    assert "mock" in page.inner_text(".attempts-table") and "400" in page.inner_text(".attempts-table")
    assert "ms" in page.inner_text(".attempts-table")
    assert_labelled(page)
    shot(page, f"18-2-line-failed-{size}")
    page.keyboard.press("Escape")
    page.wait_for_selector("#line-panel", state="hidden")
    # by error code: the lines never run
    page.select_option("#lines-status", "")
    page.fill("#lines-error", "batch_cancelled")
    page.click("#lines form[role='search'] button[type='submit']")
    not_run = batch["request_counts"]["cancelled"]
    page.wait_for_function("(n) => document.querySelector('#lines-page-status').textContent.includes(`${n} matching`)",
                           arg=not_run)
    # jump to a custom_id: the exact match opens, with its answer and attempt
    page.fill("#lines-error", "")
    page.fill("#lines-search", "row-002")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#line-title')?.textContent.includes('row-002')")
    assert "hello 2" in page.inner_text("#line-request") and "200" in page.inner_text(".attempts-table")
    # page N, then the keyboard through the rows and the pages
    page.fill("#lines-search", "")
    page.click("#lines form[role='search'] button[type='submit']")
    page.wait_for_function("() => document.querySelector('#lines-page-status').textContent.includes('of 7')")
    page.fill("#lines-page", "3")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#lines-page-status').textContent.startsWith('Page 3 of 7')")
    assert page.evaluate("document.activeElement.dataset.line") == "41"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.line") == "43"
    page.keyboard.press("PageDown")
    page.wait_for_function("() => document.querySelector('#lines-page-status').textContent.startsWith('Page 4 of 7')")
    assert page.evaluate(OVERFLOW) <= 0
    shot(page, f"18-2-lines-page-{size}")


def test_big_lines_are_cut_and_load_whole_and_links_open_a_line(page: Any, ui_gateway: Gateway,
                                                                seeded: dict[str, Any], size: str) -> None:
    batch = seeded["big"]
    sign_in(page, ui_gateway)
    page.goto(ui_url(ui_gateway) + f"#/batches/{batch['id']}?line=2")  # a shared link to one line
    page.wait_for_function("() => document.querySelector('#line-title')?.textContent.includes('big')")
    assert "y" * 1000 in page.inner_text("#line-request")  # the link serves the whole line
    page.click(".lines-table tr[data-line='2']")
    page.wait_for_selector("#line-whole")
    assert "[cut: " in page.inner_text("#line-request")
    page.click("#line-whole")
    page.wait_for_function("() => !document.querySelector('#line-whole')")
    assert "[cut: " not in page.inner_text("#line-request")
    shot(page, f"18-2-line-big-{size}")


def test_list_search_marks_and_page_size(page: Any, ui_gateway: Gateway, seeded: dict[str, Any], size: str) -> None:
    sign_in(page, ui_gateway)
    mostly = page.locator(f"tr[data-batch='{seeded['mostly_failed']['id']}']")
    mostly.wait_for()
    assert "3 of 4 failed" in mostly.locator(".mostly-failed").inner_text()
    invalid = page.locator(f"tr[data-batch='{seeded['invalid']['id']}']")
    first = seeded["invalid"]["errors"]["data"][0]
    assert first["message"][:40] in invalid.inner_text() and "line 1" in invalid.inner_text()
    models = page.eval_on_selector_all(".model-name", "els => els.map(e => e.textContent)")
    assert models and not any(m.startswith("/v1/") for m in models), models
    shot(page, f"18-7-list-marks-{size}")

    def search(**params: str) -> list[str]:
        page.goto(ui_url(ui_gateway) + "#/batches?" + "&".join(f"{k}={v}" for k, v in params.items()))
        page.wait_for_function("() => !document.querySelector('#list-status').textContent.startsWith('Loading')")
        return list(page.eval_on_selector_all("tr[data-batch]", "els => els.map(e => e.dataset.batch)"))

    assert search(q="inspect-me") == [seeded["cancelled"]["id"]]  # a metadata value
    assert search(q=seeded["big"]["id"][:-2]) == [seeded["big"]["id"]]  # an id prefix
    assert search(session="agent-") == [seeded["mostly_failed"]["id"], seeded["cancelled"]["id"]]
    assert search(q="nothing-has-this") == []
    assert "No batches match" in page.inner_text("#list-status")
    shot(page, f"18-7-list-no-match-{size}")
    page.click("text=Clear")
    heading(page, "Batches")
    page.select_option("#page-size", "50")
    page.wait_for_function("() => location.hash.includes('size=50')")
    assert page.eval_on_selector("#page-size", "e => e.value") == "50"


def test_cost_so_far_agrees_and_the_estimate_shows_expected_and_upper_bound(
        page: Any, ui_gateway: Gateway, size: str) -> None:
    api = ui_gateway.client()
    running = create(api, [chat_line(f"e{i}", "hello", model="mock/echo") for i in range(3)]
                     + [chat_line(f"s{i}", "x", model="mock/slow") for i in range(300)])
    sign_in(page, ui_gateway)
    page.goto(ui_url(ui_gateway) + f"#/batches/{running['id']}")
    heading(page, running["id"])
    page.wait_for_function("() => document.querySelector('#billing-cost') && "
                           "document.querySelector('#billing-cost').textContent !== '$0.00'")
    assert "Cost so far" in page.inner_text("section[aria-labelledby='billing-title']")
    page.wait_for_function("() => /\\d+(\\.\\d)?\\/s/.test(document.querySelector('#detail-pace')?.textContent || '')",
                           timeout=20_000)
    assert "ETA" in page.inner_text("#detail-pace")  # throughput and ETA while it runs
    shot(page, f"18-6-detail-cost-so-far-{size}")
    api.post(f"/batches/{running['id']}/cancel")
    page.wait_for_function("() => document.querySelector('.view-head .badge')?.textContent === 'cancelled'",
                           timeout=30_000)
    page.wait_for_function("() => document.querySelector('section[aria-labelledby=billing-title]')"
                           ".innerText.includes('Cost\\n')")

    page.get_by_role("link", name="New batch").first.click()
    heading(page, "New batch")
    page.set_input_files("#batch-file", files=[{"name": "e.jsonl", "mimeType": "application/jsonl",
                                                "buffer": jsonl([chat_line(f"x{i}", "hi " * 50) for i in range(5)])}])
    page.wait_for_selector("#estimate-expected")
    expected, bound = page.inner_text("#estimate-expected"), page.inner_text("#estimate-cost")
    assert "typical answers" in expected and "cap" in bound
    assert expected.split()[0] != bound.split()[0], (expected, bound)
    shot(page, f"18-6-estimate-{size}")


def test_remember_on_this_device_and_where_keys_come_from(page: Any, ui_gateway: Gateway,
                                                          seeded: dict[str, Any], size: str) -> None:
    page.goto(ui_url(ui_gateway))
    heading(page, "Sign in")
    help_text = page.inner_text(".signin-card")
    assert "aistats keys create" in help_text and "first started" in help_text
    assert_labelled(page)
    shot(page, f"18-9-sign-in-{size}")
    page.get_by_label("API key").fill(ui_gateway.api_key)
    page.get_by_label("Remember on this device").check()
    page.keyboard.press("Enter")
    heading(page, "Batches")
    assert page.evaluate("localStorage.getItem('aistats.apiKey')") == ui_gateway.api_key
    # a shared batch link, opened in another tab of this browser, opens signed in
    other = page.context.new_page()
    other.goto(ui_url(ui_gateway) + f"#/batches/{seeded['big']['id']}")
    heading(other, seeded["big"]["id"])
    other.close()
    page.get_by_role("button", name="Sign out").click()
    heading(page, "Sign in")
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0


def test_phone_chart_labels_header_and_ages(page: Any, ui_gateway: Gateway, seeded: dict[str, Any]) -> None:
    page.set_viewport_size(PHONE)
    sign_in(page, ui_gateway)
    assert page.evaluate("document.getElementById('topbar').getBoundingClientRect().height") <= 60  # one line
    first_age = page.locator("tr[data-batch] time").first
    before = first_age.inner_text()
    page.wait_for_function("(b) => document.querySelector('tr[data-batch] time').textContent !== b", arg=before,
                           timeout=70_000)  # ages tick without a reload
    page.get_by_role("link", name="Overview").click()
    heading(page, "Overview")
    page.wait_for_selector("#lines-chart text.axis")
    smallest = page.evaluate("""() => Math.min(...[...document.querySelectorAll('.chart text.axis')].map((t) => {
        const svg = t.ownerSVGElement;
        const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
        return parseFloat(getComputedStyle(t).fontSize) * scale; }))""")
    assert smallest >= 11, smallest
    assert page.evaluate(OVERFLOW) <= 0
    shot(page, "18-10-overview-phone")


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[Gateway]:
    port = free_port()
    gw = Gateway(tmp_path / "data", config=CONFIG, port=port)
    yield gw
    gw.stop()


def test_a_live_view_says_when_it_is_stale(page: Any, restartable: Gateway, tmp_path: Path, size: str) -> None:
    page.problems.allow("ERR_CONNECTION_REFUSED")
    page.problems.allow("WebSocket")
    gw = restartable
    batch = create(gw.client(), [chat_line(f"s{i}", "x", model="mock/slow") for i in range(2000)])
    sign_in(page, gw)
    page.goto(ui_url(gw) + f"#/batches/{batch['id']}")
    heading(page, batch["id"])
    page.wait_for_selector("#cancel-batch:not([hidden])")
    page.wait_for_function("() => /\\/s/.test(document.querySelector('#detail-pace')?.textContent || '')",
                           timeout=20_000)
    gw.stop()
    page.wait_for_selector("#stale-banner:not([hidden])", timeout=20_000)
    assert "Connection lost, retrying" in page.inner_text("#stale-banner")
    assert page.is_disabled("#cancel-batch")
    shot(page, f"18-8-stale-{size}")
    back = Gateway(tmp_path / "data", config=CONFIG, port=gw.port)
    try:
        page.wait_for_selector("#stale-banner", state="hidden", timeout=30_000)
        assert page.is_enabled("#cancel-batch")
    finally:
        back.stop()
