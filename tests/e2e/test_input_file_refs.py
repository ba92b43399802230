"""Items point into their input file: what reaches the upstream is exactly each line's body, read back from the
file (BOM, CRLF, blank lines, multibyte text, no final newline, keys in any order); and an input file deleted
while its batch validates or runs loses nothing — the API forgets it at once, its blob goes when the batch ends.
Real processes: the gateway and the recording upstream on loopback, a real SQLite file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.harness import Gateway, Upstream, wait_for_batch

ENDPOINT = "/v1/chat/completions"


def row(custom_id: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT,
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}],
                     "x_fault": {"key": custom_id}, **extra}}


def upload(api: httpx.Client, data: bytes) -> str:
    answer = api.post("/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def lines_of(api: httpx.Client, file_id: str | None) -> list[dict[str, Any]]:
    return [json.loads(x) for x in api.get(f"/files/{file_id}/content").text.splitlines()] if file_id else []


@pytest.fixture
def upstream(tmp_path: Path) -> Any:
    up = Upstream(tmp_path / "up.log", latency_ms=40)
    yield up
    up.stop()


def test_each_line_sends_exactly_its_own_body_read_back_from_the_file(tmp_path: Path, upstream: Upstream) -> None:
    gw = Gateway(tmp_path / "data", env={"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "k"},
                 config="[executor]\nconcurrency = 8\n")
    try:
        api = gw.client()
        rows = [row(f"r{i}", f"line {i} " + "ünïcødé ✓ 中文 𝄞 " * (i % 5) + "x" * (i * 37 % 3000),
                    **({"max_tokens": i % 50 + 1} if i % 3 else {})) for i in range(300)]
        pieces = []
        for i, r in enumerate(rows):
            # the same JSON in different spellings: spaces, key order, escapes; ends of line vary
            text = json.dumps(r, ensure_ascii=i % 2 == 0, indent=None, separators=(", ", ": ") if i % 4 else (",", ":"))
            if i % 5 == 0:
                text = json.dumps(dict(reversed(list(r.items()))))
            pieces.append(text.encode() + (b"\r\n" if i % 3 == 0 else b"\n") + (b"\n" if i % 7 == 0 else b""))
        data = b"\xef\xbb\xbf" + b"".join(pieces).rstrip(b"\r\n")  # BOM; the last line has no newline
        file_id = upload(api, data)
        done = wait_for_batch(api, api.post("/batches", json={"input_file_id": file_id, "endpoint": ENDPOINT}
                                            ).json()["id"], timeout=90)
        assert done["status"] == "completed" and done["request_counts"]["completed"] == len(rows), done
        sent = upstream.bodies()
        # byte for byte what ingest used to store: the line's body object, serialized compactly
        assert sent == {r["custom_id"]: orjson.dumps(r["body"]).decode() for r in rows}
        assert upstream.ledger() == {r["custom_id"]: 1 for r in rows}
        out = lines_of(api, done["output_file_id"])
        assert sorted(x["custom_id"] for x in out) == sorted(r["custom_id"] for r in rows)
        with sqlite3.connect(tmp_path / "data" / "gateway.db") as db:  # the rows hold no copy of the bodies
            assert db.execute("SELECT COUNT(*) FROM items WHERE body IS NOT NULL OR body_offset IS NULL").fetchone() \
                == (0,)
    finally:
        gw.stop()


def test_deleting_the_input_file_mid_batch_loses_no_line_and_frees_the_blob_after(tmp_path: Path,
                                                                                   upstream: Upstream) -> None:
    data_dir = tmp_path / "data"
    gw = Gateway(data_dir, env={"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "k"},
                 config="[executor]\nconcurrency = 2\nexpiry_check_seconds = 0.2\n")
    try:
        api = gw.client()
        running = [row(f"run-{i}", f"running {i}") for i in range(40)]
        validating = [row(f"val-{i}", f"validating {i} " + "w" * 200) for i in range(20_000)]
        run_file = upload(api, b"".join(orjson.dumps(r) + b"\n" for r in running))
        val_file = upload(api, b"".join(orjson.dumps(r) + b"\n" for r in validating))
        blob = {f: data_dir / "blobs" / "files" / f for f in (run_file, val_file)}
        # 40 lines, 2 at a time, 40 ms each: most lines are still pending (in the database, pointing into the
        # file) when their file is deleted
        first = api.post("/batches", json={"input_file_id": run_file, "endpoint": ENDPOINT}).json()
        deadline = time.monotonic() + 30
        while api.get(f"/batches/{first['id']}").json()["request_counts"]["completed"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        gone = api.delete(f"/files/{run_file}")
        assert gone.status_code == 200 and gone.json() == {"id": run_file, "object": "file", "deleted": True}
        # 20,000 lines take a while to validate: deleted right after create, most likely while still validating
        second = api.post("/batches", json={"input_file_id": val_file, "endpoint": ENDPOINT}).json()
        assert api.delete(f"/files/{val_file}").status_code == 200
        for file_id in (run_file, val_file):  # gone for the API at once
            assert api.get(f"/files/{file_id}").status_code == 404
            assert api.get(f"/files/{file_id}/content").status_code == 404
            assert api.delete(f"/files/{file_id}").status_code == 404
            assert file_id not in {f["id"] for f in api.get("/files").json()["data"]}
        assert api.post("/batches", json={"input_file_id": run_file, "endpoint": ENDPOINT}).status_code == 404
        assert blob[run_file].is_file()  # still read by its running batch
        mid = api.get(f"/batches/{first['id']}").json()
        assert mid["status"] == "in_progress" and mid["request_counts"]["completed"] < len(running), mid

        done = wait_for_batch(api, first["id"], timeout=60)
        assert done["status"] == "completed" and done["request_counts"].items() >= {
            "total": len(running), "completed": len(running), "failed": 0}.items(), done
        sent = upstream.bodies()
        assert all(sent[r["custom_id"]] == orjson.dumps(r["body"]).decode() for r in running)
        assert sorted(x["custom_id"] for x in lines_of(api, done["output_file_id"])) == sorted(
            r["custom_id"] for r in running)
        # the second batch: validated from the deleted file, then cancelled; every line accounted for
        assert wait_for_batch(api, second["id"], until=("in_progress", "failed"), timeout=60)["status"] == \
            "in_progress"
        api.post(f"/batches/{second['id']}/cancel")
        cancelled = wait_for_batch(api, second["id"], timeout=60)
        assert cancelled["status"] == "cancelled" and cancelled["request_counts"]["total"] == len(validating)
        assert sum(cancelled["request_counts"][k] for k in ("completed", "failed")) == len(validating)
        # once the batches are over, the blobs and rows go (after the finalizer, or the next sweep)
        deadline = time.monotonic() + 10
        while any(path.exists() for path in blob.values()):
            assert time.monotonic() < deadline, [p for p in blob.values() if p.exists()]
            time.sleep(0.05)
        with sqlite3.connect(data_dir / "gateway.db") as db:
            assert db.execute("SELECT COUNT(*) FROM files WHERE id IN (?, ?)", (run_file, val_file)).fetchone() == (0,)
    finally:
        gw.stop()
