"""The batch list renders every batch exactly as GET /v1/batches/{id} does — webhook delivery state (summary
and last ten attempts), pricing lines, billing — although it fetches those for the whole page in three
queries instead of two or three per batch."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import backends
from tests.harness import Gateway, Receiver, chat_line, wait_for_batch


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Environment for the gateway: its default SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield {}
        return
    if not backends.pg_available():
        pytest.skip(backends.PG_SKIP)
    with backends.pg_database() as url:
        yield {"AISTATS_DATABASE_URL": url}


def test_list_matches_each_batch(tmp_path: Path, database: dict[str, str]) -> None:
    ok = Receiver(tmp_path / "ok.log", secret="whsec_list")
    failing = Receiver(tmp_path / "bad.log", status=500)  # attempts that fail, and retries pending
    with contextlib.ExitStack() as stack:
        stack.callback(ok.stop)
        stack.callback(failing.stop)
        gw = Gateway(tmp_path / "data", config="[webhooks]\nallow_local = true\nretry_schedule_seconds = [60]\n",
                     env=database)
        stack.callback(gw.stop)
        check(gw, ok, failing)


def check(gw: Gateway, ok: Receiver, failing: Receiver) -> None:
    with gw.client() as client:
        ids: list[str] = []
        for i in range(12):
            body: dict[str, Any] = {"endpoint": "/v1/chat/completions",
                                    "requests": [chat_line(f"c{j}", f"hello {i} {j}", model="mock/echo")
                                                 for j in range(1 + i % 4)]}
            if i % 3 == 0:
                body["webhook"] = {"url": ok.url, "secret": "whsec_list",
                                   "events": ["batch.created", "batch.completed"]}
            elif i % 3 == 1:
                body["webhook"] = {"url": failing.url}
            created = client.post("/batches", json=body)
            assert created.status_code == 200, created.text
            ids.append(created.json()["id"])
        for batch_id in ids:
            wait_for_batch(client, batch_id)
        time.sleep(1.5)  # let the deliveries of the terminal events happen
        listed = client.get("/batches", params={"limit": 100}).json()["data"]
        singles = {batch_id: client.get(f"/batches/{batch_id}").json() for batch_id in ids}
    assert [b["id"] for b in listed] == list(reversed(ids))
    delivered = [b for b in listed if b["webhook"] and b["webhook"]["delivery"]["delivered_events"]]
    failed = [b for b in listed if b["webhook"] and b["webhook"]["delivery"]["pending_retries"]]
    assert delivered and failed and all(b["pricing_lines"] for b in listed)
    for batch in listed:
        single = singles[batch["id"]]
        for key in ("webhook", "pricing_lines", "billing", "request_counts", "status", "usage"):
            assert batch[key] == single[key], (batch["id"], key, batch[key], single[key])
