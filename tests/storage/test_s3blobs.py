"""S3BlobStore against a real S3-compatible server process (moto's server mode on loopback):
invisible until commit, multipart for blobs larger than a part, abort leaves no object and no pending
upload, ranged and streamed reads, keys confined under the prefix, and the same behaviour as LocalBlobStore.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from aistats_gateway.config import S3Config, Settings
from aistats_gateway.storage.blobs import BlobStore, LocalBlobStore, open_blob_store
from aistats_gateway.storage.s3blobs import S3BlobStore, parse_blob_url
from tests.backends import S3Server

PART = 5 * 1024 * 1024  # S3's smallest part size


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log")
    yield server
    server.stop()


def cfg(server: S3Server) -> S3Config:
    return S3Config(endpoint_url=server.endpoint_url, access_key_id=server.ACCESS_KEY,
                    secret_access_key=server.SECRET_KEY, part_size_bytes=PART)


def with_s3(server: S3Server, fn: Callable[[S3BlobStore], Awaitable[None]], prefix: str = "gw/run") -> None:
    async def main() -> None:
        store = await S3BlobStore.open(f"s3://bucket-{secrets.token_hex(4)}/{prefix}", cfg(server))
        await store.ensure_bucket()
        try:
            await fn(store)
        finally:
            await store.close()

    asyncio.run(main())


def test_parse_blob_url() -> None:
    assert parse_blob_url("s3://b") == ("b", "")
    assert parse_blob_url("s3://b/p/q/") == ("b", "p/q/")
    with pytest.raises(ValueError):
        parse_blob_url("s3:///p")


def test_small_blob_is_one_put_and_invisible_until_commit(s3_server: S3Server) -> None:
    async def body(store: S3BlobStore) -> None:
        writer = store.writer("files/a.jsonl")
        await writer.write(b"hello ")
        await writer.write(b"world\n")
        assert not await store.exists("files/a.jsonl")
        assert await writer.commit() == 12
        assert await store.exists("files/a.jsonl")
        assert b"".join([c async for c in store.read("files/a.jsonl", chunk_size=4)]) == b"hello world\n"
        # stored under the prefix, nowhere else
        listed = await store.client.list_objects_v2(Bucket=store.bucket)
        assert [o["Key"] for o in listed["Contents"]] == ["gw/run/files/a.jsonl"]
        await store.delete("files/a.jsonl")
        assert not await store.exists("files/a.jsonl")

    with_s3(s3_server, body)


def test_large_blob_streams_up_in_parts_and_reads_back_ranged(s3_server: S3Server) -> None:
    data = b"".join(i.to_bytes(4, "big") for i in range(5 * PART // 8))  # 2.5 parts (12.5 MiB), no repeats

    async def body(store: S3BlobStore) -> None:
        writer = store.writer("batches/b1/output.jsonl")
        for start in range(0, len(data), 256 * 1024):
            await writer.write(data[start:start + 256 * 1024])
            assert len(writer._buffer) < PART  # memory stays at most one part
        assert writer._upload_id is not None and len(writer._parts) == 2  # two full parts already sent
        assert not await store.exists("batches/b1/output.jsonl")
        assert await writer.commit() == len(data)
        head = await store.client.head_object(Bucket=store.bucket, Key="gw/run/batches/b1/output.jsonl")
        assert head["ContentLength"] == len(data) and head["ETag"].strip('"').endswith("-3")  # a 3-part upload
        chunks = [c async for c in store.read("batches/b1/output.jsonl", chunk_size=1024 * 1024)]
        assert max(len(c) for c in chunks) <= 1024 * 1024 and b"".join(chunks) == data
        middle = b"".join([c async for c in store.read("batches/b1/output.jsonl", offset=PART - 3, length=10)])
        assert middle == data[PART - 3:PART + 7]
        tail = b"".join([c async for c in store.read("batches/b1/output.jsonl", offset=len(data) - 5)])
        assert tail == data[-5:]

    with_s3(s3_server, body)


def test_abort_leaves_no_object_and_no_pending_upload(s3_server: S3Server) -> None:
    async def body(store: S3BlobStore) -> None:
        writer = store.writer("files/big.jsonl")
        await writer.write(b"z" * (PART + 10))  # one part already uploaded
        await writer.abort()
        assert not await store.exists("files/big.jsonl")
        uploads = await store.client.list_multipart_uploads(Bucket=store.bucket)
        assert uploads.get("Uploads", []) == []
        with pytest.raises(ValueError):
            store.writer("../escape")
        with pytest.raises(ValueError):
            store.writer("a//b")

    with_s3(s3_server, body)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_both_blob_stores_behave_alike(kind: str, s3_server: S3Server, tmp_path: Path) -> None:
    """The BlobStore protocol as the services use it, on the store `open_blob_store` picks from settings."""
    env = {"AISTATS_DATA_DIR": str(tmp_path)}
    bucket = f"alike-{secrets.token_hex(4)}"
    if kind == "s3":
        env |= s3_server.env(bucket, "pre")

    async def main() -> None:
        settings = Settings.load(env)
        blobs: BlobStore = await open_blob_store(settings)
        assert isinstance(blobs, S3BlobStore if kind == "s3" else LocalBlobStore)
        if isinstance(blobs, S3BlobStore):
            await blobs.ensure_bucket()
        try:
            w = blobs.writer("x/y.jsonl")
            await w.write(b"0123456789")
            assert await w.commit() == 10
            assert b"".join([c async for c in blobs.read("x/y.jsonl", offset=2, length=5)]) == b"23456"
            assert b"".join([c async for c in blobs.read("x/y.jsonl", offset=8)]) == b"89"
            assert b"".join([c async for c in blobs.read("x/y.jsonl", offset=3, length=0)]) == b""
            aborted = blobs.writer("x/z.jsonl")
            await aborted.write(b"q")
            await aborted.abort()
            assert await blobs.exists("x/y.jsonl") and not await blobs.exists("x/z.jsonl")
            await blobs.delete("x/y.jsonl")
            assert not await blobs.exists("x/y.jsonl")
        finally:
            await blobs.close()

    asyncio.run(main())
