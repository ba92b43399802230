"""Reading request bodies as streams: multipart/form-data uploads, and bounded JSON bodies.

Multipart is parsed incrementally (python-multipart's push parser) and the `file` part is handed
to the blob writer chunk by chunk as it arrives, so an upload never sits whole in memory and the
size limit cuts it off early. The JSON upload form streams too (api/json_upload.py); other JSON
bodies (a batch create) are read whole up to a limit and parsed by `parse_json_object`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from python_multipart.multipart import MultipartParser, parse_options_header

from aistats_gateway.errors import InvalidRequest, PayloadTooLarge, excerpt
from aistats_gateway.services.files import LimitedWriter

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_FIELD_BYTES = 64 * 1024
# Text fields are held in memory (the file part streams to the blob store): without a count, a chunked body of
# 64 KB fields under distinct names grew without bound. An upload has four (purpose, expires_after[...]).
MAX_FIELDS = 32


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)


@dataclass
class MultipartUpload:
    fields: dict[str, str]
    filename: str | None
    saw_file: bool


class _MultipartSink:
    """The multipart parser's callbacks: headers and text fields kept (bounded), the `file` part's bytes queued
    for the writer. The parser calls these synchronously; `read_multipart` drains `pending` between chunks."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.fields: dict[str, str] = {}
        self.part = _Part()
        self.header_field = b""
        self.header_value = b""
        self.filename: str | None = None
        self.saw_file = False
        self.ended = False  # set only when the closing boundary arrives

    def callbacks(self) -> MultipartCallbacks:
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_end": self.on_end}

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[self.header_field.lower()] = self.header_value
        self.header_field = b""
        self.header_value = b""

    def on_headers_finished(self) -> None:
        part = self.part
        _, disp = parse_options_header(part.headers.get(b"content-disposition", b""))
        part.name = disp.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = disp.get(b"filename")
        part.filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
        if part.name == "file":
            if self.saw_file:
                raise InvalidRequest("Send exactly one 'file' part.", code="invalid_multipart", param="file")
            self.saw_file = True
            self.filename = part.filename

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        if part.name == "file":
            self.pending.append(data[start:end])
            return
        part.value += data[start:end]
        if len(part.value) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"Form field '{excerpt(part.name)}' is longer than {MAX_FIELD_BYTES:,} bytes.",
                                 code="invalid_multipart", param=part.name[:100])

    def on_part_end(self) -> None:
        part = self.part
        if part.name and part.name != "file":
            self.fields[part.name] = part.value.decode("utf-8", "replace")
            if len(self.fields) > MAX_FIELDS:
                raise InvalidRequest(f"The form has more than {MAX_FIELDS} fields; an upload needs 'file' and "
                                     "'purpose' (and optionally expires_after[anchor], expires_after[seconds]).",
                                     code="invalid_multipart")

    def on_end(self) -> None:
        self.ended = True


async def read_multipart(
    stream: AsyncIterator[bytes], content_type: str, writer: LimitedWriter
) -> MultipartUpload:
    """Stream the `file` part into `writer`; return the text fields and the file name."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("multipart/form-data request without a boundary.", code="invalid_multipart")
    sink = _MultipartSink()
    try:
        parser = MultipartParser(boundary, sink.callbacks())
    except ValueError as exc:  # e.g. a boundary over the 256 bytes the parser (and RFC 2046: 70) allows
        raise InvalidRequest(f"Malformed multipart Content-Type: {exc}", code="invalid_multipart") from exc
    received = 0
    async for chunk in stream:
        received += len(chunk)
        try:
            parser.write(chunk)
        except (InvalidRequest, PayloadTooLarge):
            raise
        except Exception as exc:  # the parser's own errors: malformed body
            raise InvalidRequest(f"Malformed multipart body: {exc}", code="invalid_multipart") from exc
        for data in sink.pending:
            await writer.write(data)
        sink.pending.clear()
    parser.finalize()
    if received and not sink.ended:
        # A body cut short (a client that stopped mid-upload, a proxy limit) must not be stored as if whole.
        raise InvalidRequest("The multipart body ended before its closing boundary ('--<boundary>--'): the upload "
                             "is incomplete; send it again.", code="invalid_multipart",
                             param="file" if sink.saw_file else None)
    return MultipartUpload(sink.fields, sink.filename, sink.saw_file)


async def read_limited(stream: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, refusing more than `limit` bytes (JSON bodies only)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than the {limit:,}-byte limit.",
                                  code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_object(raw: bytes, what: str = "request body") -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequest(f"The {what} is empty; send a JSON object.", code="invalid_json")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The {what} is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(parsed, dict):
        raise InvalidRequest(f"The {what} must be a JSON object, got {type(parsed).__name__}.",
                             code="invalid_json")
    return parsed
