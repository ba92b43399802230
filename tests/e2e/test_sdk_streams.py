"""SDK beyond the documented calls: stream, wait and live results, sync and async; retries; the URL
helper's documented examples."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from aistats import AIStats, AsyncAIStats, NotFoundError
from tests.harness import Gateway, chat_line

CONFIG = "[executor]\nconcurrency = 8\n[mock]\nslow_latency_ms = 30\n"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("sdkstreams") / "data", config=CONFIG)
    yield g
    g.stop()


def rows(n: int, model: str = "mock/slow") -> list[dict[str, object]]:
    return [chat_line(f"s{i}", f"q{i}", model=model) for i in range(n)]


def test_documented_websocket_url_examples() -> None:
    client = AIStats(api_key="sk-x", base_url="http://localhost:8787/v1")
    assert client.get_async_job_websocket_url("batch", "batch_123") == "ws://localhost:8787/v1/async/batch/batch_123/ws"
    assert client.batches.websocket_url("batch_123", interval_ms=1500, close_on_terminal=False) == \
        "ws://localhost:8787/v1/async/batch/batch_123/ws?interval_ms=1500&close_on_terminal=false"
    assert client.async_jobs.websocket_url("batch", "batch_123") == "ws://localhost:8787/v1/async/batch/batch_123/ws"
    secure = AIStats(api_key="sk-x", base_url="https://gw.example.com/v1/")
    assert secure.batches.websocket_url("b1") == "wss://gw.example.com/v1/async/batch/b1/ws"
    for blank in ("", "   "):
        with pytest.raises(ValueError):
            client.batches.websocket_url(blank)
    assert "sk-x" not in client.batches.websocket_url("b1", interval_ms=1000)


def test_env_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_STATS_API_KEY", "sk-env")
    monkeypatch.setenv("AISTATS_BASE_URL", "http://127.0.0.1:9/v1")
    client = AIStats()
    assert client.api_key == "sk-env" and client.base_url == "http://127.0.0.1:9/v1"
    monkeypatch.delenv("AI_STATS_API_KEY")
    monkeypatch.delenv("AISTATS_API_KEY", raising=False)
    with pytest.raises(ValueError):
        AIStats()


def test_sync_stream_wait_and_results(gw: Gateway) -> None:
    client = AIStats(api_key=gw.api_key, base_url=gw.base_url)
    batch = client.batches.create(endpoint="/v1/chat/completions", requests=rows(150))
    events = list(client.batches.stream(batch.id, interval_ms=1000))
    assert events[0].type == "job.snapshot" and events[-1].data.status == "completed"
    assert [e.data.request_counts.completed for e in events] == sorted(e.data.request_counts.completed for e in events)
    assert client.batches.wait(batch.id, timeout=30).status == "completed"
    got = list(client.batches.results(batch.id))
    assert sorted(line.custom_id for line in got) == sorted(f"s{i}" for i in range(150))
    assert got[0].response.status_code == 200


def test_results_while_running_with_follow(gw: Gateway) -> None:
    client = AIStats(api_key=gw.api_key, base_url=gw.base_url)
    batch = client.batches.create(endpoint="/v1/chat/completions", requests=rows(300))
    seen_running = False
    got = []
    for line in client.batches.results(batch.id, follow=True):
        got.append(line.custom_id)
        if len(got) == 20:
            seen_running = client.batches.get(batch.id).status in ("validating", "in_progress")
    assert seen_running, "results arrived before the batch ended"
    assert sorted(got) == sorted(f"s{i}" for i in range(300))


def test_async_stream_wait_results(gw: Gateway) -> None:
    async def main() -> None:
        async with AsyncAIStats(api_key=gw.api_key, base_url=gw.base_url) as client:
            batch = await client.batches.create(endpoint="/v1/chat/completions", requests=rows(100))
            events = [e async for e in client.batches.stream(batch.id, interval_ms=1000)]
            assert events[0].type == "job.snapshot" and events[-1].data.status == "completed"
            final = await client.batches.wait(batch.id, timeout=30)
            assert final.request_counts.completed == 100
            lines = [x async for x in client.batches.results(batch.id)]
            assert len({x.custom_id for x in lines}) == 100
            with pytest.raises(NotFoundError):
                await client.batches.wait("batch_missing", timeout=5)

    asyncio.run(main())


def test_wait_falls_back_to_polling_and_times_out(gw: Gateway) -> None:
    client = AIStats(api_key=gw.api_key, base_url=gw.base_url)
    batch = client.batches.create(endpoint="/v1/chat/completions", requests=rows(2000))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.batches.wait(batch.id, timeout=1.5, poll_interval=0.2)
    assert time.monotonic() - started < 10
    client.batches.cancel(batch.id)


def test_idempotent_calls_retry_on_5xx_and_creates_do_not() -> None:
    """Against a real loopback server that answers 503 (Retry-After: 0) twice, then 200."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from aistats import InternalServerError

    calls: list[str] = []

    class Flaky(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            calls.append(f"{self.command} {self.path}")
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            busy = len(calls) < 3 or self.command == "POST"
            body = json.dumps({"error": {"message": "busy", "code": "busy"}} if busy else
                              {"id": "batch_1", "object": "batch", "status": "completed"}).encode()
            self.send_response(503 if busy else 200)
            self.send_header("content-type", "application/json")
            self.send_header("retry-after", "0")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = AIStats(api_key="k", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1")
        assert client.get_batch("batch_1").status == "completed"
        assert calls == ["GET /v1/batches/batch_1"] * 3
        calls.clear()
        with pytest.raises(InternalServerError) as err:
            client.create_batch(endpoint="/v1/chat/completions", input_file_id="f")
        assert calls == ["POST /v1/batches"] and err.value.status_code == 503 and err.value.code == "busy"
    finally:
        server.shutdown()
