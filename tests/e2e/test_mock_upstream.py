"""The benchmark mock upstream (`aistats_gateway.testing.mock_upstream`) through real HTTP: answers
and usage, RPM and TPM enforcement with OpenAI's 429 body and headers, the ledger, latency that
does not block the loop, and the request shapes it refuses."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Proc, free_port


class Mock(Proc):
    def __init__(self, log: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([sys.executable, "-m", "aistats_gateway.testing.mock_upstream", "--port", str(self.port),
                          *args], dict(os.environ), log, f"{self.url}/_stats")
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def chat(self, text: str, max_tokens: int | None = None, **extra: Any) -> httpx.Response:
        body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return self.http.post("/v1/chat/completions", json=body)

    def get(self, path: str) -> Any:
        return self.http.get(path).json()

    def close(self) -> None:
        self.http.close()
        self.stop()


@pytest.fixture(scope="module")
def rpm_bound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mock]:
    # 60 RPM = a bucket of 1 request, refilled at 1/s; 6000 TPM = 100 tokens, refilled at 100/s
    mock = Mock(tmp_path_factory.mktemp("mock") / "rpm.log", "--rpm", "60", "--tpm", "6000")
    yield mock
    mock.close()


@pytest.fixture(scope="module")
def tpm_bound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mock]:
    # 600 TPM = a bucket of 10 tokens, refilled at 10/s; 6000 RPM = 100 requests
    mock = Mock(tmp_path_factory.mktemp("mock") / "tpm.log", "--rpm", "6000", "--tpm", "600")
    yield mock
    mock.close()


@pytest.fixture(scope="module")
def open_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mock]:
    mock = Mock(tmp_path_factory.mktemp("mock") / "open.log", "--latency-ms", "300")
    yield mock
    mock.close()


def test_answers_have_openai_shapes_and_word_count_usage(open_mock: Mock) -> None:
    http = open_mock.http
    chat = http.post("/v1/chat/completions", json={
        "model": "m", "max_completion_tokens": 3,
        "messages": [{"role": "system", "content": "be  brief"},
                     {"role": "user", "content": [{"type": "text", "text": "one two three"},
                                                  {"type": "image_url", "image_url": {"url": "x"}}]}]})
    assert chat.status_code == 200
    body = chat.json()
    assert body["object"] == "chat.completion" and body["model"] == "m"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert body["choices"][0]["message"]["content"] == "ok ok ok"
    assert "x-ratelimit-limit-requests" not in chat.headers  # no limit set, no limit headers

    resp = http.post("/v1/responses", json={"model": "m", "input": "a b c d", "max_output_tokens": 50}).json()
    assert resp["object"] == "response"
    assert resp["usage"] == {"input_tokens": 4, "output_tokens": 8, "total_tokens": 12}  # completion = min(max, 8)
    emb = http.post("/v1/embeddings", json={"model": "e", "input": ["x y", "z"]}).json()
    assert [d["index"] for d in emb["data"]] == [0, 1] and emb["usage"]["prompt_tokens"] == 3
    comp = http.post("/v1/completions", json={"model": "c", "prompt": "hello there"}).json()
    assert comp["object"] == "text_completion" and comp["usage"]["completion_tokens"] == 8  # default max 16 -> 8


def test_bad_requests_get_clear_errors(open_mock: Mock) -> None:
    http = open_mock.http
    bad = http.post("/v1/chat/completions", content=b"{not json")
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]["message"]
    assert http.post("/v1/nope", json={}).status_code == 404
    assert http.get("/v1/chat/completions").status_code == 405
    # A chunked body is refused with 400 and the connection closed.
    with socket.create_connection(("127.0.0.1", open_mock.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"2\r\n{}\r\n0\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400") and b"Chunked" in reply


def test_latency_is_a_timer_not_a_blocked_loop(open_mock: Mock) -> None:
    stats = open_mock.get("/_stats")
    assert stats["latency"] == {"ms": 300.0, "dist": "fixed", "longtail_sigma": None}
    done = threading.Event()
    started = time.monotonic()

    def slow() -> None:
        open_mock.chat("slow one", user="slow")
        done.set()

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.05)
    fast = httpx.get(f"{open_mock.url}/_stats", timeout=5)  # another connection, while the answer is pending
    assert fast.status_code == 200 and not done.is_set()
    thread.join(10)
    assert done.is_set() and time.monotonic() - started >= 0.29


def test_longtail_latency_is_lognormal_with_p99_ten_times_the_median() -> None:
    from aistats_gateway.testing.mock_upstream import MockUpstream

    mock = MockUpstream(latency_ms=50, latency_dist="longtail", seed=7)
    draws = sorted(mock.delay() for _ in range(20_000))
    median, p99 = draws[len(draws) // 2], draws[int(len(draws) * 0.99)]
    assert 0.045 < median < 0.055
    assert 8 < p99 / median < 12.5
    assert MockUpstream(latency_ms=50).delay() == 0.05


def test_keep_alive_connection_serves_many_requests(open_mock: Mock) -> None:
    with socket.create_connection(("127.0.0.1", open_mock.port), timeout=5) as sock:
        req = (b"POST /_reset HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
               b"GET /_ledger HTTP/1.1\r\nhost: x\r\n\r\n")  # two pipelined requests, answered in order
        sock.sendall(req)
        reply = b""
        while reply.count(b"HTTP/1.1 200") < 2 or not reply.endswith(b"}"):
            reply += sock.recv(4096)
    first, second = reply.split(b"HTTP/1.1 200")[1:]
    assert b'{"ok":true}' in first and b'"accepted":{}' in second


def test_rpm_limit_answers_429_with_openai_body_and_headers(rpm_bound: Mock) -> None:
    mock = rpm_bound
    mock.http.post("/_reset")
    first = mock.chat("a", max_tokens=1, user="line-1")  # costs 1 request, 2 tokens
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "60"
    assert first.headers["x-ratelimit-remaining-requests"] == "59"
    assert first.headers["x-ratelimit-reset-requests"] == "1s"  # one request refills in 1 s
    assert first.headers["x-ratelimit-limit-tokens"] == "6000"
    assert first.headers["x-ratelimit-remaining-tokens"] == "5998"
    assert first.headers["x-ratelimit-reset-tokens"] == "20ms"  # 2 tokens at 100/s
    second = mock.chat("b", max_tokens=1, user="line-2")  # the request bucket (1) is empty
    assert second.status_code == 429
    error = second.json()["error"]
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded" and error["param"] is None
    assert error["message"].startswith("Rate limit reached for gpt-4o-mini")
    assert "on requests per min (RPM): Limit 60, Used" in error["message"] and "Requested 1." in error["message"]
    retry_ms = int(second.headers["retry-after-ms"])
    assert 0 < retry_ms <= 1000
    assert second.headers["retry-after"] == "1"
    assert "Please try again in " in error["message"]
    assert second.headers["x-ratelimit-limit-requests"] == "60" and "x-ratelimit-reset-tokens" in second.headers
    time.sleep(retry_ms / 1000 + 0.02)
    assert mock.chat("b", max_tokens=1, user="line-2").status_code == 200  # room again, as promised

    stats = mock.get("/_stats")
    assert (stats["requests"], stats["accepted"], stats["throttled"], stats["throttled_requests"]) == (3, 2, 1, 1)
    assert stats["limits"] == {"rpm": 60, "tpm": 6000, "bucket_seconds": 1.0}
    assert sum(n for _, n, _ in stats["per_second"]) == 2
    assert stats["max_accepted_in_1s"] == 1  # the second accept waited for the refill: a later second
    assert sum(tok for _, _, tok in stats["per_second"]) == stats["accepted_tokens"] == 4
    ledger = mock.get("/_ledger")
    assert ledger == {"accepted": {"line-1": 1, "line-2": 1}, "seen": {"line-1": 1, "line-2": 2}}


def test_tpm_limit_counts_prompt_words_plus_max_tokens(tpm_bound: Mock) -> None:
    mock = tpm_bound
    mock.http.post("/_reset")
    ok = mock.chat("one two three", max_tokens=7, metadata={"custom_id": "t-1"})  # 3 + 7 = the whole 10 tokens
    assert ok.status_code == 200 and ok.headers["x-ratelimit-remaining-tokens"] == "590"
    assert ok.headers["x-ratelimit-reset-tokens"] == "1s"
    no = mock.chat("one two three", max_tokens=7, metadata={"custom_id": "t-2"})
    assert no.status_code == 429
    error = no.json()["error"]
    assert error["type"] == "tokens" and "on tokens per min (TPM): Limit 600, Used" in error["message"]
    assert "Requested 10." in error["message"]
    assert 0 < int(no.headers["retry-after-ms"]) <= 1000
    assert mock.get("/_stats")["throttled_tokens"] == 1
    assert mock.get("/_ledger") == {"accepted": {"t-1": 1}, "seen": {"t-1": 1, "t-2": 1}}
    mock.http.post("/_reset")  # refills the buckets and clears the ledger
    assert mock.get("/_ledger") == {"accepted": {}, "seen": {}}
    # 1 word + the default 16 = 17 tokens, more than the whole bucket: accepted when it is full
    big = mock.http.post("/v1/embeddings", json={"model": "e", "input": "x"})
    assert big.status_code == 200 and big.headers["x-ratelimit-remaining-tokens"] == "590"
    assert mock.get("/_stats")["unkeyed"] == 1
