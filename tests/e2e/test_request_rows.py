"""`GET /v1/batches/{id}/requests` rows over real HTTP: one row per input line in the SDKs' BatchRequestRow shape
(with the line's last attempt), kept after the end (input position, method, endpoint, body hash), filtered by
row status with `has_more` paging, bounded in size; `view=attempts` is the request log as before."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

import orjson

from tests.harness import Gateway, Upstream, chat_line, wait_for_batch

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
SDK_FIELDS = {"id", "custom_id", "request_index", "provider", "native_batch_id", "method", "endpoint", "model",
              "status", "request_body_hash", "response_status", "response_body", "error_body", "usage", "cost_nanos",
              "cost_usd", "meta", "created_at", "updated_at", "completed_at"}
ATTEMPT_FIELDS = {"request_id", "attempt", "status_code", "error_code", "latency_ms", "session_id", "attempts"}


def test_rows_in_the_sdk_shape_with_filters_and_paging(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path / "up.log")
    config = "[executor]\nbackoff_base_seconds = 0.05\nbackoff_max_seconds = 0.1\n"
    gw = Gateway(tmp_path / "data", env={"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "k"}, config=config)
    try:
        api = gw.client()
        lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": str(i)}],
                           "x_fault": {"key": f"r{i}", "plan": [500] if i < 3 else ([400] if i == 3 else [])}}}
                 for i in range(10)]
        batch = api.post("/batches", json={"endpoint": "chat/completions", "requests": lines,
                                           "session_id": "sess-rows"}).json()
        wait_for_batch(api, batch["id"])
        page = api.get(f"/batches/{batch['id']}/requests").json()
        assert page["object"] == "list" and page["batch_id"] == batch["id"] and page["has_more"] is False
        rows = page["data"]
        assert [r["request_index"] for r in rows] == list(range(10))
        assert [r["custom_id"] for r in rows] == [f"r{i}" for i in range(10)]
        for row, line in zip(rows, lines, strict=True):
            assert SDK_FIELDS | ATTEMPT_FIELDS <= set(row), sorted(SDK_FIELDS - set(row))
            assert row["method"] == "POST" and row["endpoint"] == "/v1/chat/completions"
            assert row["provider"] == "openai" and row["model"] == "gpt-4o-mini"
            assert row["request_body_hash"] == hashlib.sha256(orjson.dumps(line["body"])).hexdigest()
            assert row["meta"]["input_mode"] == "requests" and row["session_id"] == "sess-rows"
            assert ISO.match(row["created_at"]) and ISO.match(row["updated_at"]) and ISO.match(row["completed_at"])
            assert row["request_id"].startswith("G-") and row["native_batch_id"] is None
        ok = [r for r in rows if r["custom_id"] != "r3"]
        assert all(r["status"] == "completed" and r["response_status"] == 200 for r in ok)
        assert all(r["response_body"]["choices"] and r["error_body"] is None for r in ok)
        assert all(r["usage"]["prompt_tokens"] > 0 for r in ok)
        assert all(isinstance(r["cost_usd"], float) and r["cost_usd"] == r["cost_nanos"] / 1e9 for r in ok)
        assert [r["attempts"] for r in rows[:3]] == [2, 2, 2] and rows[0]["attempt"] == 2
        failed = rows[3]
        assert failed["status"] == "failed" and failed["response_status"] == 400 and failed["error_body"]
        assert failed["status_code"] == 400 and failed["attempts"] == 1

        def get(**params: Any) -> Any:
            answer = api.get(f"/batches/{batch['id']}/requests", params=params)
            assert answer.status_code == 200, answer.text
            return answer.json()

        only_failed = get(status="failed")["data"]
        assert [(r["custom_id"], r["request_index"]) for r in only_failed] == [("r3", 3)]  # index kept
        assert [r["custom_id"] for r in get(status="error")["data"]] == ["r3"]
        assert len(get(status="completed")["data"]) == 9 and get(status="success")["data"][0]["custom_id"] == "r0"
        assert get(status="queued")["data"] == [] and get(status="cancelled")["data"] == []
        assert [r["custom_id"] for r in get(status="500")["data"]] == ["r0", "r1", "r2"]  # an attempt got a 500
        first = get(limit=4)
        assert [r["request_index"] for r in first["data"]] == [0, 1, 2, 3] and first["has_more"] is True
        last = get(limit=4, offset=8)
        assert [r["request_index"] for r in last["data"]] == [8, 9] and last["has_more"] is False
        filtered = get(status="completed", limit=2, offset=3)
        assert [r["request_index"] for r in filtered["data"]] == [4, 5] and filtered["has_more"] is True
        assert len(get(view="attempts", limit=100)["data"]) == 13  # the request log: 10 lines + 3 retries
        for params, param in (({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"offset": "-1"}, "offset"),
                              ({"status": "bogus"}, "status"), ({"status": "validating"}, "status"),
                              ({"view": "lines"}, "view"), ({"status": "queued", "view": "attempts"}, "status")):
            refused = api.get(f"/batches/{batch['id']}/requests", params=params)
            assert refused.status_code == 400 and refused.json()["error"]["param"] == param, (params, refused.text)
        assert len(get(limit=1000)["data"]) == 10
        other = gw.client(gw.new_key("rows-other"))
        assert other.get(f"/batches/{batch['id']}/requests").status_code == 404
    finally:
        gw.stop()
        upstream.stop()


def test_cancelled_rows_a_file_batch_and_big_bodies_cut(tmp_path: Path) -> None:
    gw = Gateway(tmp_path / "data", config="[executor]\nconcurrency = 2\n[mock]\nslow_latency_ms = 200\n")
    try:
        api = gw.client()
        slow = api.post("/batches", json={"endpoint": "/v1/chat/completions",
                                          "requests": [chat_line(f"s{i}", "x", model="mock/slow")
                                                       for i in range(60)]}).json()
        deadline = time.monotonic() + 30
        while api.get(f"/batches/{slow['id']}").json()["request_counts"]["completed"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        api.post(f"/batches/{slow['id']}/cancel")
        wait_for_batch(api, slow["id"])
        rows = api.get(f"/batches/{slow['id']}/requests", params={"limit": 1000}).json()["data"]
        assert len(rows) == 60 and [r["request_index"] for r in rows] == list(range(60))
        cancelled = [r for r in rows if r["status"] == "cancelled"]
        assert cancelled and all(r["error_body"]["code"] == "batch_cancelled" for r in cancelled)
        assert all(r["method"] == "POST" and r["request_body_hash"] for r in cancelled)  # kept after the end
        by_filter = api.get(f"/batches/{slow['id']}/requests", params={"status": "cancelled", "limit": 1000}).json()
        assert [r["custom_id"] for r in by_filter["data"]] == [r["custom_id"] for r in cancelled]

        # a file batch (with a blank line: request_index counts requests, not file lines) and a big answer
        big = "y" * 40_000
        content = (orjson.dumps(chat_line("big", big)) + b"\n\n" + orjson.dumps(chat_line("small", "z")) + b"\n")
        file_id = api.post("/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}).json()["id"]
        done = wait_for_batch(api, api.post("/batches", json={"input_file_id": file_id,
                                                              "endpoint": "/v1/chat/completions"}).json()["id"])
        assert done["status"] == "completed"
        page = api.get(f"/batches/{done['id']}/requests")
        assert len(page.content) < 20_000  # the 40 kB answer is not in the page
        rows = page.json()["data"]
        assert [(r["custom_id"], r["request_index"], r["line"]) for r in rows] == [("big", 0, 1), ("small", 1, 3)]
        assert rows[0]["response_body"]["truncated"] is True and rows[0]["response_body"]["bytes"] > 40_000
        assert rows[1]["response_body"]["choices"] and rows[0]["meta"]["input_mode"] == "file"
    finally:
        gw.stop()
