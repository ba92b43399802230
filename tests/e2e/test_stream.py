"""The WebSocket lifecycle stream with a real client (the `websockets` package)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.harness import Gateway, chat_line, wait_for_batch

CONFIG = "[executor]\nconcurrency = 4\n[mock]\nslow_latency_ms = 40\n"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("stream") / "data", config=CONFIG)
    yield g
    g.stop()


def ws_url(gw: Gateway, batch_id: str, kind: str = "batch", **query: Any) -> str:
    base = gw.base_url.replace("http://", "ws://") + f"/async/{kind}/{batch_id}/ws"
    return base + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def open_ws(gw: Gateway, batch_id: str, key: str | None = None, **query: Any) -> ClientConnection:
    return connect(ws_url(gw, batch_id, **query), additional_headers={"Authorization": f"Bearer {key or gw.api_key}"},
                   open_timeout=10)


def frames(ws: ClientConnection, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every frame until the server closes the socket."""
    out = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            out.append(json.loads(ws.recv(timeout=deadline - time.monotonic())))
    except ConnectionClosed:
        return out
    raise AssertionError(f"socket still open after {timeout}s; got {len(out)} frames")


def slow_batch(api: httpx.Client, n: int = 120, model: str = "mock/slow") -> dict[str, Any]:
    resp = api.post("/batches", json={"endpoint": "/v1/chat/completions",
                                      "requests": [chat_line(f"w{i}", "x", model=model) for i in range(n)]})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_refusals_follow_the_documented_order(gw: Gateway) -> None:
    api = gw.client()
    batch = slow_batch(api, 2, "mock/echo")
    plain = httpx.get(f"{gw.base_url}/async/batch/{batch['id']}/ws")
    assert plain.status_code == 426 and plain.json()["error"]["code"] == "websocket_upgrade_required"
    cases = [
        (ws_url(gw, batch["id"]), None, 401),
        (ws_url(gw, batch["id"]), "Bearer wrong", 401),
        (ws_url(gw, batch["id"], kind="video"), f"Bearer {gw.api_key}", 400),
        (ws_url(gw, "batch_missing"), f"Bearer {gw.api_key}", 404),
        (ws_url(gw, batch["id"]), f"Bearer {gw.new_key('other-ws')}", 404),
        (ws_url(gw, batch["id"], interval_ms="soon"), f"Bearer {gw.api_key}", 400),
    ]
    for url, auth, status in cases:
        headers = {"Authorization": auth} if auth else {}
        with pytest.raises(InvalidStatus) as err:
            connect(url, additional_headers=headers, open_timeout=10)
        assert err.value.response.status_code == status, (url, auth)
        body = json.loads(err.value.response.body or b"{}")
        assert body["error"]["message"]
        if status == 404:
            assert body["error"]["code"] == "async_job_not_found_or_not_owned"


def test_snapshot_updates_and_close_on_completion(gw: Gateway) -> None:
    api = gw.client()
    batch = slow_batch(api, 120)
    with open_ws(gw, batch["id"], interval_ms=1000) as ws:
        got = frames(ws)
        assert ws.close_code == 1000
    assert got[0]["type"] == "job.snapshot" and got[0]["data"]["id"] == batch["id"]
    updates = [f for f in got[1:] if f["type"] == "job.updated"]
    assert updates and updates[-1]["data"]["status"] == "completed"
    progress = [u["data"]["progress"] for u in updates]
    assert progress == sorted(progress) and progress[-1] == 100
    assert updates[-1]["data"]["request_counts"]["completed"] == 120


def test_ping_refresh_and_interval_clamping(gw: Gateway) -> None:
    api = gw.client()
    batch = slow_batch(api, 300)
    with open_ws(gw, batch["id"], interval_ms=50) as ws:  # clamped up to 1000 ms
        assert json.loads(ws.recv(timeout=10))["type"] == "job.snapshot"
        ws.send("ping")
        assert json.loads(ws.recv(timeout=10)) == {"type": "pong"}
        ws.send("refresh")
        refreshed = json.loads(ws.recv(timeout=10))
        assert refreshed["type"] == "job.updated"
        stamps = []
        while len(stamps) < 3:
            frame = json.loads(ws.recv(timeout=10))
            if frame["type"] == "job.updated":
                stamps.append(time.monotonic())
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert min(gaps) >= 0.9, gaps  # at most one update per (clamped) second
    api.post(f"/batches/{batch['id']}/cancel")


def test_close_on_terminal_for_cancel_and_failure_and_opt_out(gw: Gateway) -> None:
    api = gw.client()
    batch = slow_batch(api, 300)
    with open_ws(gw, batch["id"], interval_ms=1000) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "job.snapshot"
        api.post(f"/batches/{batch['id']}/cancel")
        got = frames(ws)
        assert got[-1]["data"]["status"] == "cancelled" and ws.close_code == 1000

    failed = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": []}).json()
    wait_for_batch(api, failed["id"])
    with open_ws(gw, failed["id"]) as ws:  # already terminal: snapshot, then close
        got = frames(ws)
        assert [f["type"] for f in got] == ["job.snapshot"] and got[0]["data"]["status"] == "failed"
        assert ws.close_code == 1000

    done = slow_batch(api, 5, "mock/echo")
    wait_for_batch(api, done["id"])
    with open_ws(gw, done["id"], close_on_terminal="false") as ws:
        assert json.loads(ws.recv(timeout=10))["data"]["status"] == "completed"
        ws.send("ping")
        assert json.loads(ws.recv(timeout=10)) == {"type": "pong"}  # still open


def test_two_hundred_subscribers_on_one_batch(gw: Gateway) -> None:
    api = gw.client()
    batch = slow_batch(api, 200)
    results: list[tuple[str, int | None]] = []
    lock = threading.Lock()

    def subscriber() -> None:
        with open_ws(gw, batch["id"], interval_ms=1000) as ws:
            got = frames(ws, timeout=60)
            with lock:
                results.append((got[-1]["data"]["status"], ws.close_code))

    threads = [threading.Thread(target=subscriber) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(results) == 200
    assert results == [("completed", 1000)] * 200
    final = api.get(f"/batches/{batch['id']}").json()
    assert final["request_counts"].items() >= {"total": 200, "completed": 200, "failed": 0}.items()


def test_stream_url_in_batch_object_is_live(gw: Gateway, tmp_path: Path) -> None:
    api = gw.client()
    batch = slow_batch(api, 3, "mock/echo")
    with connect(batch["websocket_url"], additional_headers={"Authorization": f"Bearer {gw.api_key}"}) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "job.snapshot"
