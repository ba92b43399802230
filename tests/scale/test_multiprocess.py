"""The scaled-out gateway as real processes: one API process (`serve --no-worker`) and three `aistats
worker`s on PostgreSQL + Redis + an S3-compatible server, one 20,000-line batch against the rate-limited
upstream. One worker is SIGKILLed mid-way; the others reclaim its leases (lease expiry + heartbeats) and
finish the batch; the durability checker's invariants hold (every line exactly once across the output and
error files, counts match, no line accepted upstream twice unless the killed worker held it), the
upstream's per-second accept log never exceeds the limit, and a WebSocket subscriber on the API process
sees the workers' progress. A second test: a cancel on the API process reaches the workers through Redis
at once (their database sweep is set far too slow to explain it).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import backends
from tests.durability.test_crash_harness import Tracked, check_batch, make_lines
from tests.harness import jsonl, wait_for_batch
from tests.scale.cluster import API_KEY, Cluster

pytestmark = [
    pytest.mark.skipif(not backends.pg_available(), reason=backends.PG_SKIP),
    pytest.mark.skipif(not backends.redis_available(), reason=backends.REDIS_SKIP),
]

LINES = 20_000
RPM = 60_000  # the upstream accepts 1,000 requests in any rolling second
LEASE = 10.0
CONFIG = f"""
[executor]
concurrency = 32
lease_seconds = {LEASE}
expiry_check_seconds = 1
pacing_burst_seconds = 0  # the test upstream counts a strict rolling second: no burst on top of the rate

[[providers]]
name = "openai"
kind = "openai"
base_url = "{{upstream}}"
api_key = "sk-up"
models = ["*"]
rpm = {RPM}  # shared by the three workers through Redis
"""


class Watcher(threading.Thread):
    """A WebSocket subscriber on the API process, collecting every frame of one batch's stream."""

    def __init__(self, base_url: str, batch_id: str) -> None:
        super().__init__(daemon=True)
        self.url = base_url.replace("http://", "ws://") + f"/async/batch/{batch_id}/ws?interval_ms=1000"
        self.frames: list[dict[str, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        import websockets

        async def listen() -> None:
            async with websockets.connect(self.url, additional_headers={"Authorization": f"Bearer {API_KEY}"},
                                          open_timeout=30, max_size=None) as ws:
                async for message in ws:
                    self.frames.append(json.loads(message))

        try:
            asyncio.run(asyncio.wait_for(listen(), 150))
        except BaseException as exc:
            self.error = exc


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, workers=3, rpm=RPM, config=CONFIG)
    yield c
    c.close()


def create_batch(api: Any, lines: list[dict[str, Any]]) -> str:
    file_id = api.post("/files", files={"file": ("big.jsonl", jsonl(lines))}, data={"purpose": "batch"}).json()["id"]
    batch = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                       "completion_window": "24h"}).json()
    return str(batch["id"])


