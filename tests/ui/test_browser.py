"""The dashboard in a real browser (Debian's Chromium through Playwright) against a gateway subprocess:
sign in, drop a file and create a batch, watch its progress bar reach 100 % without a reload (pushed over
the WebSocket), open its detail page and download the output, cancel a second batch, the overview chart,
a phone-width layout and keyboard use. Every page is checked for labelled controls and for console
errors or CSP violations; screenshots land in test-artifacts/ui/."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from tests.harness import Gateway, chat_line, jsonl, wait_for_batch
from tests.ui.conftest import ARTIFACTS, PHONE

SAMPLER = """(id) => {
  window.__seen = [];
  const tick = () => {
    const bar = document.querySelector(`tr[data-batch="${id}"] progress`);
    if (!bar) return;
    const v = Number(bar.value);
    if (window.__seen[window.__seen.length - 1] !== v) window.__seen.push(v);
  };
  tick();
  setInterval(tick, 20);
}"""

DROP = """([name, text]) => {
  const data = new DataTransfer();
  data.items.add(new File([text], name, { type: "application/jsonl" }));
  const zone = document.getElementById("dropzone");
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: data }));
  }
}"""

UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea, button, a[href]")]
  .filter((el) => el.offsetParent !== null || el.type === "file")
  .filter((el) => {
    if (el.matches("button, a")) return !(el.textContent.trim() || el.getAttribute("aria-label"));
    return !(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.getAttribute("aria-labelledby");
  })
  .map((el) => el.outerHTML.slice(0, 120))"""


def ui_url(gw: Gateway) -> str:
    return gw.base_url.removesuffix("/v1") + "/ui/"


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def assert_labelled(page: Any) -> None:
    assert page.evaluate(UNLABELLED) == [], "controls without an accessible name"


def heading(page: Any, text: str) -> None:
    page.wait_for_function("(t) => document.querySelector('main h1')?.textContent.includes(t)", arg=text)


def sign_in(page: Any, gw: Gateway) -> None:
    page.goto(ui_url(gw))
    page.get_by_label("API key").fill(gw.api_key)
    page.get_by_role("button", name="Sign in").click()
    heading(page, "Batches")
    page.evaluate("window.__uiMarker = 'first-load'")  # gone if anything reloads the document


def create_via_form(page: Any, lines: list[dict[str, Any]], *, drop: bool) -> str:
    page.get_by_role("link", name="New batch").first.click()
    heading(page, "New batch")
    text = jsonl(lines).decode()
    if drop:
        page.evaluate(DROP, ["requests.jsonl", text])
    else:
        page.set_input_files("#batch-file", files=[{"name": "requests.jsonl", "mimeType": "application/jsonl",
                                                    "buffer": text.encode()}])
    page.wait_for_function(
        "(n) => document.querySelector('#estimate-verdict')?.textContent === `Valid: ${n} requests.`",
        arg=str(len(lines)))
    return text


def submit(page: Any) -> str:
    page.wait_for_function("() => !document.querySelector('#submit-batch').disabled")
    page.click("#submit-batch")
    page.wait_for_url(re.compile(r"#/batches\?created=batch_"))
    return page.url.split("created=")[1]


def test_sign_in_rejects_a_wrong_key_and_sign_out_forgets_the_key(page: Any, ui_gateway: Gateway) -> None:
    page.problems.allow("status of 401")
    page.goto(ui_url(ui_gateway))
    heading(page, "Sign in")
    assert_labelled(page)
    shot(page, "01-sign-in")
    page.get_by_label("API key").fill("sk-not-a-key")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#sign-in-error').textContent.includes('not accepted')")
    assert page.evaluate("sessionStorage.getItem('aistats.apiKey')") is None
    page.get_by_label("API key").fill(ui_gateway.api_key)
    page.keyboard.press("Enter")
    heading(page, "Batches")
    assert page.evaluate("sessionStorage.getItem('aistats.apiKey')") == ui_gateway.api_key
    assert page.evaluate("localStorage.length") == 0  # never persisted beyond the tab
    assert page.inner_text("#workspace-label").startswith("Workspace ws_")
    page.get_by_role("button", name="Sign out").click()
    heading(page, "Sign in")
    assert page.evaluate("sessionStorage.getItem('aistats.apiKey')") is None
    assert page.is_hidden("#topbar")


