"""Streaming the AI Stats SDK's JSON upload form: `{"purpose", "file": "<JSONL text or data: URL>", ...}`.

The `file` string is decoded as it arrives and handed to the blob writer piece by piece, like the
multipart file part: memory stays constant whatever the upload's size (parsed whole, a 162 MB upload
cost ~2.5x its size, and four at once added 1.6 GiB). Hand-written because streaming JSON libraries
(ijson and the like) hand a string value over whole, and here the one large value is a string. The
other members are small: each is read up to MAX_MEMBER_BYTES and parsed by orjson.

Strings are cut at safe points (never inside an escape, a surrogate pair or a UTF-8 sequence) and
each piece is decoded by orjson, so escapes, UTF-8 and control characters follow JSON exactly. A body
that is not JSON answers 400 naming what was expected and the byte offset where it went wrong.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from aistats_gateway.errors import InvalidRequest, PayloadTooLarge, excerpt
from aistats_gateway.services.files import LimitedWriter

MAX_MEMBER_BYTES = 64 * 1024  # any member but `file` (purpose, filename, expires_after, unknown ones)
MAX_DATA_URL_HEADER = 1024  # `data:<media type>[;base64],` before the payload
_WHITESPACE = b" \t\r\n"
# The content of a JSON string as far as it can be decoded: plain runs, simple escapes, \u escapes that
# are not surrogates, and complete high-low surrogate pairs. It stops before the closing quote, and
# before a control character or an escape that is invalid or not complete in the buffer yet.
_STRING_RUN = re.compile(
    rb'(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u(?![dD][89a-fA-F])[0-9a-fA-F]{4}'
    rb"|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})*+")
_LONGEST_ESCAPE = 12  # a surrogate pair, \uD83D\uDE00


@dataclass
class JsonUpload:
    fields: dict[str, Any]  # every member but `file`
    saw_file: bool


def _cap(what: str) -> str:
    return what[:1].upper() + what[1:]


def _invalid(message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_json", param=param)


class _Source:
    """The body as a cursor over a sliding buffer of what has arrived and not been consumed yet."""

    def __init__(self, stream: AsyncIterator[bytes], limit: int) -> None:
        self._chunks = stream.__aiter__()
        self.limit = limit
        self.buf = b""
        self.pos = 0
        self.dropped = 0  # bytes of the body before `buf`
        self.eof = False

    def where(self, pos: int | None = None) -> int:
        return self.dropped + (self.pos if pos is None else pos)

    async def fill(self) -> bool:
        """Append the next chunk of the body; False at its end."""
        if self.eof:
            return False
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self.eof = True
            return False
        if self.dropped + len(self.buf) + len(chunk) > self.limit:
            raise PayloadTooLarge(f"The request body is larger than the {self.limit:,}-byte limit.",
                                  code="request_too_large")
        self.dropped += self.pos
        self.buf = self.buf[self.pos:] + chunk
        self.pos = 0
        return True

    async def peek(self) -> int | None:
        """The next byte that is not whitespace (not consumed), or None at the end of the body."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not await self.fill():
                return None


def _utf8_cut(buf: bytes, start: int, end: int) -> int:
    """`end`, moved back before a UTF-8 sequence of which the buffer holds only the first bytes."""
    for back in range(1, min(4, end - start) + 1):
        byte = buf[end - back]
        if byte < 0x80:
            return end
        if byte >= 0xC0:  # the lead byte of a sequence of `need` bytes
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return end if need <= back else end - back
    return end


def _decode(segment: bytes, src: _Source, start: int, what: str) -> str:
    try:
        text: str = orjson.loads(b'"' + segment + b'"')
    except orjson.JSONDecodeError as exc:  # invalid UTF-8 is all the run's pattern lets through
        raise _invalid(f"{_cap(what)} (from byte {src.where(start)}) is not valid UTF-8 text: {exc}"
                       ) from exc
    return text


