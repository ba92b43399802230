"""Bodies read back from the input file (storage/bodies.py), on a local blob store and on S3 (moto's server):
the splitter's offsets, one ranged read per run of neighbouring lines, exactly the bytes ingest used to store.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from aistats_gateway.config import S3Config
from aistats_gateway.domain.jsonl import LineSplitter
from aistats_gateway.errors import InputFileUnavailable
from aistats_gateway.storage.blobs import BlobStore, LocalBlobStore
from aistats_gateway.storage.bodies import MAX_GAP, read_bodies, spans
from aistats_gateway.storage.s3blobs import S3BlobStore
from tests.backends import S3Server


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log")
    yield server
    server.stop()


class CountingReads:
    """A BlobStore wrapper that counts ranged reads (what `read_bodies` promises to keep few)."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.reads: list[tuple[int, int | None]] = []

    def read(self, key: str, chunk_size: int = 256 * 1024, *, offset: int = 0,
             length: int | None = None) -> AsyncIterator[bytes]:
        self.reads.append((offset, length))
        return self.inner.read(key, chunk_size, offset=offset, length=length)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def with_blobs(kind: str, tmp_path: Path, s3: S3Server | None, fn: Callable[[BlobStore], Awaitable[None]]) -> None:
    async def main() -> None:
        blobs: BlobStore
        if kind == "local":
            blobs = LocalBlobStore(tmp_path / "blobs")
        else:
            assert s3 is not None
            s3blobs = await S3BlobStore.open(f"s3://bodies-{secrets.token_hex(4)}/gw", S3Config(
                endpoint_url=s3.endpoint_url, access_key_id=s3.ACCESS_KEY, secret_access_key=s3.SECRET_KEY))
            await s3blobs.ensure_bucket()
            blobs = s3blobs
        try:
            await fn(blobs)
        finally:
            await blobs.close()

    asyncio.run(main())


def request(custom_id: str, content: str, **extra: Any) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}],
                                  **extra}})


def test_spans_join_neighbouring_lines_and_split_at_large_gaps() -> None:
    far = 110 + MAX_GAP + 1  # just past the largest gap read through
    ranges = [(100, 10), (0, 50), (52, 40), (far, 5), (50, 1)]
    assert spans(ranges) == [(0, 110, [1, 4, 2, 0]), (far, far + 5, [3])]
    assert spans([(0, 10), (10 + MAX_GAP, 5)]) == [(0, 10 + MAX_GAP + 5, [0, 1])]  # a gap of exactly MAX_GAP
    assert spans(ranges, max_span=60) == [(0, 51, [1, 4]), (52, 110, [2, 0]), (far, far + 5, [3])]
    assert spans([]) == []


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_bodies_come_back_exactly_as_ingest_stored_them(kind: str, tmp_path: Path, s3_server: S3Server) -> None:
    lines = [request("a", "hello"), request("b", "ünïcødé ✓ 𝄞 中文", max_tokens=5), request("c", "x" * 300)]
    far = request("d", "after a gap")
    data = (b"\xef\xbb\xbf" + lines[0] + b"\r\n\r\n" + lines[1] + b"\n  \n" + lines[2] + b"\r\n"
            + b"#" * (MAX_GAP + 10) + b"\n" + far)  # the last line has no newline
    splitter = LineSplitter()
    found = [(o, raw) for _n, o, raw in [*splitter.feed_at(data[:1000]), *splitter.feed_at(data[1000:]),
                                         *splitter.finish_at()] if raw.strip() and not raw.startswith(b"#")]
    assert [raw for _o, raw in found] == [*lines, far]

    async def body(blobs: BlobStore) -> None:
        writer = blobs.writer("files/file-1")
        await writer.write(data)
        await writer.commit()
        counting = CountingReads(blobs)
        got = await read_bodies(counting, "files/file-1", [(o, len(raw)) for o, raw in found])
        assert got == [orjson.dumps(orjson.loads(raw)["body"]) for _o, raw in found]
        assert len(counting.reads) == 2  # the first three lines in one read; the far one (past the gap) alone
        # a range that is not a request line (the blob is not what ingest saw) gives None, the others still read
        assert await read_bodies(blobs, "files/file-1", [(found[0][0], 5), (found[3][0], len(far))]) == [
            None, orjson.dumps(orjson.loads(far)["body"])]
        await blobs.delete("files/file-1")
        with pytest.raises(InputFileUnavailable):
            await read_bodies(blobs, "files/file-1", [(found[0][0], len(found[0][1]))])

    with_blobs(kind, tmp_path, s3_server, body)
