"""The project's own client SDK (`aistats`), sync and async, against the running gateway."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from aistats import AIStats, AsyncAIStats, Batch, NotFoundError
from tests.harness import Gateway, chat_line, jsonl


def test_sync_client_round_trip(gateway: Gateway, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl([chat_line(f"c{i}", f"q{i}") for i in range(20)]))
    with AIStats(api_key=gateway.api_key, base_url=gateway.base_url) as client:
        f = client.upload_file(purpose="batch", file=str(path))
        assert f.id == f["id"] and f.filename == "in.jsonl"
        batch = client.create_batch({"endpoint": "/v1/chat/completions",
                                     "input_file_id": f.id, "completion_window": "24h"},
                                    session_id="agent-run-42", metadata={"who": "sdk"})
        assert isinstance(batch, Batch) and batch.session_id == "agent-run-42"
        deadline = time.monotonic() + 30
        while batch.status != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
            batch = client.batches.get(batch.id)
        content = client.files.content(batch.output_file_id)
        assert sorted(json.loads(x)["custom_id"] for x in content.splitlines()) == sorted(f"c{i}" for i in range(20))
        assert batch.id in [b.id for b in client.list_batches(limit=100).data]
        url = client.get_async_job_websocket_url("batch", batch.id, interval_ms=1500, close_on_terminal=True)
        assert url == (gateway.base_url.replace("http://", "ws://")
                       + f"/async/batch/{batch.id}/ws?interval_ms=1500&close_on_terminal=true")
        assert client.batches.websocket_url(batch.id) == gateway.base_url.replace("http://", "ws://") + \
            f"/async/batch/{batch.id}/ws"
        assert gateway.api_key not in url
        with pytest.raises(ValueError):
            client.batches.websocket_url(" ")
        with pytest.raises(NotFoundError) as err:
            client.get_batch("batch_missing")
        assert err.value.code == "batch_not_found_or_not_owned" and err.value.status_code == 404


def test_async_client_cancel(gateway: Gateway) -> None:
    async def main() -> None:
        async with AsyncAIStats(api_key=gateway.api_key, base_url=gateway.base_url) as client:
            f = await client.files.create(file=jsonl([chat_line(f"s{i}", "x", model="mock/slow") for i in range(300)]))
            batch = await client.batches.create(endpoint="/v1/chat/completions", input_file_id=f.id)
            cancelling = await client.cancel_batch(batch.id)
            assert cancelling.status in ("cancelling", "cancelled")
            for _ in range(400):
                batch = await client.get_batch(batch.id)
                if batch.status == "cancelled":
                    break
                await asyncio.sleep(0.05)
            assert batch.status == "cancelled"
            counts = batch.request_counts
            assert counts.completed + counts.failed == counts.total

    asyncio.run(main())
