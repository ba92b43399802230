"""Storage faults: the database locked by another process, and the disk full while writing output.
The gateway pauses (503 for writes it cannot do now, reads keep working), corrupts nothing, and resumes
when the fault clears; every line still lands exactly once."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import Gateway, chat_line, jsonl, wait_for_batch


def check_exactly_once(api: httpx.Client, batch: dict[str, object], custom_ids: list[str]) -> None:
    seen: list[str] = []
    for key in ("output_file_id", "error_file_id"):
        if batch[key]:
            seen += [json.loads(x)["custom_id"] for x in api.get(f"/files/{batch[key]}/content").text.splitlines()]
    assert sorted(seen) == sorted(custom_ids)


def test_database_locked_by_another_process(tmp_path: Path) -> None:
    config = "[storage]\nsqlite_busy_timeout_ms = 300\n[executor]\nconcurrency = 8\n[mock]\nslow_latency_ms = 20\n"
    gw = Gateway(tmp_path / "data", config=config)
    try:
        api = gw.client()
        rows = [chat_line(f"l{i}", "x", model="mock/slow") for i in range(600)]
        batch = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": rows}).json()
        deadline = time.monotonic() + 20
        while api.get(f"/batches/{batch['id']}").json()["request_counts"]["completed"] < 50:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        locker = sqlite3.connect(tmp_path / "data" / "gateway.db", isolation_level=None, timeout=10)
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            time.sleep(0.5)
            frozen = api.get(f"/batches/{batch['id']}")
            assert frozen.status_code == 200  # reads go on (WAL)
            before = frozen.json()["request_counts"]["completed"]
            refused = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": [chat_line("z", "x")]})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "storage_unavailable"
            time.sleep(2.0)
            assert api.get(f"/batches/{batch['id']}").json()["request_counts"]["completed"] == before  # paused
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        done = wait_for_batch(api, batch["id"], timeout=60)
        assert done["status"] == "completed" and (
            done["request_counts"].items() >= {"total": 600, "completed": 600, "failed": 0}.items())
        check_exactly_once(api, done, [r["custom_id"] for r in rows])
        with sqlite3.connect(tmp_path / "data" / "gateway.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        gw.stop()


def test_disk_full_while_writing_output(tmp_path: Path) -> None:
    blobs = tmp_path / "data" / "blobs"
    blobs.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(blobs)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.decode().strip()}")
    gw = None
    try:
        gw = Gateway(tmp_path / "data", config="[executor]\nconcurrency = 16\n")
        api = gw.client()
        rows = [chat_line(f"d{i}", "y" * 400) for i in range(2500)]  # ~3 MB of output
        file_id = api.post("/files", files={"file": ("d.jsonl", jsonl(rows))}, data={"purpose": "batch"}).json()["id"]
        filler = blobs / "filler"
        free = shutil.disk_usage(blobs).free
        filler.write_bytes(b"\0" * max(0, free - 200_000))  # leave ~200 KB: the output cannot fit
        batch = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}).json()
        deadline = time.monotonic() + 30
        while (current := api.get(f"/batches/{batch['id']}").json())["status"] != "finalizing":
            assert current["status"] in ("validating", "in_progress"), current
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(3)  # finalization keeps failing with ENOSPC and is retried
        stuck = api.get(f"/batches/{batch['id']}").json()
        assert stuck["status"] == "finalizing" and stuck["request_counts"]["completed"] == 2500
        assert len(list(blobs.rglob("*.tmp"))) <= 2, "failed attempts must not pile up partial files"
        filler.unlink()  # the disk has room again
        done = wait_for_batch(api, batch["id"], timeout=60)
        assert done["status"] == "completed"
        check_exactly_once(api, done, [r["custom_id"] for r in rows])
        assert list(blobs.rglob("*.tmp")) == [], "no partial output left behind"
    finally:
        if gw is not None:
            gw.stop()
        subprocess.run(["umount", "-l", str(blobs)], capture_output=True)
