"""Files (storage/files.py) on SQLite and PostgreSQL: a deleted input file stays for its running batch.
"""

from __future__ import annotations

import pytest

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.errors import NotFound
from aistats_gateway.storage.store import Store
from tests.storage.support import run, seed


def test_an_input_file_deleted_while_its_batch_runs_stays_until_the_batch_ends(db_url: str) -> None:
    async def body(store: Store) -> None:
        await seed(store, lines=1)  # batch_1 (in_progress) reads file-batch_1
        record, blob_free = await store.files.delete("ws_a", "file-batch_1") or (None, None)
        assert record is not None and record.id == "file-batch_1" and blob_free is False
        # gone for the API (get, list, delete again, new batches), still there for its batch
        assert await store.files.get("ws_a", "file-batch_1") is None
        assert (await store.files.page("ws_a", after=None, limit=10, purpose=None, ascending=True))[0] == []
        assert await store.files.delete("ws_a", "file-batch_1") is None
        with pytest.raises(NotFound):
            await store.batches.insert({
                "id": "batch_2", "workspace_id": "ws_a", "request_id": "G-3", "endpoint": "/v1/chat/completions",
                "endpoint_input": "/v1/chat/completions", "status": "validating", "input_file_id": "file-batch_1",
                "completion_window": "24h", "created_at": 1, "expires_at": 10**10, "total": 0, "completed": 0,
                "failed": 0, "input_tokens": 0, "output_tokens": 0, "updated_at": 1.0})
        kept = await store.files.get("ws_a", "file-batch_1", include_deleted=True)
        assert kept is not None and kept.status == "deleted"
        assert await store.files.input_blob_key("batch_1") == "files/batch_1"
        assert await store.files.purgeable() == []  # its batch is still running
        await store.items.fail_unfinished("batch_1", "batch_cancelled", 3.0)
        await store.batches.transition("batch_1", BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, 3.0)
        assert await store.files.purgeable() == []  # cancelling is not over yet
        await store.batches.publish_results("batch_1", BatchStatus.CANCELLING, BatchStatus.CANCELLED, 4.0, [])
        assert [f.id for f in await store.files.purgeable()] == ["file-batch_1"]
        await store.files.forget("file-batch_1")
        assert await store.files.get("ws_a", "file-batch_1", include_deleted=True) is None
        # a file no unfinished batch reads goes at once
        await seed(store, "batch_3", lines=1)
        await store.items.fail_unfinished("batch_3", "batch_cancelled", 5.0)
        await store.batches.transition("batch_3", BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, 5.0)
        await store.batches.publish_results("batch_3", BatchStatus.CANCELLING, BatchStatus.CANCELLED, 6.0, [])
        assert (await store.files.delete("ws_a", "file-batch_3") or (None, None))[1] is True
        assert await store.files.get("ws_a", "file-batch_3", include_deleted=True) is None

    run(db_url, body)
