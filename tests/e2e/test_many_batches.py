"""Many unfinished batches at once: every batch makes progress, however many there are.

Before the fix, each batch's lease share was `room // number_of_batches`, which is 0 once more batches are
active than lines fit in memory (2 × concurrency): with 300 small batches nothing was ever leased again, for
every workspace, across restarts. Here 1,000 small batches from three workspaces must all finish, and a
one-line batch of a fourth workspace created while they run must finish within seconds (fair across
workspaces, not behind the 1,000 in line)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import backends
from tests.harness import Gateway, chat_line, jsonl, wait_for_batch

CONFIG = """
[executor]
concurrency = 16

[mock]
slow_latency_ms = 50
"""


def _upload(client: httpx.Client, rows: list[dict[str, Any]]) -> str:
    resp = client.post("/files", files={"file": ("in.jsonl", jsonl(rows))}, data={"purpose": "batch"})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


def _create(client: httpx.Client, file_id: str) -> str:
    resp = client.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                         "completion_window": "24h"})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


def _wait_all(client: httpx.Client, batch_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Poll the list endpoint (one request per page, not one per batch) until every batch has ended."""
    deadline = time.monotonic() + timeout
    pending = set(batch_ids)
    ended: dict[str, dict[str, Any]] = {}
    while pending:
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100}
            if after:
                params["after"] = after
            page = client.get("/batches", params=params).json()
            for batch in page["data"]:
                if batch["id"] in pending and batch["status"] in ("completed", "failed", "cancelled", "expired"):
                    pending.discard(batch["id"])
                    ended[batch["id"]] = batch
            if not page.get("has_more"):
                break
            after = page["data"][-1]["id"]
        if pending and time.monotonic() > deadline:
            raise AssertionError(f"{len(pending)} of {len(batch_ids)} batches still unfinished after {timeout}s")
        time.sleep(2.0)
    return ended


def _create_all(clients: list[httpx.Client], per_workspace: int, lines: int) -> dict[int, list[str]]:
    """Create the batches at once (eight at a time), as a script submitting a backlog would."""
    files = [_upload(client, [chat_line(f"w{w}-{i}", "hi", model="mock/slow") for i in range(lines)])
             for w, client in enumerate(clients)]
    with ThreadPoolExecutor(8) as pool:
        futures = {w: [pool.submit(_create, client, files[w]) for _ in range(per_workspace)]
                   for w, client in enumerate(clients)}
        return {w: [f.result() for f in fs] for w, fs in futures.items()}


def _run(clients: list[httpx.Client], late: httpx.Client, batch_ids: dict[int, list[str]], lines: int) -> None:
    # A late, one-line batch of another workspace: it must not wait behind the thousand.
    late_file = _upload(late, [chat_line("late", "urgent", model="mock/echo")])
    started = time.monotonic()
    late_id = _create(late, late_file)
    done = wait_for_batch(late, late_id, timeout=60)
    late_seconds = time.monotonic() - started
    assert done["status"] == "completed", done
    assert done["request_counts"].items() >= {"total": 1, "completed": 1, "failed": 0}.items(), done
    assert late_seconds < 10, f"the late one-line batch took {late_seconds:.1f}s"
    for w, client in enumerate(clients):
        ended = _wait_all(client, batch_ids[w], timeout=240)
        assert {b["status"] for b in ended.values()} == {"completed"}, w
        assert all(b["request_counts"]["completed"] == lines for b in ended.values())
    # Spot-check one output file per workspace: every custom_id exactly once.
    for w, client in enumerate(clients):
        batch = client.get(f"/batches/{batch_ids[w][-1]}").json()
        out = [json.loads(x) for x in client.get(f"/files/{batch['output_file_id']}/content").text.splitlines()]
        assert sorted(row["custom_id"] for row in out) == sorted(f"w{w}-{i}" for i in range(lines))


@pytest.mark.slow
def test_a_thousand_small_batches_all_finish_and_a_late_one_is_not_stuck(tmp_path: Path) -> None:
    # Created on an API-only process, the thousand batches are all waiting when the executor starts, with no
    # lane busy yet: the state in which the old share rule leased nothing at all, ever.
    gw = Gateway(tmp_path / "gw", config=CONFIG, args=("--no-worker",))
    try:
        keys = [gw.new_key(f"ws-{w}") for w in range(4)]
        clients = [gw.client(key) for key in keys]
        batch_ids = _create_all(clients[:3], per_workspace=334, lines=2)
        gw.stop()
        gw = Gateway(tmp_path / "gw", config=CONFIG, port=gw.port)
        _run(clients[:3], clients[3], batch_ids, lines=2)
        for client in clients:
            client.close()
    finally:
        gw.stop()


@pytest.mark.slow
@pytest.mark.skipif(not backends.pg_available(), reason="no PostgreSQL server at 127.0.0.1:5432")
def test_many_batches_on_postgresql_with_a_worker(tmp_path: Path) -> None:
    from tests.scale.cluster import Cluster

    # The worker starts once every batch is created: none of them is running when it looks.
    cluster = Cluster(tmp_path, workers=0, config=CONFIG, redis=backends.redis_available())
    try:
        keys = [cluster.new_key(f"ws-{w}") for w in range(4)]
        clients = [httpx.Client(base_url=cluster.apis[0].base_url, timeout=60,
                                headers={"Authorization": f"Bearer {key}"}) for key in keys]
        batch_ids = _create_all(clients[:3], per_workspace=100, lines=5)
        cluster.workers.append(cluster.start_worker(0).wait_ready())
        _run(clients[:3], clients[3], batch_ids, lines=5)
        for client in clients:
            client.close()
    finally:
        cluster.close()
