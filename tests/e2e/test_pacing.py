"""Pacing through real processes: the gateway against the rate-limited mock upstream, which answers
429 (with OpenAI's body and headers) whenever a request does not fit its per-second buckets.

Without pacing these batches draw hundreds of 429s (every line is sent at once); paced, the
upstream sees almost none and every line succeeds. Limits come from the configuration, or are
learned from the `x-ratelimit-*` headers when the configuration says nothing."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Gateway, Proc, free_port, jsonl, wait_for_batch


class Mock(Proc):
    def __init__(self, log: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([sys.executable, "-m", "aistats_gateway.testing.mock_upstream", "--port", str(self.port),
                          *args], dict(os.environ), log, f"{self.url}/_stats")

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/_stats").json())

    def reset(self) -> None:
        httpx.post(f"{self.url}/_reset")


def gateway(root: Path, mock: Mock, limits: str = "", concurrency: int = 64) -> Gateway:
    return Gateway(root, config=f"""
[executor]
concurrency = {concurrency}

[[providers]]
name = "openai"
kind = "openai"
base_url = "{mock.url}/v1"
api_key = "sk-mock"
models = ["*"]
{limits}
""")


def run_batch(gw: Gateway, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    with gw.client() as client:
        file_id = client.post("/files", files={"file": ("in.jsonl", jsonl(rows))},
                              data={"purpose": "batch"}).json()["id"]
        started = time.monotonic()
        batch = client.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}).json()
        done = wait_for_batch(client, batch["id"], timeout=120)
        elapsed = time.monotonic() - started
        out = [json.loads(x) for x in client.get(f"/files/{done['output_file_id']}/content").text.splitlines()]
    return done, out, elapsed


def rows(n: int, words: int = 5, max_tokens: int = 8, prefix: str = "r") -> list[dict[str, Any]]:
    text = " ".join(["word"] * words)
    return [{"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}],
                      "max_tokens": max_tokens, "user": f"{prefix}{i}"}} for i in range(n)]


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # 3,000 RPM = 50 requests a second (a bucket of 50); 60,000 TPM = 1,000 tokens a second
    m = Mock(tmp_path_factory.mktemp("mock") / "mock.log", "--rpm", "3000", "--tpm", "60000")
    yield m
    m.stop()


def test_configured_rpm_paces_the_batch(mock: Mock, tmp_path: Path) -> None:
    mock.reset()
    gw = gateway(tmp_path / "gw", mock, "rpm = 3000")
    try:
        done, out, elapsed = run_batch(gw, rows(200))
    finally:
        gw.stop()
    stats = mock.stats()
    assert done["request_counts"].items() >= {"total": 200, "completed": 200, "failed": 0}.items()
    assert len(out) == 200
    # Sent all at once, 150 of these 200 would be refused; paced, (almost) none is.
    assert stats["throttled"] <= 2, stats
    assert stats["accepted"] == 200
    # 200 requests at 50/s after a bucket of 50 cannot take less than 3 s: the upstream allowed no faster.
    assert elapsed >= 2.5


def test_limits_learned_from_headers_when_not_configured(mock: Mock, tmp_path: Path) -> None:
    mock.reset()
    gw = gateway(tmp_path / "gw", mock)
    try:
        done, _, _ = run_batch(gw, rows(200, prefix="l"))
        metrics = httpx.get(gw.base_url.removesuffix("/v1") + "/metrics").text
    finally:
        gw.stop()
    stats = mock.stats()
    assert done["request_counts"]["completed"] == 200
    # Before the first answer told the lane the limits it runs AIMD from a window of 8; after, it paces.
    assert stats["throttled"] <= 10, stats
    assert 'aistats_lane_rate_limit{budget="requests",lane="openai/gpt-4o-mini"} 3000.0' in metrics
    assert 'aistats_lane_rate_limit{budget="tokens",lane="openai/gpt-4o-mini"} 60000.0' in metrics


def test_tpm_paces_by_estimated_tokens_reconciled_with_usage(mock: Mock, tmp_path: Path) -> None:
    mock.reset()
    # 60 words + max_tokens 40 = 100 tokens a line as the upstream counts them: 10 lines a second.
    gw = gateway(tmp_path / "gw", mock, "tpm = 60000")
    try:
        done, _, elapsed = run_batch(gw, rows(40, words=60, max_tokens=40, prefix="t"))
    finally:
        gw.stop()
    stats = mock.stats()
    assert done["request_counts"]["completed"] == 40
    assert stats["throttled"] <= 2, stats
    # 4,000 tokens at 1,000/s after a 1,000-token bucket: at least 3 s, whatever the machine's speed.
    assert elapsed >= 2.5


def test_a_slow_model_does_not_hold_back_the_fast_one_in_a_mixed_batch(mock: Mock, tmp_path: Path) -> None:
    mock.reset()
    # 60 lines of a model paced at 10/s first, then 100 lines of an unlimited one: leasing in line order
    # would fill every leased slot with slow lines waiting in their lane.
    gw = gateway(tmp_path / "gw", mock, '[providers.limits."slow-model"]\nrpm = 600', concurrency=8)
    slow = rows(60, prefix="s")
    fast = rows(100, prefix="f")
    for line in slow:
        line["body"]["model"] = "slow-model"
    try:
        done, _, _ = run_batch(gw, slow + fast)
        with gw.client() as client:
            log = client.get(f"/batches/{done['id']}/requests",
                             params={"limit": 1000, "view": "attempts"}).json()["data"]
    finally:
        gw.stop()
    assert done["request_counts"]["completed"] == 160
    slow_times = sorted(row["created_at"] for row in log if row["model"] == "slow-model")
    fast_times = sorted(row["created_at"] for row in log if row["model"] == "gpt-4o-mini")
    assert len(slow_times) == 60 and len(fast_times) == 100
    # every fast line was answered while the slow lane still had most of its 6 seconds of work ahead. The log's
    # timestamps are whole seconds, so "in the same second as the slow lane's 31st line" counts as before it: a
    # batch whose fast lines waited behind the slow lane would end them after its last line (~6 s), not at ~3 s.
    assert fast_times[-1] <= slow_times[30] < slow_times[-1], (
        fast_times[-1] - slow_times[0], slow_times[30] - slow_times[0], slow_times[-1] - slow_times[0])
