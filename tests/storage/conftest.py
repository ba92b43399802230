"""The storage suite runs on a real SQLite file always and on PostgreSQL wherever a server is reachable.

`db_url` is parametrized: `sqlite` (a file in the test's tmp dir) and `postgresql` (a fresh database cloned
from one migrated template per test run, dropped after the test; skipped with the reason when no server).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import backends


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    if not backends.pg_available():
        pytest.skip(backends.PG_SKIP)
    from aistats_gateway.config import database_url_for_sqlalchemy
    from aistats_gateway.storage.migrate import upgrade_to_head
    from aistats_gateway.storage.store import create_engine

    url = backends.create_database()

    async def migrate() -> None:
        engine = create_engine(database_url_for_sqlalchemy(url))
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()

    asyncio.run(migrate())
    try:
        yield url.rsplit("/", 1)[1]
    finally:
        backends.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLAlchemy URL of an empty gateway database (migrated or not: the Store migrates at open)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
        return
    from aistats_gateway.config import database_url_for_sqlalchemy

    template = request.getfixturevalue("pg_template")
    with backends.pg_database(template) as url:
        yield database_url_for_sqlalchemy(url)