def test_create_watch_progress_to_100_and_download_output(page: Any, ui_gateway: Gateway) -> None:
    frames: list[dict[str, Any]] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(json.loads(payload))))
    sign_in(page, ui_gateway)
    lines = [chat_line(f"ui-{i:02d}", f"hello {i}", model="mock/slow") for i in range(30)]
    create_via_form(page, lines, drop=True)
    assert "mock/slow × 30" in page.inner_text("#estimate-models")
    page.fill("#session", "ui-session")
    page.click("#add-metadata")
    page.fill("#meta-key-1", "team")
    page.fill("#meta-value-1", "ml")
    assert_labelled(page)
    shot(page, "02-create-estimate")
    batch_id = submit(page)
    page.evaluate(SAMPLER, batch_id)
    page.wait_for_function("(id) => document.querySelector(`tr[data-batch='${id}']`)?.dataset.status === 'completed'",
                           arg=batch_id, timeout=30_000)
    page.wait_for_function("() => window.__seen.includes(100)")
    seen = page.evaluate("window.__seen")
    assert any(0 < v < 100 for v in seen), f"no intermediate progress seen: {seen}"
    assert seen == sorted(seen) and seen[-1] == 100, seen
    assert page.evaluate("window.__uiMarker") == "first-load"  # the same document all along: no reload
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    pushed = [f["data"]["progress"] for f in frames if f.get("type") == "job.updated" and f["data"]["id"] == batch_id]
    assert any(0 < p < 100 for p in pushed) and pushed[-1] == 100, pushed  # the bar moved by WebSocket pushes
    row = page.locator(f"tr[data-batch='{batch_id}']")
    assert "30 done" in row.inner_text() and "failed" not in row.inner_text() and "ui-session" in row.inner_text()
    assert_labelled(page)
    shot(page, "03-list-desktop")

    api = ui_gateway.client()
    batch = api.get(f"/batches/{batch_id}").json()
    assert batch["metadata"] == {"team": "ml"} and batch["session_id"] == "ui-session"

    row.locator("a.mono").click()
    heading(page, batch_id)
    page.wait_for_selector("#download-output:not([hidden])")
    page.wait_for_function("() => document.querySelector('.log-table tbody')?.rows.length === 25")
    assert "completed" in page.inner_text(".view-head .badge")
    assert "ui-session" in page.inner_text("main") and "Timeline" in page.inner_text("main")
    assert_labelled(page)
    shot(page, "04-detail")
    with page.expect_download() as info:
        page.click("#download-output")
    download = info.value
    assert download.suggested_filename == f"{batch_id}_output.jsonl"
    content = Path(download.path()).read_bytes()
    assert content == api.get(f"/files/{batch['output_file_id']}/content").content
    assert [json.loads(x)["custom_id"] for x in content.decode().splitlines()] == [x["custom_id"] for x in lines]

    page.select_option("#log-filter", "error")  # the request log's filter: no failed attempts here
    page.wait_for_function("() => document.querySelector('.log-table td.empty')")


def test_cancel_a_running_batch(page: Any, ui_gateway: Gateway) -> None:
    sign_in(page, ui_gateway)
    create_via_form(page, [chat_line(f"long-{i}", "x", model="mock/slow") for i in range(400)], drop=False)
    batch_id = submit(page)
    page.locator(f"tr[data-batch='{batch_id}'] a.mono").click()
    heading(page, batch_id)
    page.click("#cancel-batch")
    assert page.is_visible("dialog.confirm")
    shot(page, "05-cancel-dialog")
    page.click("#confirm-cancel")
    page.wait_for_function("() => document.querySelector('.view-head .badge')?.textContent === 'cancelled'",
                           timeout=20_000)
    assert page.is_hidden("#cancel-batch")
    page.wait_for_selector("#download-errors:not([hidden])")
    final = ui_gateway.client().get(f"/batches/{batch_id}").json()
    assert final["status"] == "cancelled" and final["request_counts"]["completed"] < 400
    shot(page, "06-detail-cancelled")


