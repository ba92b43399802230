"""`aistats migrate --from-sqlite`: a stopped single-machine gateway (SQLite + local blobs) moves into an
empty PostgreSQL database and S3 bucket, and a process on those serves the same batches, files and
keys — byte for byte — and finishes a batch the old one had half done (its items point into an input file
its owner already deleted: the copy keeps that blob, the new process reads the bodies from S3 and removes it
once the batch is over).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests import backends
from tests.harness import Gateway, Proc, chat_line, free_port, jsonl, wait_for_batch

pytestmark = pytest.mark.skipif(not backends.pg_available(), reason=backends.PG_SKIP)
CLI = [sys.executable, "-m", "aistats_gateway.cli.main"]


def test_a_sqlite_gateway_moves_to_postgresql_and_s3(tmp_path: Path) -> None:
    data = tmp_path / "old"
    old = Gateway(data, config="[executor]\nconcurrency = 1\n[mock]\nslow_latency_ms = 150\n")
    try:
        api = old.client()
        file_id = api.post("/files", files={"file": ("in.jsonl", jsonl([chat_line(f"c{i}", f"hi {i}")
                                                                        for i in range(50)]))},
                           data={"purpose": "batch"}).json()["id"]
        batch = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                           "metadata": {"team": "ml"}}).json()
        before = wait_for_batch(api, batch["id"])
        output_before = api.get(f"/files/{before['output_file_id']}/content").content
        slow_rows = [chat_line(f"s{i}", f"slow {i} ✓", model="mock/slow") for i in range(20)]
        slow_file = api.post("/files", files={"file": ("slow.jsonl", jsonl(slow_rows))},
                             data={"purpose": "batch"}).json()["id"]
        half = api.post("/batches", json={"input_file_id": slow_file, "endpoint": "/v1/chat/completions"}).json()
        wait_for_batch(api, half["id"], until=("in_progress",))
        assert api.delete(f"/files/{slow_file}").json()["deleted"] is True  # its blob stays: the batch reads it
        time.sleep(0.4)
        assert api.get(f"/batches/{half['id']}").json()["request_counts"]["completed"] < 15
    finally:
        old.stop()  # graceful: the line on the wire finishes, the leased ones are handed back

    s3 = backends.S3Server(tmp_path / "moto.log")
    try:
        import boto3

        boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1", aws_access_key_id=s3.ACCESS_KEY,
                     aws_secret_access_key=s3.SECRET_KEY).create_bucket(Bucket="moved")
        with backends.pg_database() as db_url:
            env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AISTATS_", "OPENAI_", "AWS_"))},
                   **s3.env("moved", "gw"), "AISTATS_DATABASE_URL": db_url, "AISTATS_DATA_DIR": str(tmp_path / "new")}
            moved = subprocess.run([*CLI, "migrate", "--from-sqlite", str(data / "gateway.db")], env=env,
                                   capture_output=True, text=True, timeout=120)
            assert moved.returncode == 0, moved.stderr
            assert "batches: 2 row(s)" in moved.stdout and "items: 70 row(s)" in moved.stdout
            assert "files: 3 row(s)" in moved.stdout and "and 3 blob(s)" in moved.stdout  # the deleted input too
            # a second copy into the now non-empty database is refused, with the reason
            again = subprocess.run([*CLI, "migrate", "--from-sqlite", str(data / "gateway.db")], env=env,
                                   capture_output=True, text=True, timeout=120)
            assert again.returncode == 2 and "already has 1 workspace" in again.stderr
            port = free_port()
            new = Proc([*CLI, "serve", "--log-level", "warning"], {**env, "AISTATS_PORT": str(port)},
                       tmp_path / "new.log", f"http://127.0.0.1:{port}/v1/health")
            try:
                client = httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=30,
                                      headers={"Authorization": f"Bearer {old.api_key}"})  # the key moved too
                after = client.get(f"/batches/{batch['id']}").json()
                for field in ("status", "request_counts", "output_file_id", "metadata", "completed_at"):
                    assert after[field] == before[field], field
                assert client.get(f"/files/{before['output_file_id']}/content").content == output_before
                assert client.get(f"/files/{file_id}").json()["bytes"] == before_bytes(api_file=file_id, data=data)
                # the half-done batch finishes here, every line's body read back from the copied (deleted) input
                finished = wait_for_batch(client, half["id"], timeout=60)
                assert finished["status"] == "completed" and finished["request_counts"]["completed"] == 20, finished
                out = {x["custom_id"]: x["response"]["body"]["choices"][0]["message"]["content"]
                       for x in map(json.loads, client.get(f"/files/{finished['output_file_id']}/content")
                                    .text.splitlines())}
                assert out == {r["custom_id"]: "echo: " + r["body"]["messages"][0]["content"] for r in slow_rows}
                assert client.get(f"/files/{slow_file}").status_code == 404
                deadline = time.monotonic() + 15  # the input blob goes once its last batch is over
                while s3_keys(s3, "moved", "gw/files/") != {f"gw/files/{file_id}"}:
                    assert time.monotonic() < deadline, s3_keys(s3, "moved", "gw/files/")
                    time.sleep(0.1)
            finally:
                new.stop()
    finally:
        s3.stop()


def s3_keys(s3: backends.S3Server, bucket: str, prefix: str) -> set[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1", aws_access_key_id=s3.ACCESS_KEY,
                          aws_secret_access_key=s3.SECRET_KEY)
    return {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}


def before_bytes(api_file: str, data: Path) -> int:
    import sqlite3

    with sqlite3.connect(data / "gateway.db") as conn:
        return int(conn.execute("SELECT bytes FROM files WHERE id = ?", (api_file,)).fetchone()[0])
