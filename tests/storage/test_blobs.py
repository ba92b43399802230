"""LocalBlobStore: atomic publish, abort leaves nothing, keys cannot escape the root."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aistats_gateway.storage.blobs import LocalBlobStore


def test_blob_is_invisible_until_commit_and_abort_leaves_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        blobs = LocalBlobStore(tmp_path)
        writer = blobs.writer("a/b.jsonl")
        await writer.write(b"x" * 10)
        assert not await blobs.exists("a/b.jsonl")
        assert await writer.commit() == 10
        assert b"".join([c async for c in blobs.read("a/b.jsonl", chunk_size=3)]) == b"x" * 10
        aborted = blobs.writer("a/c.jsonl")
        await aborted.write(b"y")
        await aborted.abort()
        assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.jsonl"]
        with pytest.raises(ValueError):
            blobs.writer("../escape")

    asyncio.run(body())


def test_abort_removes_the_temporary_even_when_closing_fails(tmp_path: Path) -> None:
    """On a full disk, closing the file flushes and fails again; the temporary must still go."""
    full = open("/dev/full", "wb")  # a real device: every flush fails with ENOSPC

    async def body() -> None:
        blobs = LocalBlobStore(tmp_path)
        writer = blobs.writer("x.jsonl")
        await writer.write(b"data")
        writer._fh = full
        await writer.write(b"more")
        await writer.abort()

    asyncio.run(body())
    assert list(tmp_path.iterdir()) == []