def test_overview_chart_and_phone_layout(page: Any, ui_gateway: Gateway) -> None:
    api = ui_gateway.client()
    f = api.post("/files", files={"file": ("o.jsonl", jsonl([chat_line(f"o{i}", "hi") for i in range(5)]))},
                 data={"purpose": "batch"}).json()
    done = wait_for_batch(api, api.post("/batches", json={"input_file_id": f["id"],
                                                          "endpoint": "/v1/chat/completions"}).json()["id"])
    sign_in(page, ui_gateway)
    page.get_by_role("link", name="Overview").click()
    heading(page, "Overview")
    page.wait_for_selector("#lines-chart rect.bar")
    usage = api.get("/usage").json()
    drawn = page.evaluate("[...document.querySelectorAll('#lines-chart rect.bar')].map(r => r.dataset.series)")
    assert sorted(set(drawn)) == usage["models"] and "mock/echo" in drawn
    assert page.inner_text(".stats").count(f"{usage['totals']['requests']:,}") >= 1
    assert usage["totals"]["cost_nanos"] > 0  # mock/echo is priced in this gateway's config
    spend = page.evaluate("[...document.querySelectorAll('#spend-chart rect.bar')].map(r => r.dataset.series)")
    assert set(spend) == {"mock/echo"}  # only the priced model has spend bars
    assert page.inner_text(".stat >> nth=0") != "Spend\n$0.00\nlast 30 days"
    assert_labelled(page)
    shot(page, "07-overview")

    page.set_viewport_size(PHONE)
    page.get_by_role("link", name="Batches", exact=True).click()
    heading(page, "Batches")
    page.wait_for_selector(f"tr[data-batch='{done['id']}']")
    overflow = "document.scrollingElement.scrollWidth - document.documentElement.clientWidth"
    assert page.evaluate(overflow) <= 0, "the list scrolls sideways at phone width"
    shot(page, "08-list-phone")
    page.locator(f"tr[data-batch='{done['id']}'] a.mono").click()
    heading(page, done["id"])
    assert page.evaluate("document.getElementById('request-log').open") is False  # collapsed on a phone
    page.click("#request-log summary")
    page.wait_for_selector(".log-table tbody tr")
    assert page.evaluate(overflow) <= 0, "the detail page scrolls sideways at phone width"
    shot(page, "09-detail-phone")


def test_keyboard_reaches_and_activates_create(page: Any, ui_gateway: Gateway) -> None:
    page.goto(ui_url(ui_gateway))
    heading(page, "Sign in")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "api-key"
    page.keyboard.type(ui_gateway.api_key)
    page.keyboard.press("Enter")
    heading(page, "Batches")
    path = []
    for _ in range(20):
        page.keyboard.press("Tab")
        active = page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()")
        path.append(active)
        if active == "create-button":
            break
    assert path[-1] == "create-button", f"Tab never reached the create button: {path}"
    page.keyboard.press("Enter")
    heading(page, "New batch")
    assert page.evaluate("location.hash") == "#/new"
    assert page.evaluate("document.activeElement.tagName") == "H1"  # focus follows the route
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "batch-file"  # the file chooser is reachable too


def test_the_api_rejects_what_the_page_would_not_send(ui_gateway: Gateway) -> None:
    """The page relies on the gateway, not on itself, for access: no key, no data."""
    assert httpx.get(f"{ui_gateway.base_url}/batches").status_code == 401
    assert httpx.get(ui_url(ui_gateway)).status_code == 200  # the page itself is public; its data is not
