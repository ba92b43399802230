"""The migrations on a real SQLite file and on PostgreSQL: they create exactly the declared schema,
and upgrading keeps what older rows hold.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from aistats_gateway.storage.migrate import upgrade_to_head
from aistats_gateway.storage.schema import metadata
from aistats_gateway.storage.store import Store, create_engine
from tests.storage.support import run


def test_migrations_create_exactly_the_declared_schema(db_url: str) -> None:
    async def diff(store: Store) -> list[Any]:
        async with store.engine.connect() as conn:
            return await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))

    assert run(db_url, diff) == []
    # and running them again is a no-op
    assert run(db_url, diff) == []


def test_upgrading_to_0007_keeps_the_bodies_of_existing_items(db_url: str) -> None:
    from alembic import command
    from sqlalchemy import text

    from aistats_gateway.storage.migrate import alembic_config

    async def main() -> None:
        engine = create_engine(db_url)
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0006_native"))
            await conn.execute(text("INSERT INTO workspaces (id, name, created_at) VALUES ('ws', 'ws', 1)"))
            await conn.execute(text(
                "INSERT INTO batches (id, workspace_id, request_id, endpoint, endpoint_input, status, input_file_id, "
                "completion_window, created_at, expires_at, total, completed, failed, input_tokens, output_tokens, "
                "updated_at) VALUES ('b1', 'ws', 'G', '/v1/chat/completions', 'x', 'in_progress', 'f1', '24h', 1, "
                "99999999999, 1, 0, 0, 0, 0, 1.0)"))
            await conn.execute(text(
                "INSERT INTO items (batch_id, line, custom_id, model, provider, body, status, attempts, input_tokens, "
                "output_tokens) VALUES ('b1', 1, 'c1', 'mock/echo', 'mock', :body, 0, 0, 0, 0)"),
                {"body": b'{"model":"mock/echo"}'})
        await upgrade_to_head(engine)
        store = Store(engine)
        try:
            leased = await store.items.lease("b1", "boot", 5, 100.0)
            assert [(i.custom_id, i.body, i.body_offset) for i in leased] == [("c1", b'{"model":"mock/echo"}', None)]
        finally:
            await store.close()

    asyncio.run(main())