def test_three_workers_share_one_batch_and_survive_a_sigkill(cluster: Cluster) -> None:
    started = time.monotonic()
    api = cluster.client()
    lines = make_lines("mp", LINES)
    batch_id = create_batch(api, lines)
    watcher = Watcher(cluster.apis[0].base_url, batch_id)
    watcher.start()

    # mid-way: SIGKILL one worker; the lines it held are the only ones that may reach the upstream twice
    while True:
        batch = api.get(f"/batches/{batch_id}").json()
        done = batch["request_counts"]["completed"] + batch["request_counts"]["failed"]
        if done >= LINES * 0.3:
            break
        assert batch["status"] in ("validating", "in_progress"), batch
        assert time.monotonic() - started < 60, f"no progress: {batch}"
        time.sleep(0.1)
    victim = cluster.workers[0]
    before = {w.port: w.metric("aistats_batch_lines_total") for w in cluster.workers[1:]}
    cluster.kill(victim)
    held = [r["custom_id"] for r in cluster.sql(
        "SELECT custom_id FROM items WHERE batch_id = $1 AND status = 1 AND lease_owner LIKE 'w0:%'", batch_id)]
    killed_at = time.monotonic()

    final = wait_for_batch(api, batch_id, timeout=100)
    finished = time.monotonic()
    assert final["status"] == "completed", final
    accepts = cluster.accepts()
    tracked = Tracked(batch_id, [line["custom_id"] for line in lines], in_flight_kills=dict.fromkeys(held, 1))
    check_batch(api, tracked, accepts["by_key"])  # every line once; accepted upstream once (twice if held)
    assert final["request_counts"].items() >= {"total": LINES, "completed": LINES, "failed": 0}.items()

    # the upstream never accepted more than its limit in any second
    per_second = {int(k): v for k, v in accepts["per_second"].items()}
    assert max(per_second.values()) <= RPM // 60, sorted(per_second.items())
    # the survivors did the rest, and reclaimed the dead worker's leases
    after = {w.port: w.metric("aistats_batch_lines_total") for w in cluster.workers[1:]}
    assert all(after[port] > before[port] for port in after), (before, after)
    assert cluster.sql("SELECT count(*) AS n FROM items WHERE batch_id = $1 AND status IN (0, 1)",
                       batch_id)[0]["n"] == 0
    resent = sum(1 for cid in held if accepts["by_key"].get(cid, 0) > 1)

    # a WebSocket subscriber on the API process saw the workers' commits, up to the terminal state
    watcher.join(30)
    assert watcher.error is None, watcher.error
    kinds = [f["type"] for f in watcher.frames]
    assert kinds[0] == "job.snapshot" and kinds[-1] == "job.updated", kinds
    progress = [f["data"]["request_counts"]["completed"] for f in watcher.frames if f["type"] == "job.updated"]
    assert len(progress) >= 3 and progress == sorted(progress), progress
    assert watcher.frames[-1]["data"]["status"] == "completed"

    throttled = cluster.upstream.stats().get("throttled", 0) if cluster.upstream else 0
    print(f"\nmulti-process: {LINES} lines, 3 workers (one SIGKILLed at {LINES * 0.3:.0f}+ lines, holding {len(held)} "
          f"leases, {resent} re-sent), {finished - started:.1f}s to completed ({finished - killed_at:.1f}s after "
          f"the kill); peak {max(per_second.values())}/s accepted (limit {RPM // 60}); 429s {throttled}; "
          f"{len(progress)} stream updates")
    assert finished - started < 110
    # The three workers pace against one shared budget in Redis: the upstream refuses (almost) nothing.
    # (Each pacing alone at the full limit, they drew ~4,000 429s per run.)
    assert throttled <= LINES * 0.005, throttled


def test_a_cancel_on_the_api_process_reaches_the_workers_through_redis(tmp_path: Path) -> None:
    # the workers' database sweep runs only every 60 s: only the Redis cancel signal can stop them in time
    config = "[executor]\nconcurrency = 16\nexpiry_check_seconds = 60\n"
    cluster = Cluster(tmp_path, workers=2, latency_ms=200, config=config)
    try:
        api = cluster.client()
        lines = make_lines("cx", 3000)  # 3000 lines × 200 ms / 32 slots ≈ 19 s of work
        batch_id = create_batch(api, lines)
        wait_for_batch(api, batch_id, timeout=30, until=("in_progress",))
        while api.get(f"/batches/{batch_id}").json()["request_counts"]["completed"] < 100:
            time.sleep(0.05)
        assert api.post(f"/batches/{batch_id}/cancel").json()["status"] == "cancelling"
        cancelled_at = time.monotonic()
        final = wait_for_batch(api, batch_id, timeout=20)
        took = time.monotonic() - cancelled_at
        assert final["status"] == "cancelled", final
        counts = final["request_counts"]
        assert counts["total"] == 3000 and counts["completed"] + counts["failed"] == 3000
        assert 100 <= counts["completed"] < 2000, counts
        assert took < 10, f"the cancel took {took:.1f}s to reach the workers"
        # every line exactly once across the two files; what was not sent is a batch_cancelled error line
        error_lines = api.get(f"/files/{final['error_file_id']}/content").text.splitlines()
        output = api.get(f"/files/{final['output_file_id']}/content").text.splitlines()
        ids = [json.loads(raw)["custom_id"] for raw in output + error_lines]
        assert sorted(ids) == sorted(line["custom_id"] for line in lines)
        assert all(json.loads(raw)["error"]["code"] == "batch_cancelled" for raw in error_lines)
    finally:
        cluster.close()
