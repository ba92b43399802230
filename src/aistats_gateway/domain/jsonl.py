"""Batch input lines in, result lines out: streaming validation and OpenAI-format rendering.

Owns OpenAI's input rules (with 1-based physical line numbers) and the exact shape of output and
error lines. Pure: bytes go in, values come out; the caller does the reading and the storing, so
memory stays flat whatever the file size (one line at a time, plus the set of custom_ids). The splitter
also says where each line lies in the file (its byte offset), so an item can point at its line instead of
holding a copy of its body (storage/bodies.py reads it back).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from aistats_gateway.domain.batch import normalize_endpoint
from aistats_gateway.errors import excerpt

MAX_CUSTOM_ID_CHARS = 512
MEMO_SIZE = 256  # distinct models / urls whose answer a validator remembers
MAX_MODEL_CHARS = 256
MAX_BODY_DEPTH = 255  # orjson parses 1024 levels of nesting but serializes at most this many
# A batch's estimate saturates here (~4.6 billion USD): any limited workspace refuses it all the same, and the
# sum of absurd per-line caps (max_tokens=2**62 on every line) must not overflow the 64-bit estimate column.
MAX_ESTIMATE_NANOS = 2**62


@dataclass(frozen=True)
class LineError:
    code: str
    message: str
    line: int | None
    param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


class ValidLine(NamedTuple):
    """A line that passed every rule (its body stays in the file: see LineSplitter.feed_at)."""

    line: int
    custom_id: str
    model: str
    provider: str


class LineSplitter:
    """Split a byte stream into (line_number, line) without holding more than one line.

    `feed_at`/`finish_at` also give each line's byte offset in the stream: the line is exactly
    `stream[offset:offset + len(line)]` (a leading UTF-8 byte-order mark and the line's `\r\n`/`\n` are
    not part of it).
    """

    def __init__(self) -> None:
        # The unfinished last line, as the pieces it arrived in: joined once, when its newline comes. Joining
        # it with every chunk instead copied a long line again per chunk (quadratic: 22 s for one 100 MB line).
        self._pending: list[bytes] = []
        self._line = 0
        self._pos = 0  # stream offset of the pending line's first byte

    def feed_at(self, chunk: bytes) -> Iterator[tuple[int, int, bytes]]:
        """(line_number, offset, line) of every line `chunk` completes."""
        if self._line == 0 and not self._pending and self._pos == 0 and chunk.startswith(b"\xef\xbb\xbf"):
            chunk = chunk[3:]  # UTF-8 byte-order mark
            self._pos = 3
        parts = chunk.split(b"\n")  # a chunk without a newline comes back as itself, uncopied
        tail = parts.pop()
        if not parts:
            if tail:
                self._pending.append(tail)
            return
        line, pos = self._line, self._pos
        if self._pending:  # the chunk ends the pending line: its one join
            self._pending.append(parts[0])
            parts[0] = b"".join(self._pending)
            self._pending.clear()
        for part in parts:
            line += 1
            yield line, pos, part.rstrip(b"\r")
            pos += len(part) + 1
        if tail:
            self._pending.append(tail)
        self._line, self._pos = line, pos

    def finish_at(self) -> Iterator[tuple[int, int, bytes]]:
        """The last line, when the stream does not end with a newline."""
        if self._pending:
            self._line += 1
            line = b"".join(self._pending).rstrip(b"\r")
            self._pending.clear()
            yield self._line, self._pos, line
            self._pos += len(line)

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        for line_no, _offset, line in self.feed_at(chunk):
            yield line_no, line

    def finish(self) -> Iterator[tuple[int, bytes]]:
        for line_no, _offset, line in self.finish_at():
            yield line_no, line


# A router answers (provider name, None) for a routable model or (None, reason) otherwise.
Router = Callable[[str], tuple[str | None, str | None]]
# An estimator prices one valid line's upper-bound cost in nanos: (provider, model, body) -> nanos.
Estimator = Callable[[str, str, dict[str, Any]], int]


@dataclass
class LineValidator:
    """OpenAI's batch input rules, applied one line at a time.

    Blank lines are skipped (but still counted for line numbers). At most `max_errors` errors are
    kept; `error_count` counts them all.
    """

    endpoint: str
    route: Router
    estimate: Estimator | None = None
    max_lines: int = 50_000
    max_errors: int = 100
    errors: list[LineError] = field(default_factory=list)
    error_count: int = 0
    accepted: int = 0
    seen_lines: int = 0
    models: dict[str, int] = field(default_factory=dict)
    providers: dict[str, int] = field(default_factory=dict)
    estimated_nanos: int = 0
    _custom_ids: dict[str, int] = field(default_factory=dict)
    _too_many: bool = False
    # Answers that depend only on the value, worked out once per distinct value (files repeat a few of them).
    _routes: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    _urls: dict[str, bool] = field(default_factory=dict)

    def _error(self, code: str, message: str, line: int | None, param: str | None = None) -> None:
        self.error_count += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(LineError(code, message, line, param))

    def feed(self, line_no: int, raw: bytes) -> ValidLine | None:
        if not raw.strip():
            return None
        self.seen_lines += 1
        if self.seen_lines > self.max_lines:
            if not self._too_many:
                self._too_many = True
                self._error("too_many_tasks",
                            f"The batch input file has more than {self.max_lines} requests "
                            f"(line {line_no} is request {self.seen_lines}). Split it into several batches.",
                            line_no)
            return None
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self._error("invalid_json_line", _unparseable(raw, exc), line_no)
            return None
        if not isinstance(obj, dict):
            self._error("invalid_json_line",
                        f"Each line must be a JSON object, got {type(obj).__name__}.", line_no)
            return None
        # Only a line with that many brackets can nest too deep to be written back: check just those.
        return self._check(line_no, obj, raw.count(b"[") + raw.count(b"{") > MAX_BODY_DEPTH)

    def _check(self, line_no: int, obj: dict[str, Any], maybe_deep: bool = True) -> ValidLine | None:
        """Every field rule for one parsed line; the valid line's bookkeeping.

        Hot path of an upload (once per line): each field is tested inline by a cheap "is it the usual valid
        value" expression, and only a value that fails it goes to its `_bad_*` helper, which names the rule it
        breaks. All fields are checked, so one line reports all its errors at once.
        """
        ok = True
        custom_id = obj.get("custom_id")
        if (isinstance(custom_id, str) and 0 < len(custom_id) <= MAX_CUSTOM_ID_CHARS and "\x00" not in custom_id
                and custom_id not in self._custom_ids):
            self._custom_ids[custom_id] = line_no
        else:
            self._reject_custom_id(line_no, custom_id)
            ok = False
        method = obj.get("method")
        if method != "POST" and not self._method_accepted(line_no, method):
            ok = False
        url = obj.get("url")
        if not (isinstance(url, str) and url and self._url_matches(url)):
            self._reject_url(line_no, url)
            ok = False
        body = obj.get("body")
        if not isinstance(body, dict):
            self._reject_body(line_no, body)
            return None
        if maybe_deep and not self._body_serializable(line_no, body):
            return None
        if body.get("stream") is True:
            self._error("invalid_value", "Streaming is not supported in batches: remove 'stream' or set it "
                        "to false.", line_no, "body.stream")
            ok = False
        model = body.get("model")
        # The memo holds only models that passed every rule: a hit with a provider is the whole check.
        routed = self._routes.get(model) if isinstance(model, str) else None
        provider = routed[0] if routed is not None else None
        if provider is None:
            provider = self._route_model(line_no, model)
        if not ok or provider is None or not isinstance(model, str) or not isinstance(custom_id, str):
            return None
        self.accepted += 1
        if self.estimate is not None:
            self.estimated_nanos = min(self.estimated_nanos + self.estimate(provider, model, body), MAX_ESTIMATE_NANOS)
        self.models[model] = self.models.get(model, 0) + 1
        self.providers[provider] = self.providers.get(provider, 0) + 1
        return ValidLine(line_no, custom_id, model, provider)

    def _reject_custom_id(self, line_no: int, custom_id: object) -> None:
        """Reports the rule a `custom_id` breaks (rare path of `_check`)."""
        if custom_id is None or custom_id == "":
            self._error("missing_required_parameter",
                        "Missing required parameter 'custom_id': every line needs a unique string id.",
                        line_no, "custom_id")
        elif not isinstance(custom_id, str):
            self._error("invalid_type", f"'custom_id' must be a string, got {type(custom_id).__name__}.",
                        line_no, "custom_id")
        elif len(custom_id) > MAX_CUSTOM_ID_CHARS:
            self._error("invalid_value",
                        f"'custom_id' is {len(custom_id)} characters long; at most {MAX_CUSTOM_ID_CHARS}.",
                        line_no, "custom_id")
        elif "\x00" in custom_id:  # PostgreSQL text cannot hold NUL: the ingest would fail on every retry
            self._error("invalid_value", "'custom_id' must not contain NUL characters (\\u0000).", line_no,
                        "custom_id")
        else:
            self._error("duplicate_custom_id",
                        f"The custom_id '{custom_id}' on line {line_no} duplicates line {self._custom_ids[custom_id]}; "
                        "custom_id values must be unique within a batch.", line_no, "custom_id")

    def _method_accepted(self, line_no: int, method: object) -> bool:
        """Whether a `method` other than exactly "POST" is still accepted (any case of "post" is), reporting
        it when it is not (rare path of `_check`)."""
        if method is None:
            self._error("missing_required_parameter", "Missing required parameter 'method' (must be \"POST\").",
                        line_no, "method")
            return False
        if not isinstance(method, str) or method.upper() != "POST":
            self._error("invalid_method", f"Invalid method {excerpt(repr(method))}: batch requests must use \"POST\".",
                        line_no, "method")
            return False
        return True

    def _reject_url(self, line_no: int, url: object) -> None:
        """Reports a missing `url` or one that is not the batch's endpoint (rare path of `_check`)."""
        if not isinstance(url, str) or not url:
            self._error("missing_required_parameter",
                        f"Missing required parameter 'url' (must be \"{self.endpoint}\").", line_no, "url")
        else:
            self._error("url_mismatch",
                        f"The url '{excerpt(url)}' does not match the batch endpoint '{self.endpoint}'; "
                        "every line must target the batch's endpoint.", line_no, "url")

    def _reject_body(self, line_no: int, body: object) -> None:
        """Reports a missing `body` or one that is not an object (rare path of `_check`)."""
        if body is None:
            self._error("missing_required_parameter", "Missing required parameter 'body'.", line_no, "body")
        else:
            self._error("invalid_type", f"'body' must be a JSON object, got {type(body).__name__}.", line_no, "body")

    def _body_serializable(self, line_no: int, body: dict[str, Any]) -> bool:
        """Whether `body` can be written back (sent on), reporting it when not. Called only for lines with
        enough brackets to nest too deep: orjson parses 1024 levels but serializes at most MAX_BODY_DEPTH."""
        try:
            orjson.dumps(body)
        except TypeError:  # "Recursion limit reached"
            self._error("invalid_value",
                        f"'body' nests objects and arrays more than {MAX_BODY_DEPTH} levels deep.", line_no, "body")
            return False
        return True

    def _route_model(self, line_no: int, model: object) -> str | None:
        """The provider for a `body.model` not yet in the route memo, or None after reporting why there is none.

        The rare path of `_check`: a file names a few distinct models, so this runs about once per model (and
        for every line whose model is invalid or unroutable, which the memo does not keep as hits).
        """
        if not isinstance(model, str) or not model.strip():
            self._error("missing_required_parameter", "Missing required parameter 'body.model'.",
                        line_no, "body.model")
            return None
        if len(model) > MAX_MODEL_CHARS:  # items.model and the request log are VARCHAR(256)
            self._error("invalid_value", f"'body.model' is {len(model):,} characters long; at most {MAX_MODEL_CHARS}.",
                        line_no, "body.model")
            return None
        if "\x00" in model:
            self._error("invalid_value", "'body.model' must not contain NUL characters (\\u0000).", line_no,
                        "body.model")
            return None
        routed = self._routes.get(model)
        if routed is None:
            routed = self.route(model)
            if len(self._routes) < MEMO_SIZE:
                self._routes[model] = routed
        provider, reason = routed
        if provider is None:
            self._error("model_not_found", reason or f"No configured provider serves model '{model}'.",
                        line_no, "body.model")
        return provider

    def _url_matches(self, url: str) -> bool:
        found = self._urls.get(url)
        if found is None:
            found = normalize_endpoint(url) == self.endpoint
            if len(self._urls) < MEMO_SIZE:
                self._urls[url] = found
        return found

    def finish(self) -> list[LineError]:
        if self.seen_lines == 0 and self.error_count == 0:
            self._error("empty_file", "The batch input file is empty: it holds no request lines.", None)
        return self.errors


