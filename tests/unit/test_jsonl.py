"""OpenAI's input rules, one test per rule, with 1-based physical line numbers."""

from __future__ import annotations

import time

import orjson
import pytest

from aistats_gateway.domain.jsonl import (
    LineSplitter,
    LineValidator,
    error_line,
    success_line,
    upstream_error_line,
)

ENDPOINT = "/v1/chat/completions"


def route(model: str) -> tuple[str | None, str | None]:
    return ("mock", None) if model.startswith("mock/") else (None, f"No configured provider serves model '{model}'.")


def line(custom_id: object = "a", *, method: object = "POST", url: object = ENDPOINT, body: object = None) -> bytes:
    obj: dict[str, object] = {"custom_id": custom_id, "method": method, "url": url,
                              "body": body if body is not None else {"model": "mock/echo", "messages": []}}
    return orjson.dumps(obj)


def run(raw_lines: list[bytes], **kw: int) -> LineValidator:
    validator = LineValidator(endpoint=ENDPOINT, route=route, **kw)
    splitter = LineSplitter()
    for n, raw in splitter.feed(b"\n".join(raw_lines)):
        validator.feed(n, raw)
    for n, raw in splitter.finish():
        validator.feed(n, raw)
    validator.finish()
    return validator


def only_error(v: LineValidator) -> tuple[str, int | None, str | None]:
    assert len(v.errors) == 1, v.errors
    e = v.errors[0]
    return e.code, e.line, e.param


def test_valid_file_accepts_every_line() -> None:
    v = run([line("a"), line("b"), line("c")])
    assert v.errors == [] and v.accepted == 3 and v.models == {"mock/echo": 3}


def test_bad_json_reports_its_line() -> None:
    assert only_error(run([line("a"), b"{not json", line("c")])) == ("invalid_json_line", 2, None)


def test_non_object_line() -> None:
    assert only_error(run([line("a"), b"[1, 2]"]))[:2] == ("invalid_json_line", 2)


def test_duplicate_custom_id_names_both_lines() -> None:
    v = run([line("x"), line("y"), line("x")])
    assert only_error(v) == ("duplicate_custom_id", 3, "custom_id")
    assert "line 1" in v.errors[0].message


def test_missing_custom_id() -> None:
    assert only_error(run([line("a"), line(None)])) == ("missing_required_parameter", 2, "custom_id")


def test_wrong_url() -> None:
    assert only_error(run([line("a", url="/v1/embeddings")])) == ("url_mismatch", 1, "url")


def test_url_spelling_variants_are_the_same_endpoint() -> None:
    assert run([line("a", url="chat/completions"), line("b", url="/chat/completions")]).errors == []


def test_wrong_method() -> None:
    assert only_error(run([line("a", method="GET")])) == ("invalid_method", 1, "method")


def test_stream_true_is_rejected() -> None:
    body = {"model": "mock/echo", "messages": [], "stream": True}
    assert only_error(run([line("a"), line("b", body=body)])) == ("invalid_value", 2, "body.stream")


def test_missing_model() -> None:
    assert only_error(run([line("a", body={"messages": []})])) == ("missing_required_parameter", 1, "body.model")


def test_unroutable_model_names_the_fix() -> None:
    v = run([line("a", body={"model": "gpt-4o-mini", "messages": []})])
    assert only_error(v) == ("model_not_found", 1, "body.model")
    assert "gpt-4o-mini" in v.errors[0].message


def test_empty_file() -> None:
    assert only_error(run([])) == ("empty_file", None, None)
    assert only_error(run([b"", b"   "])) == ("empty_file", None, None)


def test_over_the_line_limit() -> None:
    v = run([line(str(i)) for i in range(4)], max_lines=3)
    assert only_error(v) == ("too_many_tasks", 4, None)


def test_blank_lines_count_for_numbering() -> None:
    v = run([line("a"), b"", b"oops"])
    assert only_error(v)[:2] == ("invalid_json_line", 3)


def test_errors_are_capped_but_counted() -> None:
    v = run([b"bad"] * 10, max_errors=3)
    assert len(v.errors) == 3 and v.error_count == 10


def test_crlf_and_bom_are_tolerated() -> None:
    data = b"\xef\xbb\xbf" + line("a") + b"\r\n" + line("b") + b"\r\n"
    validator = LineValidator(endpoint=ENDPOINT, route=route)
    splitter = LineSplitter()
    for n, raw in [*splitter.feed(data[:7]), *splitter.feed(data[7:]), *splitter.finish()]:
        validator.feed(n, raw)
    assert validator.finish() == [] and validator.accepted == 2


