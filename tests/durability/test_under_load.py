"""Cancel and expiry with about two thousand lines in flight against a slow real upstream: every line
lands once, finished lines are kept, and no cancelled or expired line was ever sent upstream."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from aistats_gateway.clock import FakeClock
from tests.harness import Gateway, InProcessGateway, Upstream, jsonl, wait_for_batch

LINES = 5000


def lines(prefix: str) -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": str(i)}],
                      "x_fault": {"key": f"{prefix}{i}"}}} for i in range(LINES)]


def check(api: httpx.Client, batch: dict[str, Any], rows: list[dict[str, Any]], ledger: dict[str, int],
          halt_code: str) -> tuple[int, int]:
    out = [json.loads(x) for x in api.get(f"/files/{batch['output_file_id']}/content").text.splitlines()]
    err = [json.loads(x) for x in api.get(f"/files/{batch['error_file_id']}/content").text.splitlines()]
    ids = [x["custom_id"] for x in out + err]
    assert sorted(ids) == sorted(r["custom_id"] for r in rows) and len(set(ids)) == LINES
    assert batch["request_counts"].items() >= {"total": LINES, "completed": len(out), "failed": len(err)}.items()
    assert {x["error"]["code"] for x in err} == {halt_code}
    assert all(ledger.get(x["custom_id"], 0) == 1 for x in out), "each finished line was sent exactly once"
    assert all(ledger.get(x["custom_id"], 0) == 0 for x in err), f"a {halt_code} line was sent upstream"
    return len(out), len(err)


def in_flight(upstream: Upstream) -> int:
    return int(upstream.stats().get("requests", 0))


def test_cancel_with_thousands_in_flight(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path / "up.log", latency_ms=400)
    gw = Gateway(tmp_path / "data", env={"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "k"},
                 config="[executor]\nconcurrency = 1000\n")
    try:
        api = gw.client()
        rows = lines("c")
        file_id = api.post("/files", files={"file": ("c.jsonl", jsonl(rows))}, data={"purpose": "batch"}).json()["id"]
        batch = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}).json()
        deadline = time.monotonic() + 30
        while in_flight(upstream) < 1000:  # a thousand on the wire, a thousand more leased and queued
            assert time.monotonic() < deadline
            time.sleep(0.05)
        api.post(f"/batches/{batch['id']}/cancel")
        done = wait_for_batch(api, batch["id"], timeout=60)
        assert done["status"] == "cancelled"
        finished, cancelled = check(api, done, rows, upstream.ledger(), "batch_cancelled")
        assert finished >= 1000 and cancelled >= 1000
    finally:
        gw.stop()
        upstream.stop()


def test_expiry_with_thousands_in_flight(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path / "up.log", latency_ms=400)
    clock = FakeClock(start=time.time())
    gw = InProcessGateway(tmp_path / "data", clock, executor={"concurrency": 1000, "expiry_check_seconds": 0.1},
                          providers=[{"name": "openai", "kind": "openai", "base_url": upstream.base_url,
                                      "api_key": "k", "models": ["*"]}])
    try:
        api = gw.client()
        rows = lines("e")
        batch = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": rows,
                                           "completion_window": "1h"}).json()
        deadline = time.monotonic() + 30
        while in_flight(upstream) < 1000:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        clock.advance(3601)
        done = wait_for_batch(api, batch["id"], timeout=60)
        assert done["status"] == "expired"
        finished, expired = check(api, done, rows, upstream.ledger(), "batch_expired")
        assert finished >= 1000 and expired >= 1000
    finally:
        gw.stop()
        upstream.stop()