async def _string_pieces(src: _Source, what: str) -> AsyncIterator[str]:
    """The decoded content of the string whose opening quote was just consumed; consumes its closing quote."""
    while True:
        run = _STRING_RUN.match(src.buf, src.pos)
        end = run.end() if run is not None else src.pos  # (it always matches, if only the empty string)
        if end < len(src.buf):
            byte = src.buf[end]
            if byte == 0x22:  # the closing quote
                if end > src.pos:
                    yield _decode(src.buf[src.pos:end], src, src.pos, what)
                src.pos = end + 1
                return
            if byte != 0x5C or len(src.buf) - end >= _LONGEST_ESCAPE or src.eof:
                shown = src.buf[end:end + 6].decode("ascii", "backslashreplace")
                problem = (f"a raw control character (byte 0x{byte:02x}); escape it (\\n, \\t, \\u00XX)" if byte < 0x20
                           else f"the invalid escape '{shown}' (a \\uD800-\\uDFFF surrogate must be a high-low pair)")
                raise _invalid(f"{_cap(what)} contains {problem} at byte {src.where(end)}.")
            stop = end  # an escape that may complete with the next chunk
        else:
            stop = _utf8_cut(src.buf, src.pos, end)
        if stop > src.pos:
            yield _decode(src.buf[src.pos:stop], src, src.pos, what)
            src.pos = stop
        if not await src.fill():
            if stop < len(src.buf):
                continue  # decide on the escape left over, now that no more bytes can complete it
            raise _invalid(f"The request body ends inside {what} (at byte {src.where(len(src.buf))}): "
                           "the JSON is cut short.")


async def _small_string(src: _Source, what: str, limit: int) -> str:
    parts: list[str] = []
    size = 0
    async for piece in _string_pieces(src, what):
        size += len(piece)
        if size > limit:
            raise _invalid(f"{_cap(what)} is longer than {limit:,} characters.")
        parts.append(piece)
    return "".join(parts)


async def _member_value(src: _Source, name: str) -> Any:
    """Any JSON value (not `file`'s), read up to MAX_MEMBER_BYTES and parsed by orjson."""
    what = f"the value of '{excerpt(name)}'"
    if src.buf[src.pos] == 0x22:
        src.pos += 1
        return await _small_string(src, what, MAX_MEMBER_BYTES)
    start = src.where()
    raw = bytearray()
    depth = 0
    in_string = escaped = False
    while True:
        if src.pos >= len(src.buf) and not await src.fill():
            break
        byte = src.buf[src.pos]
        if in_string:
            in_string = escaped or byte != 0x22
            escaped = not escaped and byte == 0x5C
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
        elif byte in b"]}":
            if depth == 0:
                break  # the end of the enclosing object
            depth -= 1
        elif depth == 0 and byte in b", \t\r\n":
            break
        raw.append(byte)
        src.pos += 1
        if len(raw) > MAX_MEMBER_BYTES:
            raise _invalid(f"{_cap(what)} is larger than {MAX_MEMBER_BYTES:,} bytes; only 'file' may be large.",
                           param=name[:100])
        if depth == 0 and not in_string and byte in b"]}":
            break
    try:
        return orjson.loads(bytes(raw))
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"{_cap(what)} (at byte {start}) is not valid JSON: {exc}", param=name[:100]) from exc


