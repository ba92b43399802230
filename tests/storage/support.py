"""What the storage tests share: a migrated Store over the test's database (`run`) and a seeded batch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.storage.migrate import upgrade_to_head
from aistats_gateway.storage.records import FileRecord
from aistats_gateway.storage.store import Store, create_engine

T = TypeVar("T")


def run(db_url: str, fn: Callable[[Store], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = create_engine(db_url)
        await upgrade_to_head(engine)
        store = Store(engine)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(main())


async def seed(store: Store, batch_id: str = "batch_1", lines: int = 10, workspace: str = "ws_a") -> None:
    await store.workspaces.ensure(workspace, workspace)
    await store.files.insert(FileRecord(f"file-{batch_id}", workspace, "in.jsonl", "batch", 1, "processed",
                                       f"files/{batch_id}", 1, None))
    await store.batches.insert({
        "id": batch_id, "workspace_id": workspace, "request_id": "G-1", "endpoint": "/v1/chat/completions",
        "endpoint_input": "/v1/chat/completions", "status": "validating", "input_file_id": f"file-{batch_id}",
        "completion_window": "24h", "created_at": 1, "expires_at": 10**10, "total": 0, "completed": 0,
        "failed": 0, "input_tokens": 0, "output_tokens": 0, "updated_at": 1.0,
    })
    await store.items.insert([
        {"batch_id": batch_id, "line": i, "custom_id": f"c{i}", "model": "mock/echo", "provider": "mock",
         "body": b"{}", "status": 0, "attempts": 0, "input_tokens": 0, "output_tokens": 0}
        for i in range(1, lines + 1)
    ])
    await store.batches.transition(batch_id, BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, 2.0, total=lines)
