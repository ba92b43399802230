"""Request bodies of items that point into their batch's input file: ranged, coalesced reads, parsed once.

Ingest does not copy bodies into item rows: a valid line's row keeps the byte range of its raw line in the
input file (`items.body_offset`, `items.body_length`; rows from before migration 0007 still carry `body`).
Whoever needs the bodies of a page of rows — the executor for a leased page, a native job building its provider
input — asks here: consecutive lines are fetched with one ranged read (gaps up to `MAX_GAP` bytes are read
through, a read stops growing at `MAX_SPAN`), each raw line is parsed and its `body` object serialized once,
which gives exactly the bytes ingest used to store.

Never writes anything. The only database read is which blob a batch's input file is (cached per batch); an
input file whose owner deleted it stays readable until its last batch is terminal (Files.delete).
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from aistats_gateway.errors import InputFileUnavailable
from aistats_gateway.storage.blobs import BlobStore
from aistats_gateway.storage.files import Files

MAX_GAP = 64 * 1024  # bytes between two wanted lines that are cheaper to read through than to split the read at
MAX_SPAN = 8 * 1024 * 1024  # a read grows no larger than this (a single longer line is read alone)
KEY_CACHE = 4096  # batches whose input blob key is remembered

# One row's body as stored: (body, body_offset, body_length); body None means "read it from the input file".
Stored = tuple[bytes | None, int | None, int | None]


def spans(ranges: Sequence[tuple[int, int]], max_gap: int = MAX_GAP,
          max_span: int = MAX_SPAN) -> list[tuple[int, int, list[int]]]:
    """Group byte ranges (offset, length) into reads: [(start, end, indices into `ranges`)], in file order."""
    out: list[tuple[int, int, list[int]]] = []
    for i in sorted(range(len(ranges)), key=lambda k: ranges[k][0]):
        offset, length = ranges[i]
        if out:
            start, end, members = out[-1]
            if offset - end <= max_gap and max(end, offset + length) - start <= max_span:
                members.append(i)
                out[-1] = (start, max(end, offset + length), members)
                continue
        out.append((offset, offset + length, [i]))
    return out


def body_of(raw: bytes | memoryview) -> bytes | None:
    """A stored line's request body, serialized as ingest would have stored it; None if the line is not one."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    body = line.get("body") if isinstance(line, dict) else None
    return orjson.dumps(body) if isinstance(body, dict) else None


async def read_bodies(blobs: BlobStore, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes | None]:
    """The bodies of the lines at `ranges` of blob `key`; None for a range that does not hold a request line
    (the blob changed under us: not something this gateway does). Raises InputFileUnavailable if the blob is gone,
    and whatever the blob store raises for a transient failure."""
    return [None if raw is None else body_of(raw) for raw in await read_lines(blobs, key, ranges)]


async def read_lines(blobs: BlobStore, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes | None]:
    """The raw lines at `ranges` of blob `key`, byte for byte (a retry's new input file copies them so); None
    for a range past the blob's end. Raises as `read_bodies` does."""
    found: list[bytes | None] = [None] * len(ranges)
    for start, end, members in spans(ranges):
        try:
            chunks = [chunk async for chunk in blobs.read(key, end - start, offset=start, length=end - start)]
        except Exception as exc:
            if not await blobs.exists(key):
                raise InputFileUnavailable(f"the input file's blob {key} is gone") from exc
            raise
        view = memoryview(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        for i in members:
            offset, length = ranges[i]
            if offset + length - start <= len(view):
                found[i] = bytes(view[offset - start:offset - start + length])
    return found


class InputBodies:
    """Bodies of stored item rows: their own, or read from their batch's input file."""

    def __init__(self, files: Files, blobs: BlobStore) -> None:
        self.files = files
        self.blobs = blobs
        self._keys: dict[str, str] = {}

    async def blob_key(self, batch_id: str) -> str:
        key = self._keys.get(batch_id)
        if key is None:
            key = await self.files.input_blob_key(batch_id)
            if key is None:
                raise InputFileUnavailable(f"batch {batch_id} has no input file row any more")
            if len(self._keys) >= KEY_CACHE:
                self._keys.clear()
            self._keys[batch_id] = key
        return key

    async def load(self, batch_id: str, rows: Sequence[Stored]) -> list[bytes | None]:
        """The body of every row (in order); None for a line the input file does not hold (see read_bodies)."""
        found: list[bytes | None] = [body for body, _o, _n in rows]
        wanted = [i for i, (body, _o, _n) in enumerate(rows) if body is None]
        if not wanted:
            return found
        ranges: list[tuple[int, int]] = []
        readable: list[int] = []
        for i in wanted:
            _b, offset, length = rows[i]
            if offset is not None and length is not None:
                readable.append(i)
                ranges.append((offset, length))
        if ranges:
            bodies = await read_bodies(self.blobs, await self.blob_key(batch_id), ranges)
            for i, body in zip(readable, bodies, strict=True):
                found[i] = body
        return found