class _FileDecoder:
    """The pieces of the `file` string to bytes: the text as UTF-8, or the payload of a `data:` URL
    (`;base64` or percent-encoded), decoded incrementally so no piece outlives its write."""

    def __init__(self, writer: LimitedWriter) -> None:
        self.writer = writer
        self.mode: str | None = None  # "text", "base64" or "percent" once the start of the string is known
        self.pending = ""  # text not decodable yet: the start of the string, or an incomplete base64/% group
        self.padded = False

    async def feed(self, piece: str) -> None:
        if self.mode is None:
            self.pending += piece
            if not self.pending.startswith("data:"[:len(self.pending)]):
                self.mode, piece, self.pending = "text", self.pending, ""
            else:
                header, comma, rest = self.pending.partition(",")
                if not comma:
                    if len(self.pending) > MAX_DATA_URL_HEADER:
                        raise InvalidRequest(f"Malformed data: URL in 'file' (no comma within its first "
                                             f"{MAX_DATA_URL_HEADER:,} characters).", code="invalid_file", param="file")
                    return
                self.mode = "base64" if header.endswith(";base64") else "percent"
                self.pending, piece = "", rest
        if self.mode == "text":
            await self.writer.write(piece.encode("utf-8"))
            return
        self.pending += piece
        if self.mode == "base64":
            whole = len(self.pending) // 4 * 4
            ready, self.pending = self.pending[:whole], self.pending[whole:]
        else:
            cut = self.pending.rfind("%", max(0, len(self.pending) - 2))  # keep an escape cut short
            cut = len(self.pending) if cut == -1 else cut
            ready, self.pending = self.pending[:cut], self.pending[cut:]
        await self._write_payload(ready)

    async def finish(self) -> None:
        if self.mode is None:
            if self.pending.startswith("data:"):
                raise InvalidRequest("Malformed data: URL in 'file' (no comma).", code="invalid_file", param="file")
            await self.writer.write(self.pending.encode("utf-8"))
            return
        if self.mode == "base64" and self.pending:
            raise InvalidRequest("The base64 payload of 'file' is not valid base64 (its length is not a multiple "
                                 "of 4: padding missing or the payload cut short).", code="invalid_file", param="file")
        await self._write_payload(self.pending)

    async def _write_payload(self, ready: str) -> None:
        if not ready:
            return
        if self.mode == "percent":
            await self.writer.write(unquote_to_bytes(ready))
            return
        if self.padded:
            raise InvalidRequest("The base64 payload of 'file' is not valid base64 (data after its '=' padding).",
                                 code="invalid_file", param="file")
        self.padded = "=" in ready
        try:
            await self.writer.write(base64.b64decode(ready, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest("The base64 payload of 'file' is not valid base64.", code="invalid_file",
                                 param="file") from exc


_KINDS = {ord("{"): "an object", ord("["): "an array", ord("t"): "a boolean", ord("f"): "a boolean"}


def _kind(byte: int) -> str:
    return _KINDS.get(byte, "a number" if byte in b"-0123456789" else "a value that is not JSON")


async def read_json_upload(stream: AsyncIterator[bytes], writer: LimitedWriter, limit: int) -> JsonUpload:
    """Stream the `file` member into `writer`; return the other members. Refuses bodies over `limit` bytes."""
    src = _Source(stream, limit)
    first = await src.peek()
    if first is None:
        raise _invalid("The request body is empty; send a JSON object {\"purpose\", \"file\"}.")
    if first != ord("{"):
        raise _invalid(f"The request body must be a JSON object {{\"purpose\", \"file\"}}, got "
                       f"{'null' if first == ord('n') else 'a string' if first == 0x22 else _kind(first)}.")
    src.pos += 1
    fields: dict[str, Any] = {}
    saw_file = False
    byte = await src.peek()
    if byte == ord("}"):
        src.pos += 1
    else:
        while True:
            if byte != 0x22:
                raise _unexpected(src, byte, "a member name in double quotes")
            src.pos += 1
            name = await _small_string(src, "a member name", 1024)
            if (byte := await src.peek()) != ord(":"):
                raise _unexpected(src, byte, f"':' after the member name '{excerpt(name)}'")
            src.pos += 1
            if (byte := await src.peek()) is None:
                raise _unexpected(src, byte, "a value")
            if name != "file":
                fields[name] = await _member_value(src, name)
            elif saw_file:
                raise _invalid("'file' appears twice in the JSON object; send it once.", param="file")
            else:
                saw_file = True
                await _stream_file(src, byte, writer)
            byte = await src.peek()
            if byte == ord(","):
                src.pos += 1
                byte = await src.peek()
                continue
            if byte != ord("}"):
                raise _unexpected(src, byte, "',' or '}'")
            src.pos += 1
            break
    if await src.peek() is not None:
        raise _invalid(f"Unexpected data after the JSON object at byte {src.where()} of the request body.")
    return JsonUpload(fields, saw_file)


async def _stream_file(src: _Source, first: int, writer: LimitedWriter) -> None:
    if first == ord("n"):
        raise InvalidRequest("Missing required parameter 'file': give the JSONL text or a data: URL.",
                             code="missing_required_parameter", param="file")
    if first != 0x22:
        raise InvalidRequest(f"'file' must be a string (the JSONL text or a data: URL), got {_kind(first)}.",
                             code="invalid_type", param="file")
    src.pos += 1
    decoder = _FileDecoder(writer)
    async for piece in _string_pieces(src, "the 'file' string"):
        await decoder.feed(piece)
    await decoder.finish()


def _unexpected(src: _Source, byte: int | None, expected: str) -> InvalidRequest:
    if byte is None:
        return _invalid(f"The request body ends at byte {src.where()} before its JSON object is closed (expected "
                        f"{expected}): the JSON is cut short.")
    return _invalid(f"Expected {expected} at byte {src.where()} of the request body, found "
                    f"'{chr(byte) if 0x20 < byte < 0x7F else f'0x{byte:02x}'}'.")
