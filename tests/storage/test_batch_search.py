"""The batch list's search (issue 18, item 7) on SQLite and PostgreSQL: id prefix, a metadata value (exactly,
whatever its key; batches without metadata or with JSON null never match), session prefix."""

from __future__ import annotations

from aistats_gateway.storage.batches import BatchSearch
from aistats_gateway.storage.records import FileRecord
from aistats_gateway.storage.store import Store
from tests.storage.support import run


async def _batch(store: Store, batch_id: str, metadata: dict[str, str] | None, session: str | None) -> None:
    await store.batches.insert({
        "id": batch_id, "workspace_id": "ws_a", "request_id": "G-1", "endpoint": "/v1/chat/completions",
        "endpoint_input": "/v1/chat/completions", "status": "validating", "input_file_id": "file-1",
        "completion_window": "24h", "created_at": 1, "expires_at": 10**10, "total": 0, "completed": 0,
        "failed": 0, "input_tokens": 0, "output_tokens": 0, "updated_at": 1.0, "metadata": metadata,
        "session_id": session,
    })


def test_search(db_url: str) -> None:
    async def body(store: Store) -> None:
        await store.workspaces.ensure("ws_a", "ws_a")
        await store.files.insert(FileRecord("file-1", "ws_a", "in.jsonl", "batch", 1, "processed", "k", 1, None))
        await _batch(store, "batch_01A", {"team": "ml", "run": "7"}, "agent-run-1")
        await _batch(store, "batch_01B", {"owner": "ml"}, "agent-run-2")
        await _batch(store, "batch_02C", None, "other")
        await _batch(store, "batch_02D", {"team": "web"}, None)

        async def ids(search: BatchSearch) -> list[str]:
            records, _more = await store.batches.page("ws_a", after=None, limit=10, status=None, search=search)
            return [r.id for r in records]

        assert await ids(BatchSearch(id_prefix="batch_01")) == ["batch_01B", "batch_01A"]
        assert await ids(BatchSearch(id_prefix="batch_0%")) == []  # literal, never a wildcard
        assert await ids(BatchSearch(metadata_value="ml")) == ["batch_01B", "batch_01A"]
        assert await ids(BatchSearch(metadata_value="team")) == []  # keys are not values
        assert await ids(BatchSearch(session_prefix="agent-run")) == ["batch_01B", "batch_01A"]
        assert await ids(BatchSearch(session_prefix="AGENT")) == []  # exact case
        assert await ids(BatchSearch(metadata_value="web", session_prefix="a")) == []
        assert await ids(BatchSearch()) == ["batch_02D", "batch_02C", "batch_01B", "batch_01A"]

    run(db_url, body)
