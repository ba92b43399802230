"""File bytes behind the BlobStore protocol: uploads, batch inputs, output and error files.

A writer publishes atomically: bytes go to a temporary object and become visible under their key
only at `commit()` (write-to-temp + fsync + rename locally), so a reader never sees a torn file. A
writer killed mid-write (SIGKILL, power loss) leaves its temporary behind; `open_blob_store` removes
stale ones at the next start (`LocalBlobStore.sweep_temporaries`).
`LocalBlobStore` keeps blobs under a directory; `s3blobs.S3BlobStore` on S3-compatible storage;
`open_blob_store(settings)` picks one from `blob_url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from aistats_gateway.config import Settings

log = logging.getLogger(__name__)
# A temporary not modified for this long belongs to no live writer. Age, not ownership, decides: several
# processes (API and workers) may share one blob directory, and a start must not delete another process's
# temporary mid-write. A live writer touches its file at every buffer flush (8 KiB), an upload whose body
# stalls is abandoned after limits.body_timeout_seconds, and no writer of the gateway idles for an hour.
STALE_TEMPORARY_SECONDS = 3600.0


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
    store = LocalBlobStore(settings.blob_dir)
    removed = await asyncio.to_thread(store.sweep_temporaries)
    if removed:
        log.info("removed %d stale temporary blob(s) left by writers that did not finish", removed)
    return store


def is_temporary(name: str) -> bool:
    """A writer's temporary, `.<key name>.<random>.tmp` (no key's last part starts with a dot)."""
    return name.startswith(".") and name.endswith(".tmp")


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

    def sweep_temporaries(self, max_age: float = STALE_TEMPORARY_SECONDS, now: float | None = None) -> int:
        """Remove writers' temporaries not modified for `max_age` seconds; returns how many (blocking I/O)."""
        cutoff = (time.time() if now is None else now) - max_age
        removed = 0
        for folder, _dirs, names in os.walk(self.root):
            for name in names:
                if not is_temporary(name):
                    continue
                path = os.path.join(folder, name)
                with contextlib.suppress(FileNotFoundError):  # its writer may have just published or aborted
                    if os.stat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
        return removed

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
