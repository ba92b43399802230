"""Upload bodies as the routes read them: the JSON form's `file` and `purpose`, multipart streams."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aistats_gateway.api.json_upload import read_json_upload
from aistats_gateway.api.uploads import read_multipart
from aistats_gateway.errors import InvalidRequest
from aistats_gateway.services.files import check_purpose


def _read_json(raw: bytes, step: int = 7) -> tuple[dict[str, Any], bool, bytes]:
    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(raw), step):
            yield raw[i:i + step]

    sink = _Sink()
    upload = asyncio.run(read_json_upload(stream(), sink, 10**9))  # type: ignore[arg-type]
    return upload.fields, upload.saw_file, sink.data


@pytest.mark.parametrize(("body", "code"), [
    ({"file": None}, "missing_required_parameter"), ({"file": 1}, "invalid_type"),
    ({"file": ["{}"]}, "invalid_type"), ({"file": "data:x;base64,@@@@"}, "invalid_file"),
    ({"file": "data:x;base64,QQ"}, "invalid_file"), ({"file": "data:x;base64,QQ==QUI="}, "invalid_file"),
    ({"file": "data:no-comma"}, "invalid_file"), ({"file": "x", "purpose": "batch", "filename": "y"} | {}, None),
])
def test_json_upload_file_errors_say_what_is_wrong(body: dict[str, object], code: str | None) -> None:
    if code is None:
        assert _read_json(json.dumps(body).encode())[1:] == (True, b"x")
        return
    with pytest.raises(InvalidRequest) as err:
        _read_json(json.dumps(body).encode())
    assert (err.value.code, err.value.param) == (code, "file")


TEXT = '{"custom_id": "a\\"b\\\\", "x": "é€😀\\u0000\\n\\t/"}\n' * 5


@pytest.mark.parametrize("step", [1, 2, 3, 5, 11, 64, 1 << 20])
def test_the_json_form_decodes_every_escape_however_the_body_is_cut(step: int) -> None:
    """Escapes, surrogate pairs and UTF-8 sequences split across chunks at every position decode exactly."""
    from urllib.parse import quote

    for ascii_only in (True, False):
        body = {"purpose": "batch", "file": TEXT, "expires_after": {"anchor": "created_at", "seconds": 3600}}
        fields, saw_file, data = _read_json(json.dumps(body, ensure_ascii=ascii_only).encode(), step)
        assert (data.decode(), saw_file, fields) == (TEXT, True, {"purpose": "batch", "expires_after": {
            "anchor": "created_at", "seconds": 3600}})
    for url in ("data:application/jsonl;base64," + base64.b64encode(TEXT.encode()).decode(),
                "data:text/plain," + quote(TEXT)):
        assert _read_json(json.dumps({"file": url}).encode(), step)[2] == TEXT.encode()
    assert _read_json(b'{"file": "\\ud83d\\ude00\\u00e9"}', step)[2] == "😀é".encode()


@pytest.mark.parametrize(("raw", "says"), [
    (b"", "empty"), (b"{", "cut short"), (b"[]", "got an array"), (b"null", "got null"),
    (b'{"file": "\\ud800"}', "invalid escape '\\ud800'"), (b'{"file": "\\udc00x"}', "invalid escape"),
    (b'{"file": "a\nb"}', "raw control character (byte 0x0a)"), (b'{"file": "\\x41"}', "invalid escape '\\x41"),
    (b'{"file": "\xff"}', "not valid UTF-8"), (b'{"file": "ab"} x', "after the JSON object at byte 15"),
    (b'{"file": "ab",}', "member name in double quotes at byte 14"), (b'{"a": 1 "b": 2}', "',' or '}' at byte 8"),
    (b'{"file": "ab"', "cut short"), (b'{"file": "a", "file": "b"}', "appears twice"),
    (b'{"a": tru}', "'a' (at byte 6) is not valid JSON"), (b'{"a": "' + b"x" * 70_000 + b'", "file": ""}', "longer"),
])
def test_bad_json_forms_say_what_is_wrong_and_where(raw: bytes, says: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        _read_json(raw, 3)
    assert err.value.status_code == 400 and says in err.value.message, err.value.message


@pytest.mark.parametrize(("purpose", "code"), [(None, "missing_required_parameter"), ("", "missing_required_parameter"),
                                               (["batch"], "invalid_type"), (1, "invalid_type"),
                                               ("nope", "invalid_purpose")])
def test_purpose_errors_say_what_is_wrong(purpose: object, code: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_purpose(purpose)
    assert (err.value.code, err.value.param) == (code, "purpose")


class _Sink:
    def __init__(self) -> None:
        self.data = b""

    async def write(self, data: bytes) -> None:
        self.data += data


def _read(body: bytes, content_type: str = "multipart/form-data; boundary=xyzzy") -> tuple[Any, bytes]:
    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 7):  # small chunks: boundaries split across them
            yield body[i:i + 7]

    sink = _Sink()
    form = asyncio.run(read_multipart(stream(), content_type, sink))  # type: ignore[arg-type]
    return form, sink.data


WHOLE = (b'--xyzzy\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
         b'--xyzzy\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
         b'{"x": 1}\n\r\n--xyzzy--\r\n')


def test_a_whole_multipart_body_is_read() -> None:
    form, data = _read(WHOLE)
    assert (form.fields, form.filename, form.saw_file, data) == ({"purpose": "batch"}, "a.jsonl", True, b'{"x": 1}\n')


@pytest.mark.parametrize("cut", [len(WHOLE) - 12, len(WHOLE) - 30, 60])
def test_a_multipart_body_without_its_closing_boundary_is_refused(cut: int) -> None:
    with pytest.raises(InvalidRequest) as err:
        _read(WHOLE[:cut])
    assert err.value.code == "invalid_multipart" and "incomplete" in err.value.message


def test_a_boundary_the_parser_cannot_take_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as err:
        _read(WHOLE, "multipart/form-data; boundary=" + "b" * 300)
    assert err.value.code == "invalid_multipart"



@pytest.mark.parametrize(("name", "fallback"), [("a.jsonl", "a.jsonl"), ("é€😀.jsonl", "___.jsonl"), ('a"b', "a_b"),
                                                ("a\\b", "a_b"), ("x\r\nSet-Cookie: y", "x__Set-Cookie: y"),
                                                ("nul\x00", "nul_")])
def test_content_disposition_is_a_valid_latin1_header_keeping_the_exact_name(name: str, fallback: str) -> None:
    from urllib.parse import unquote

    from aistats_gateway.api.files import content_disposition

    header = content_disposition(name)
    header.encode("latin-1")  # what Starlette does with it: a UnicodeEncodeError was a 500
    assert "\r" not in header and "\n" not in header and header.startswith(f'attachment; filename="{fallback}"')
    if name != fallback:
        assert unquote(header.split("filename*=UTF-8''", 1)[1]) == name


def test_text_fields_are_bounded_in_number_and_size() -> None:
    many = b"".join(b'--xyzzy\r\nContent-Disposition: form-data; name="f%d"\r\n\r\n%s\r\n' % (i, b"v" * 1000)
                    for i in range(40)) + b"--xyzzy--\r\n"
    with pytest.raises(InvalidRequest) as err:
        _read(many)
    assert err.value.code == "invalid_multipart" and "more than 32 fields" in err.value.message
    long_name = b"n" * 3000
    big = b'--xyzzy\r\nContent-Disposition: form-data; name="' + long_name + b'"\r\n\r\n' + b"v" * 70_000 + b"\r\n"
    with pytest.raises(InvalidRequest) as err:
        _read(big)
    assert err.value.param is not None and len(err.value.param) <= 100 and len(err.value.message) < 300