@pytest.mark.parametrize("chunk", [1, 3, 17, 4096])
def test_splitter_is_independent_of_chunking(chunk: int) -> None:
    data = b"one\ntwo\n\nfour"
    splitter = LineSplitter()
    got = []
    for i in range(0, len(data), chunk):
        got += list(splitter.feed(data[i : i + chunk]))
    got += list(splitter.finish())
    assert got == [(1, b"one"), (2, b"two"), (3, b""), (4, b"four")]


def test_output_lines_have_openai_shape() -> None:
    ok = orjson.loads(success_line("batch_req_1", "c1", 200, "G-1", b'{"id":"x","usage":{"prompt_tokens":1}}'))
    assert ok == {"id": "batch_req_1", "custom_id": "c1", "error": None,
                  "response": {"status_code": 200, "request_id": "G-1",
                               "body": {"id": "x", "usage": {"prompt_tokens": 1}}}}
    bad = orjson.loads(upstream_error_line("batch_req_2", "c2", 502, "G-2", b"<html>bad gateway</html>"))
    assert bad["response"] == {"status_code": 502, "request_id": "G-2", "body": "<html>bad gateway</html>"}
    cancelled = orjson.loads(error_line("batch_req_3", "c3", "batch_cancelled", "cancelled"))
    assert cancelled["response"] is None and cancelled["error"] == {"code": "batch_cancelled", "message": "cancelled"}


# ------------------------------------------------------------------ line offsets (items point into the file)
def lines_at(data: bytes, chunk: int) -> list[tuple[int, int, bytes]]:
    splitter = LineSplitter()
    got: list[tuple[int, int, bytes]] = []
    for i in range(0, len(data), chunk):
        got += list(splitter.feed_at(data[i : i + chunk]))
    return got + list(splitter.finish_at())


@pytest.mark.parametrize("chunk", [3, 5, 16, 1 << 20])
def test_offsets_point_at_each_line_with_bom_crlf_blank_lines_and_no_final_newline(chunk: int) -> None:
    first, second, last = line("a"), line("ß€𝄞", body={"model": "mock/echo", "messages": "héllo ✓"}), line("z")
    data = b"\xef\xbb\xbf" + first + b"\r\n" + b"\r\n" + b"   \n" + second + b"\n" + b"\n" + last
    got = lines_at(data, chunk)
    assert [(n, raw) for n, _o, raw in got] == [(1, first), (2, b""), (3, b"   "), (4, second), (5, b""), (6, last)]
    for _n, offset, raw in got:
        assert data[offset : offset + len(raw)] == raw  # the BOM and the line ends are not part of any line
    assert got[0][1] == 3 and got[3][1] == data.index(second) and got[5][1] == len(data) - len(last)


def test_offsets_of_a_file_ending_in_crlf_and_of_carriage_returns_inside_a_line() -> None:
    data = line("a") + b"\r\n" + b'{"x": "1\r2"}\r\r\n'
    got = lines_at(data, 7)
    assert [raw for _n, _o, raw in got] == [line("a"), b'{"x": "1\r2"}']  # trailing \r's go, inner ones stay
    assert all(data[o : o + len(raw)] == raw for _n, o, raw in got)


def test_feed_and_feed_at_see_the_same_lines() -> None:
    data = b"\xef\xbb\xbfone\r\ntwo\n\nfour"
    plain, at = LineSplitter(), LineSplitter()
    assert [*plain.feed(data), *plain.finish()] == [(n, raw) for n, _o, raw in [*at.feed_at(data), *at.finish_at()]]


def test_valid_lines_carry_no_body_copy() -> None:
    validator = LineValidator(endpoint=ENDPOINT, route=route)
    valid = validator.feed(7, line("c7"))
    assert valid is not None and tuple(valid) == (7, "c7", "mock/echo", "mock")


def test_a_body_nested_deeper_than_orjson_can_write_is_a_line_error_not_a_crash() -> None:
    """orjson parses 1024 levels but serializes 255: such a line crashed the ingest (retried forever, the batch
    stuck in validating) and answered a dry run with 500."""
    deep = b'{"custom_id": "d", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "mock/echo", ' \
           b'"messages": ' + b"[" * 300 + b"]" * 300 + b"}}"
    v = run([line("a"), deep])
    assert only_error(v) == ("invalid_value", 2, "body") and "255" in v.errors[0].message
    assert only_error(run([deep.replace(b"[" * 300, b"[" * 2000).replace(b"]" * 300, b"]" * 2000)]))[:2] == \
        ("invalid_json_line", 1)
    assert run([deep.replace(b"[" * 300, b"[" * 200).replace(b"]" * 300, b"]" * 200)]).errors == []


