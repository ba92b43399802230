"""`aistats migrate --from-sqlite`: a stopped single-machine gateway (SQLite + local blobs) moves into an
empty PostgreSQL database and S3 bucket, and an API process on those serves the same batches, files and
keys — byte for byte.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests import backends
from tests.harness import Gateway, Proc, chat_line, free_port, jsonl, wait_for_batch

pytestmark = pytest.mark.skipif(not backends.pg_available(), reason=backends.PG_SKIP)
CLI = [sys.executable, "-m", "aistats_gateway.cli.main"]


def test_a_sqlite_gateway_moves_to_postgresql_and_s3(tmp_path: Path) -> None:
    data = tmp_path / "old"
    old = Gateway(data)
    try:
        api = old.client()
        file_id = api.post("/files", files={"file": ("in.jsonl", jsonl([chat_line(f"c{i}", f"hi {i}")
                                                                        for i in range(50)]))},
                           data={"purpose": "batch"}).json()["id"]
        batch = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                           "metadata": {"team": "ml"}}).json()
        before = wait_for_batch(api, batch["id"])
        output_before = api.get(f"/files/{before['output_file_id']}/content").content
    finally:
        old.stop()

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
            assert "batches: 1 row(s)" in moved.stdout and "items: 50 row(s)" in moved.stdout
            # a second copy into the now non-empty database is refused, with the reason
            again = subprocess.run([*CLI, "migrate", "--from-sqlite", str(data / "gateway.db")], env=env,
                                   capture_output=True, text=True, timeout=120)
            assert again.returncode == 2 and "already has 1 workspace" in again.stderr
            port = free_port()
            new = Proc([*CLI, "serve", "--no-worker", "--log-level", "warning"], {**env, "AISTATS_PORT": str(port)},
                       tmp_path / "new.log", f"http://127.0.0.1:{port}/v1/health")
            try:
                client = httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=30,
                                      headers={"Authorization": f"Bearer {old.api_key}"})  # the key moved too
                after = client.get(f"/batches/{batch['id']}").json()
                for field in ("status", "request_counts", "output_file_id", "metadata", "completed_at"):
                    assert after[field] == before[field], field
                assert client.get(f"/files/{before['output_file_id']}/content").content == output_before
                assert client.get(f"/files/{file_id}").json()["bytes"] == before_bytes(api_file=file_id, data=data)
            finally:
                new.stop()
    finally:
        s3.stop()


def before_bytes(api_file: str, data: Path) -> int:
    import sqlite3

    with sqlite3.connect(data / "gateway.db") as conn:
        return int(conn.execute("SELECT bytes FROM files WHERE id = ?", (api_file,)).fetchone()[0])
