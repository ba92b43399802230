"""Run Alembic migrations to head on an (async) engine; called at every start.

Alembic is driven programmatically (no alembic.ini): the script location is this package's
`migrations` folder, so an installed wheel migrates the same way a checkout does. The same history
runs on SQLite and PostgreSQL; on PostgreSQL an advisory lock makes processes that start together
(an API process and its workers) migrate one after another instead of racing.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from aistats_gateway.storage.dialects import lock_migrations

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def upgrade_to_head(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await lock_migrations(conn)
        await conn.run_sync(_upgrade)
