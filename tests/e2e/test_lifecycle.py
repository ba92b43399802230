"""Expiry (driven by a clock the test controls) and recovery after the process is killed mid-batch."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from aistats_gateway.clock import FakeClock
from tests.harness import Gateway, InProcessGateway, chat_line, jsonl, wait_for_batch


def test_expiry_keeps_finished_results_and_expires_the_rest(tmp_path: Path) -> None:
    clock = FakeClock(start=time.time())
    gw = InProcessGateway(tmp_path / "data", clock, executor={"concurrency": 4, "expiry_check_seconds": 0.05},
                          mock={"slow_latency_ms": 100})
    try:
        api = gw.client()
        rows = [chat_line(f"x{i}", "slow", model="mock/slow") for i in range(200)]
        batch = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": rows,
                                           "completion_window": "1h"}).json()
        deadline = time.monotonic() + 20
        while api.get(f"/batches/{batch['id']}").json()["request_counts"]["completed"] < 10:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with connect(gw.base_url.replace("http://", "ws://") + f"/async/batch/{batch['id']}/ws?interval_ms=1000",
                     additional_headers={"Authorization": f"Bearer {gw.api_key}"}) as stream:
            assert json.loads(stream.recv(timeout=10))["type"] == "job.snapshot"
            clock.advance(3601)
            done = wait_for_batch(api, batch["id"], timeout=20)
            last: dict[str, object] = {}
            with contextlib.suppress(ConnectionClosed):
                while True:
                    last = json.loads(stream.recv(timeout=10))
        assert stream.close_code == 1000 and last["data"]["status"] == "expired"  # type: ignore[index]
        assert done["status"] == "expired" and done["expired_at"] and done["lifecycle_status"] == "expired"
        counts = done["request_counts"]
        assert counts["total"] == 200 and counts["completed"] + counts["failed"] == 200
        assert 10 <= counts["completed"] < 200
        out = [json.loads(x) for x in api.get(f"/files/{done['output_file_id']}/content").text.splitlines()]
        err = [json.loads(x) for x in api.get(f"/files/{done['error_file_id']}/content").text.splitlines()]
        assert {e["error"]["code"] for e in err} == {"batch_expired"}
        assert sorted(x["custom_id"] for x in out + err) == sorted(r["custom_id"] for r in rows)
        assert done["cancel_url"] is None
    finally:
        gw.stop()


def test_a_killed_gateway_resumes_and_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = "[executor]\nconcurrency = 8\n[mock]\nslow_latency_ms = 50\n"
    gw = Gateway(data, config=config)
    rows = [chat_line(f"k{i}", "slow", model="mock/slow") for i in range(400)]
    api = gw.client()
    file_id = api.post("/files", files={"file": ("k.jsonl", jsonl(rows))}, data={"purpose": "batch"}).json()["id"]
    batch = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}).json()
    deadline = time.monotonic() + 20
    while api.get(f"/batches/{batch['id']}").json()["request_counts"]["completed"] < 50:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    gw.stop(signal.SIGKILL)
    gw = Gateway(data, config=config)  # same data directory: a restart
    try:
        api = gw.client()
        done = wait_for_batch(api, batch["id"], timeout=60)
        assert done["status"] == "completed"
        assert done["request_counts"].items() >= {"total": 400, "completed": 400, "failed": 0}.items()
        out = [json.loads(x) for x in api.get(f"/files/{done['output_file_id']}/content").text.splitlines()]
        assert sorted(x["custom_id"] for x in out) == sorted(r["custom_id"] for r in rows)
    finally:
        gw.stop()
