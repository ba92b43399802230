"""Blobs on S3-compatible object storage (AWS S3, MinIO, Ceph, R2, …) behind the BlobStore protocol.

Owns: the one aiobotocore client of a process, key naming under `s3://bucket/prefix`, streaming
multipart upload, and streamed (optionally ranged) reads. Atomic publish comes from S3 itself: an
object becomes visible only when its single PUT or its CompleteMultipartUpload succeeds, so readers
never see a torn file; `abort()` aborts the multipart upload (no orphaned parts), and a writer that dies
before committing leaves at most an incomplete upload for the bucket's lifecycle rule to clear.

Memory stays flat whatever the file size: a writer buffers one part (`part_size` bytes, default 8 MiB);
a blob smaller than one part goes up with one PutObject. Never imported unless `blob_url` is s3://.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError

from aistats_gateway.config import S3Config


def parse_blob_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` → ("bucket", "some/prefix/"); the prefix may be empty."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class S3BlobWriter:
    def __init__(self, store: S3BlobStore, key: str) -> None:
        self._store = store
        self._key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._size = 0
        self._closed = False

    async def write(self, data: bytes) -> None:
        assert not self._closed, "writer already closed"
        self._buffer += data
        self._size += len(data)
        while len(self._buffer) >= self._store.part_size:
            part = bytes(self._buffer[: self._store.part_size])
            del self._buffer[: self._store.part_size]
            await self._upload_part(part)

    async def _upload_part(self, part: bytes) -> None:
        client = self._store.client
        if self._upload_id is None:
            created = await client.create_multipart_upload(Bucket=self._store.bucket, Key=self._key)
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        answer = await client.upload_part(Bucket=self._store.bucket, Key=self._key, UploadId=self._upload_id,
                                          PartNumber=number, Body=part)
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    async def commit(self) -> int:
        assert not self._closed, "writer already closed"
        self._closed = True
        client = self._store.client
        try:
            if self._upload_id is None:
                await client.put_object(Bucket=self._store.bucket, Key=self._key, Body=bytes(self._buffer))
            else:
                if self._buffer or not self._parts:
                    await self._upload_part(bytes(self._buffer))
                await client.complete_multipart_upload(Bucket=self._store.bucket, Key=self._key,
                                                       UploadId=self._upload_id,
                                                       MultipartUpload={"Parts": self._parts})
        except BaseException:
            await self._abort_upload()
            raise
        self._buffer = bytearray()
        return self._size

    async def abort(self) -> None:
        self._closed = True
        self._buffer = bytearray()
        await self._abort_upload()

    async def _abort_upload(self) -> None:
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            with contextlib.suppress(Exception):  # best effort: a lifecycle rule clears what is left
                await self._store.client.abort_multipart_upload(Bucket=self._store.bucket, Key=self._key,
                                                                UploadId=upload_id)


class S3BlobStore:
    """Open with `await S3BlobStore.open(url, cfg)`; `close()` releases the client's connections."""

    def __init__(self, client: Any, bucket: str, prefix: str, part_size: int, stack: contextlib.AsyncExitStack) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self._stack = stack

    @classmethod
    async def open(cls, url: str, cfg: S3Config, *, max_connections: int = 32) -> S3BlobStore:
        bucket, prefix = parse_blob_url(url)
        stack = contextlib.AsyncExitStack()
        config = Config(max_pool_connections=max_connections, s3={"addressing_style": cfg.addressing_style},
                        retries={"max_attempts": 5, "mode": "standard"})
        client = await stack.enter_async_context(get_session().create_client(
            "s3", region_name=cfg.region, endpoint_url=cfg.endpoint_url, aws_access_key_id=cfg.access_key_id,
            aws_secret_access_key=cfg.secret_access_key, config=config))
        return cls(client, bucket, prefix, cfg.part_size_bytes, stack)

    async def close(self) -> None:
        await self._stack.aclose()

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def writer(self, key: str) -> S3BlobWriter:
        return S3BlobWriter(self, self._key(key))

    async def read(self, key: str, chunk_size: int = 256 * 1024, *, offset: int = 0,
                   length: int | None = None) -> AsyncIterator[bytes]:
        """Stream the blob (or `length` bytes from `offset`, as one ranged GET) in chunks of `chunk_size`."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if offset or length is not None:
            if length == 0:
                return
            kwargs["Range"] = f"bytes={offset}-" + (str(offset + length - 1) if length is not None else "")
        answer = await self.client.get_object(**kwargs)
        body = answer["Body"]
        try:
            while chunk := await body.read(chunk_size):
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        await self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    async def exists(self, key: str) -> bool:
        try:
            await self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    async def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (tests and first starts against MinIO/moto)."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            await self.client.create_bucket(Bucket=self.bucket)