def _unparseable(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    """OpenAI's message for a line that is not JSON, plus what the parser saw and a hint for common causes."""
    message = f"This line is not parseable as valid JSON ({exc.msg} at column {exc.colno})."
    if b"\r" in raw:
        message += (" It contains a carriage return (\\r): lines must end with \\n (or \\r\\n), not \\r alone.")
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw[:4]:
        message += " The file looks UTF-16 encoded: batch input files must be UTF-8."
    elif isinstance(exc.doc, str) and exc.doc[exc.pos:exc.pos + 9].lstrip("-").startswith(("NaN", "Infinity")):
        message += " NaN and Infinity are not JSON numbers."
    return message


def success_line(result_id: str, custom_id: str, status_code: int, request_id: str, body: bytes,
                 provider: str | None = None) -> bytes:
    """An output-file line; `body` is the upstream's JSON, embedded without re-encoding. `provider` (an
    extension field after OpenAI's four) names the provider that served the line."""
    line: dict[str, Any] = {
        "id": result_id,
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": orjson.Fragment(body)},
        "error": None,
    }
    if provider is not None:
        line["provider"] = provider
    return orjson.dumps(line)


def upstream_error_line(
    result_id: str, custom_id: str, status_code: int, request_id: str, body: bytes, provider: str | None = None
) -> bytes:
    """An error-file line for a non-2xx upstream answer: status and body kept as the upstream sent them."""
    try:
        orjson.loads(body)
        embedded: Any = orjson.Fragment(body)
    except orjson.JSONDecodeError:
        embedded = body.decode("utf-8", "replace")
    line: dict[str, Any] = {
        "id": result_id,
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": embedded},
        "error": None,
    }
    if provider is not None:
        line["provider"] = provider
    return orjson.dumps(line)


def error_line(result_id: str, custom_id: str, code: str, message: str) -> bytes:
    """An error-file line for a request that got no upstream answer (cancelled, expired, unreachable)."""
    return orjson.dumps(
        {
            "id": result_id,
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    )


HALT_MESSAGES = {
    "batch_cancelled": "The batch was cancelled before this request was processed.",
    "batch_expired": "The batch expired before this request could be processed (completion_window ran out).",
}


def settled_line(result_id: str, custom_id: str, result: bytes | None, error_code: str | None) -> bytes:
    """A settled line as the output/error files and the live results stream show it: the stored line, or the
    error line of a line that settled without an upstream answer (cancelled, expired)."""
    if result is not None:
        return result
    code = error_code or "request_failed"
    return error_line(result_id, custom_id, code, HALT_MESSAGES.get(code, "The request failed."))