def test_nul_characters_in_custom_id_and_model_are_refused() -> None:
    """PostgreSQL text columns cannot hold NUL: the item insert failed on every ingest retry."""
    assert only_error(run([line("a\x00b")])) == ("invalid_value", 1, "custom_id")
    star = LineValidator(endpoint=ENDPOINT, route=lambda model: ("any", None))
    assert star.feed(1, line("a", body={"model": "gpt\x00x"})) is None
    assert [(e.code, e.param) for e in star.errors] == [("invalid_value", "body.model")]
    assert run([line("a", body={"model": "mock/echo", "messages": [{"role": "user", "content": "a\x00b"}]})]).errors \
        == []  # NUL inside the body is fine: bodies are stored as bytes


def test_the_estimate_saturates_instead_of_overflowing_64_bits() -> None:
    from aistats_gateway.domain.jsonl import MAX_ESTIMATE_NANOS

    validator = LineValidator(endpoint=ENDPOINT, route=route, estimate=lambda provider, model, body: 2**70)
    for n in range(3):
        validator.feed(n + 1, line(f"c{n}"))
    assert validator.accepted == 3 and validator.estimated_nanos == MAX_ESTIMATE_NANOS < 2**63


@pytest.mark.parametrize(("raw", "hint"), [
    (b'{"custom_id": "a"}\r{"custom_id": "b"}', "carriage return"),
    ('{"custom_id": "a"}'.encode("utf-16"), "UTF-16"),
    (b'{"custom_id": "a", "body": {"temperature": NaN}}', "NaN and Infinity"),
    (b'{"custom_id": "a", "body": {"temperature": -Infinity}}', "NaN and Infinity"),
    (b'{"custom_id": "a"', "unexpected end of data"),
])
def test_unparseable_lines_say_what_the_parser_saw(raw: bytes, hint: str) -> None:
    v = run([raw])
    assert v.errors[0].code == "invalid_json_line" and v.errors[0].line == 1
    assert v.errors[0].message.startswith("This line is not parseable as valid JSON") and hint in v.errors[0].message


def test_models_longer_than_the_model_columns_are_refused() -> None:
    star = LineValidator(endpoint=ENDPOINT, route=lambda model: ("any", None))
    assert star.feed(1, line("a", body={"model": "m" * 257})) is None
    assert [(e.code, e.line, e.param) for e in star.errors] == [("invalid_value", 1, "body.model")]
    assert star.feed(2, line("b", body={"model": "m" * 256})) is not None


def test_errors_quote_long_values_short() -> None:
    v = run([line("a", url="/v1/" + "x" * 1_000_000), line("b", method="x" * 1_000_000)])
    assert [e.code for e in v.errors] == ["url_mismatch", "invalid_method"]
    assert all(len(e.message) < 400 for e in v.errors)


# ------------------------------------------------------------------ one very long line (issue #14, item 10)
def _long_line(megabytes: int) -> bytes:
    filler = b"x" * (megabytes << 20)
    return b'{"custom_id": "long", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "mock/echo", ' \
           b'"messages": [{"role": "user", "content": "' + filler + b'"}]}}'


def _validate_cpu(data: bytes, chunk: int = 256 * 1024) -> tuple[float, list[tuple[int, int, int]]]:
    """CPU seconds to split and validate `data` fed in the blob store's read size, and (line, offset, length)."""
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    validator = LineValidator(endpoint=ENDPOINT, route=route)
    splitter = LineSplitter()
    seen: list[tuple[int, int, int]] = []
    started = time.process_time()
    for piece in chunks:
        for n, offset, raw in splitter.feed_at(piece):
            validator.feed(n, raw)
            seen.append((n, offset, len(raw)))
    for n, offset, raw in splitter.finish_at():
        validator.feed(n, raw)
        seen.append((n, offset, len(raw)))
    cpu = time.process_time() - started
    assert validator.finish() == [] and validator.accepted == len(seen)
    return cpu, seen


def test_validating_one_very_long_line_is_linear_in_its_length() -> None:
    """The splitter joined its pending line with every chunk, so a line of n chunks cost n²/2 chunk copies:
    25 / 100 MB lines took 1.5 / 22 s. A ratio, not a time: 4x the length must cost about 4x (linear), well
    under the 16x of quadratic, whatever the machine's speed."""
    costs = {}
    for megabytes in (25, 100):
        long = _long_line(megabytes)
        data = line("a") + b"\n" + long + b"\n" + line("b")
        cpu, seen = min(_validate_cpu(data) for _ in range(2))
        assert seen == [(1, 0, len(line("a"))), (2, len(line("a")) + 1, len(long)),
                        (3, len(data) - len(line("b")), len(line("b")))]
        costs[megabytes] = cpu
    assert costs[100] < 8 * max(costs[25], 0.005), costs
