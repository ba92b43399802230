"""Backends for tests: throwaway PostgreSQL databases, Redis key prefixes, an S3-compatible server
process (moto's server mode, offline, on a free loopback port), and why a test skips without them.

PostgreSQL: 127.0.0.1:5432, user postgres, trust auth (override with AISTATS_TEST_PG, a
postgresql://USER@HOST:PORT base URL). Every test run gets its own `aistats_<random>` database (created
here, dropped after); the storage suite clones one migrated template per run so each test starts empty.
Redis: 127.0.0.1:6379 (AISTATS_TEST_REDIS), with a fresh key prefix per run and its keys deleted after.
Nothing here is mocked: a test that needs a server it cannot reach skips and says which and where.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from tests.harness import Proc, free_port

PG_BASE = os.environ.get("AISTATS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("AISTATS_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1.0):
            return True
    except OSError:
        return False


def pg_available() -> bool:
    return _reachable(PG_BASE, 5432)


def redis_available() -> bool:
    return _reachable(REDIS_URL, 6379)


PG_SKIP = f"no PostgreSQL server reachable at {PG_BASE} (set AISTATS_TEST_PG)"
REDIS_SKIP = f"no Redis server reachable at {REDIS_URL} (set AISTATS_TEST_REDIS)"


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{PG_BASE}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(template: str | None = None) -> str:
    """A new empty (or template-cloned) database; returns its postgresql:// URL."""
    name = f"aistats_{secrets.token_hex(6)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    return f"{PG_BASE}/{name}"


def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def pg_database(template: str | None = None) -> Iterator[str]:
    url = create_database(template)
    try:
        yield url
    finally:
        drop_database(url)


def redis_prefix() -> str:
    return f"aistats-test-{secrets.token_hex(4)}:"


def drop_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class S3Server(Proc):
    """moto in server mode: a real S3-compatible HTTP server process (it accepts any credentials)."""

    ACCESS_KEY = "test-access-key"
    SECRET_KEY = "test-secret-key"

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        super().__init__([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                         env, log, f"{self.endpoint_url}/moto-api/")

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The gateway settings that point at this server."""
        return {"AISTATS_BLOB_URL": f"s3://{bucket}/{prefix}".rstrip("/"), "AISTATS_S3_ENDPOINT_URL": self.endpoint_url,
                "AISTATS_S3_ACCESS_KEY_ID": self.ACCESS_KEY, "AISTATS_S3_SECRET_ACCESS_KEY": self.SECRET_KEY}
