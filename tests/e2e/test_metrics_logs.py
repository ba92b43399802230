"""GET /metrics in Prometheus format, and structured JSON log lines carrying batch and request ids."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.harness import Gateway, Receiver, Upstream, jsonl, wait_for_batch


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample line of the Prometheus text format."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels} in:\n{text[:3000]}")


def test_metrics_and_json_logs(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path / "up.log")
    receiver = Receiver(tmp_path / "rx.log", status=500)
    config = ("[executor]\nbackoff_base_seconds = 0.05\n[webhooks]\nallow_local = true\n"
              "retry_schedule_seconds = [0.2]\npoll_interval_seconds = 0.1\n")
    gw = Gateway(tmp_path / "data", env={"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "k"}, config=config,
                 log_level="info")
    try:
        api = gw.client()
        rows = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
                 "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                          "x_fault": {"key": f"q{i}", "plan": [429] if i < 2 else ([400] if i == 2 else []),
                                      "retry_after": 0.1}}} for i in range(10)]
        file_id = api.post("/files", files={"file": ("m.jsonl", jsonl(rows))}, data={"purpose": "batch"}).json()["id"]
        batch = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                           "webhook": {"url": receiver.url}}).json()
        wait_for_batch(api, batch["id"])
        deadline = time.monotonic() + 15
        while not api.get(f"/batches/{batch['id']}").json()["webhook"]["delivery"]["failed_events"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        resp = httpx.get(gw.base_url.removesuffix("/v1") + "/metrics")
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
        text = resp.text
        assert sample(text, "aistats_batch_lines_total", model="gpt-4o-mini", outcome="succeeded") == 9
        assert sample(text, "aistats_batch_lines_total", model="gpt-4o-mini", outcome="failed") == 1
        assert sample(text, "aistats_upstream_429_total", provider="openai", model="gpt-4o-mini") == 2
        assert sample(text, "aistats_upstream_latency_seconds_count", provider="openai", status_class="2xx") == 9
        assert sample(text, "aistats_batches_finished_total", status="completed") == 1
        assert sample(text, "aistats_webhook_attempts_total", outcome="failed_permanently") == 1
        assert sample(text, "aistats_executor_lines_in_memory") == 0
        # AIMD (the upstream's limits are unknown): slow start from 8, halved by the 429s, never above 64.
        assert 1 <= sample(text, "aistats_lane_concurrency_limit", lane="openai/gpt-4o-mini") <= 64
        assert sample(text, "aistats_lane_in_flight", lane="openai/gpt-4o-mini") == 0
        assert sample(text, "aistats_lane_queued", lane="openai/gpt-4o-mini") == 0
        assert sample(text, "aistats_batches", status="completed") == 1
        assert sample(text, "aistats_unfinished_batch_lines", state="pending") == 0
    finally:
        gw.stop()
        receiver.stop()
        upstream.stop()
    entries = [json.loads(line) for line in gw.log.read_text().splitlines() if line.startswith("{")]
    assert entries and all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
    webhook_logs = [e for e in entries if e["logger"].endswith("deliverer")]
    assert webhook_logs and all(e.get("batch_id") == batch["id"] for e in webhook_logs)
