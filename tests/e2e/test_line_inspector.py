"""Issue 18 through real HTTP: lines that never ran are not failures (item 1), the line inspector
`GET /v1/batches/{id}/lines[/{line}]` (item 2), the dry run's expected cost apart from its upper bound (item 6)
and the list's search (item 7)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import MOCK_PRICES, Gateway, chat_line, jsonl, wait_for_batch

CONFIG = """
[executor]
concurrency = 2
[mock]
slow_latency_ms = 100
""" + MOCK_PRICES


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path_factory.mktemp("lines") / "data", config=CONFIG)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def api(gw: Gateway) -> Iterator[httpx.Client]:
    with gw.client() as client:
        yield client


def create(api: httpx.Client, lines: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    f = api.post("/files", files={"file": ("in.jsonl", jsonl(lines))}, data={"purpose": "batch"}).json()
    resp = api.post("/batches", json={"input_file_id": f["id"], "endpoint": "/v1/chat/completions", **extra})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


@pytest.fixture(scope="module")
def cancelled(api: httpx.Client) -> dict[str, Any]:
    """A batch cancelled part-way: one rejected line, a few answered, the rest never run."""
    lines = [chat_line("bad-0", "no", model="mock/reject")] + [
        chat_line(f"slow-{i:03d}", f"hello {i}", model="mock/slow") for i in range(200)]
    batch = create(api, lines)
    deadline = time.monotonic() + 60
    while api.get(f"/batches/{batch['id']}").json()["request_counts"]["completed"] < 4:
        assert time.monotonic() < deadline, "the batch never started"
        time.sleep(0.05)
    assert api.post(f"/batches/{batch['id']}/cancel").status_code == 200
    return wait_for_batch(api, batch["id"])


def test_cancelled_lines_are_counted_as_not_run(cancelled: dict[str, Any]) -> None:
    c = cancelled["request_counts"]
    assert cancelled["status"] == "cancelled"
    assert c["total"] == 201 and c["completed"] + c["failed"] == 201  # OpenAI's counts as they always were
    assert c["succeeded"] == c["completed"] >= 4
    assert c["errored"] == 1  # the rejected line: the only real failure
    assert c["cancelled"] == c["failed"] - 1 > 100 and c["expired"] == 0


def test_lines_filtered_by_state_error_code_and_custom_id(api: httpx.Client, cancelled: dict[str, Any]) -> None:
    base = f"/batches/{cancelled['id']}/lines"
    c = cancelled["request_counts"]
    not_run = api.get(base, params={"status": "not_run", "limit": 5}).json()
    assert not_run["total_matching"] == c["cancelled"] and len(not_run["data"]) == 5 and not_run["has_more"]
    assert {x["error_code"] for x in not_run["data"]} == {"batch_cancelled"}
    assert all(x["attempts"] == [] and x["result"]["json"]["error"]["code"] == "batch_cancelled"
               for x in not_run["data"])
    assert api.get(base, params={"error_code": "batch_cancelled"}).json()["total_matching"] == c["cancelled"]

    failed = api.get(base, params={"status": "failed"}).json()
    assert failed["total_matching"] == 1
    bad = failed["data"][0]
    assert bad["custom_id"] == "bad-0" and bad["error_code"] == "mock_rejected" and bad["status"] == "failed"
    assert bad["request"]["json"]["model"] == "mock/reject" and not bad["request"]["truncated"]
    assert bad["result"]["json"]["response"]["status_code"] == 400
    assert [(a["provider"], a["status_code"]) for a in bad["attempts"]] == [("mock", 400)]
    assert api.get(base, params={"error_code": "mock_rejected"}).json()["data"][0]["line"] == bad["line"]

    ok = api.get(base, params={"status": "succeeded", "custom_id": "slow-00"}).json()
    assert ok["total_matching"] >= 3 and all(x["custom_id"].startswith("slow-00") for x in ok["data"])
    first = ok["data"][0]
    assert first["request"]["json"]["messages"][0]["content"] == f"hello {int(first['custom_id'][5:])}"
    assert first["result"]["json"]["response"]["status_code"] == 200
    attempt = first["attempts"][0]
    assert attempt["provider"] == "mock" and attempt["status_code"] == 200 and attempt["latency_ms"] >= 50
    assert attempt["usage"]["output_tokens"] > 0 and "cost_usd" in attempt
    exact = api.get(base, params={"custom_id": "slow-150"}).json()
    assert [x["custom_id"] for x in exact["data"]] == ["slow-150"]


def test_pages_by_keyset_and_by_offset(api: httpx.Client, cancelled: dict[str, Any]) -> None:
    base = f"/batches/{cancelled['id']}/lines"
    one = api.get(base, params={"limit": 50}).json()
    assert one["total_matching"] == 201 and one["has_more"] and len(one["data"]) == 50
    lines = [x["line"] for x in one["data"]]
    assert lines == sorted(lines) and one["last_line"] == lines[-1]
    two = api.get(base, params={"limit": 50, "after": one["last_line"]}).json()
    page_three = api.get(base, params={"limit": 50, "offset": 100}).json()
    assert two["first_line"] == lines[-1] + 1
    assert page_three["first_line"] == two["last_line"] + 1
    last = api.get(base, params={"limit": 50, "offset": 200}).json()
    assert len(last["data"]) == 1 and not last["has_more"]


def test_bodies_over_64_kb_are_cut_in_pages_and_whole_on_the_line(api: httpx.Client) -> None:
    big = "x" * 100_000
    done = wait_for_batch(api, create(api, [chat_line("small", "hi"), chat_line("big", big)])["id"])
    page = api.get(f"/batches/{done['id']}/lines").json()
    small, large = page["data"]
    assert not small["request"]["truncated"] and small["request"]["text"] is None
    request = large["request"]
    assert request["truncated"] and request["json"] is None and request["bytes"] > 100_000
    assert request["text"].startswith('{"model":"mock/echo"') and "[cut: " in request["text"]
    assert request["full_url"] == large["url"] and large["url"].endswith(f"/v1/batches/{done['id']}/lines/"
                                                                         f"{large['line']}")
    assert large["result"]["truncated"]  # the echo answer is as big
    assert len(request["text"]) < 66 * 1024
    whole = httpx.get(large["url"], headers=api.headers).json()
    assert whole["request"]["json"]["messages"][0]["content"] == big and not whole["result"]["truncated"]
    assert big in whole["result"]["json"]["response"]["body"]["choices"][0]["message"]["content"]


def test_bad_queries_answer_400_naming_the_parameter(api: httpx.Client, gw: Gateway, cancelled: dict[str, Any],
                                                     tmp_path: Path) -> None:
    base = f"/batches/{cancelled['id']}/lines"
    for params, param in (({"status": "done"}, "status"), ({"after": "abc"}, "after"), ({"limit": 0}, "limit"),
                          ({"limit": 101}, "limit"), ({"custom_id": "x" * 600}, "custom_id")):
        resp = api.get(base, params=params)
        assert resp.status_code == 400, (params, resp.text)
        assert resp.json()["error"]["param"] == param, resp.text
    missing = api.get(f"{base}/99999")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "line_not_found"
    assert api.get(f"{base}/abc").status_code in (400, 422)
    other = gw.client(gw.new_key("someone-else"))
    assert other.get(base).status_code == 404 and other.get(f"{base}/1").status_code == 404


def test_the_list_searches_by_id_prefix_metadata_value_and_session_prefix(api: httpx.Client) -> None:
    a = create(api, [chat_line("a", "hi")], metadata={"team": "search-ml", "run": "7"}, session_id="agent-run-42")
    b = create(api, [chat_line("b", "hi")], metadata={"team": "search-web"}, session_id="agent-other")

    def ids(**params: str) -> list[str]:
        resp = api.get("/batches", params={"limit": 100, **params})
        assert resp.status_code == 200, resp.text
        return [x["id"] for x in resp.json()["data"]]

    assert ids(id_prefix=a["id"][:-3]) == [a["id"]]
    assert ids(metadata_value="search-ml") == [a["id"]]
    assert ids(metadata_value="search-web") == [b["id"]]
    assert ids(metadata_value="search") == []  # values match exactly
    assert set(ids(session_prefix="agent-")) >= {a["id"], b["id"]}
    assert ids(session_prefix="agent-run") == [a["id"]]
    assert ids(session_prefix="agent-run", metadata_value="search-web") == []
    resp = api.get("/batches", params={"id_prefix": "x" * 600})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "id_prefix"


def test_the_dry_run_gives_an_expected_cost_below_the_upper_bound(api: httpx.Client) -> None:
    def preview(**extra: Any) -> dict[str, Any]:
        rows = [chat_line(f"d{i}", "hello there " * 20, **extra) for i in range(10)]
        resp = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": rows, "dry_run": True})
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    uncapped = preview()  # the upper bound assumes 4,096 output tokens each; a typical answer is far shorter
    assert 0 < uncapped["expected_cost_nanos"] < uncapped["estimated_nanos"] / 4
    out = next(p for p in uncapped["pricing_lines"] if p["dimension"] == "output_text_tokens")
    assert out["quantity"] == 10 * 256
    inputs = next(p for p in uncapped["pricing_lines"] if p["dimension"] == "input_text_tokens")
    longer = api.post("/batches", json={"endpoint": "/v1/chat/completions", "dry_run": True, "requests": [
        chat_line(f"l{i}", "hello there " * 200) for i in range(10)]}).json()
    assert next(p for p in longer["pricing_lines"] if p["dimension"] == "input_text_tokens")["quantity"] > \
        5 * inputs["quantity"]  # from the lines' actual prompts
    capped = preview(max_tokens=16)  # under a small cap, the expected answer is the cap
    assert next(p for p in capped["pricing_lines"] if p["dimension"] == "output_text_tokens")["quantity"] == 160
    assert capped["expected_cost_nanos"] <= capped["estimated_nanos"]
