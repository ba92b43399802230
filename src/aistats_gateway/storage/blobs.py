"""File bytes behind the BlobStore protocol: uploads, batch inputs, output and error files.

A writer publishes atomically: bytes go to a temporary object and become visible under their key
only at `commit()` (write-to-temp + fsync + rename locally), so a reader never sees a torn file and
a crashed writer leaves only a temporary that the next write of the same key replaces.
`LocalBlobStore` keeps blobs under a directory; `s3blobs.S3BlobStore` on S3-compatible storage;
`open_blob_store(settings)` picks one from `blob_url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from aistats_gateway.config import Settings


class BlobWriter(Protocol):
    async def write(self, data: bytes) -> None: ...
    async def commit(self) -> int:
        """Publish the blob; returns its size in bytes."""
        ...
    async def abort(self) -> None: ...


class BlobStore(Protocol):
    def writer(self, key: str) -> BlobWriter: ...
    def read(self, key: str, chunk_size: int = 256 * 1024, *, offset: int = 0,
             length: int | None = None) -> AsyncIterator[bytes]:
        """Stream the blob, or `length` bytes of it from `offset` (a ranged read)."""
        ...
    async def delete(self, key: str) -> None: ...
    async def exists(self, key: str) -> bool: ...
    async def close(self) -> None: ...


async def open_blob_store(settings: Settings) -> BlobStore:
    """Local files under the data dir, or S3-compatible storage when `blob_url` is s3://bucket/prefix."""
    if settings.blob_url:
        from aistats_gateway.storage.s3blobs import S3BlobStore

        return await S3BlobStore.open(settings.blob_url, settings.s3,
                                      max_connections=max(32, settings.webhooks.max_concurrent_deliveries))
    return LocalBlobStore(settings.blob_dir)


class LocalBlobWriter:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] | None = self._tmp.open("wb")
        self._size = 0

    async def write(self, data: bytes) -> None:
        assert self._fh is not None, "writer already closed"
        self._fh.write(data)  # buffered: lands in the page cache, microseconds per chunk
        self._size += len(data)

    async def commit(self) -> int:
        fh, self._fh = self._fh, None
        assert fh is not None, "writer already closed"

        def _publish() -> None:
            try:
                fh.flush()
                os.fsync(fh.fileno())
            except BaseException:
                with contextlib.suppress(OSError):
                    fh.close()
                self._tmp.unlink(missing_ok=True)
                raise
            fh.close()
            os.replace(self._tmp, self._path)

        await asyncio.to_thread(_publish)
        return self._size

    async def abort(self) -> None:
        fh, self._fh = self._fh, None
        try:
            if fh is not None:
                fh.close()  # flushes the buffer: on a full disk this raises again
        except OSError:
            pass
        finally:
            self._tmp.unlink(missing_ok=True)


class LocalBlobStore:
    """Blobs as files under `root`; keys are relative paths of safe characters."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root.joinpath(*parts)

    def writer(self, key: str) -> LocalBlobWriter:
        return LocalBlobWriter(self._path(key))

    async def read(self, key: str, chunk_size: int = 256 * 1024, *, offset: int = 0,
                   length: int | None = None) -> AsyncIterator[bytes]:
        left = length
        with self._path(key).open("rb") as fh:
            if offset:
                fh.seek(offset)
            while left is None or left > 0:
                chunk = fh.read(chunk_size if left is None else min(chunk_size, left))
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                yield chunk

    async def close(self) -> None:
        return None

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    async def exists(self, key: str) -> bool:
        return self._path(key).is_file()
