"""Upload bodies as the routes read them: the JSON form's `file` and `purpose`, multipart streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aistats_gateway.api.uploads import json_upload_content, read_multipart
from aistats_gateway.errors import InvalidRequest
from aistats_gateway.services.files import check_purpose


@pytest.mark.parametrize(("body", "code"), [
    ({}, "missing_required_parameter"), ({"file": None}, "missing_required_parameter"), ({"file": 1}, "invalid_type"),
    ({"file": ["{}"]}, "invalid_type"), ({"file": "data:x;base64,@@"}, "invalid_file"),
    ({"file": "data:no-comma"}, "invalid_file"),
])
def test_json_upload_file_errors_say_what_is_wrong(body: dict[str, object], code: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        json_upload_content(body)
    assert (err.value.code, err.value.param) == (code, "file")


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
