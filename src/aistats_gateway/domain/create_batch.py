"""`CreateBatch`: a create-batch body, every field parsed and checked once, into one value.

The service and the storage row read these fields and never the raw body again (the stored
`completion_window` text, the window's seconds, the execution mode all come from here). Fields are checked in
a fixed order, so a body with several mistakes is always refused for the same one. Pure: no storage, no
network; the inline `requests` rows become the bytes of the JSONL file they will be stored as.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from aistats_gateway.domain import batch as rules
from aistats_gateway.domain.batch import CompletionWindow
from aistats_gateway.domain.execution import ExecutionMode
from aistats_gateway.errors import InvalidRequest, excerpt

CREATE_FIELDS = frozenset({
    "input_file_id", "endpoint", "completion_window", "metadata", "session_id", "webhook", "provider",
    "requests", "output_expires_after", "dry_run", "execution", "webhook_endpoint_id",
})


@dataclass(frozen=True)
class CreateBatch:
    endpoint: str  # normalised (/v1/...)
    endpoint_input: str  # as the caller spelled it (echoed on the batch object)
    window: CompletionWindow
    metadata: dict[str, str] | None
    session_id: str | None
    webhook: dict[str, Any] | None
    prefs: dict[str, Any] | None  # the `provider` routing preferences
    dry_run: bool
    output_expires_after: int | None  # seconds; the retention default when the body gave none
    execution: ExecutionMode  # as requested (the service settles `auto` against its providers)
    input_file_id: str | None  # exactly one of these two
    inline: bytes | None  # the inline `requests` rows as JSONL

    @classmethod
    def parse(cls, body: dict[str, Any], *, allow_local_webhooks: bool, max_lines: int,
              default_output_expiry: int | None) -> CreateBatch:
        unknown = sorted(set(body) - CREATE_FIELDS)
        if unknown:
            raise InvalidRequest(
                f"Unknown parameter '{excerpt(unknown[0])}'. Accepted: {', '.join(sorted(CREATE_FIELDS))}.",
                code="unknown_parameter", param=unknown[0][:100])
        endpoint = rules.parse_endpoint(body.get("endpoint"))
        window = rules.parse_completion_window(body.get("completion_window"))
        metadata = rules.parse_metadata(body.get("metadata"))
        session_id = rules.parse_session_id(body.get("session_id"))
        webhook = rules.parse_webhook_choice(body.get("webhook"), body.get("webhook_endpoint_id"),
                                             allow_local_http=allow_local_webhooks)
        prefs = rules.parse_provider_preferences(body.get("provider"))
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise InvalidRequest("'dry_run' must be true or false.", code="invalid_type", param="dry_run")
        output_expires_after = rules.parse_expires_after(body.get("output_expires_after"), "output_expires_after")
        execution = _execution(body.get("execution", "auto"))
        input_file_id, inline = _source(body.get("input_file_id"), body.get("requests"), max_lines)
        return cls(endpoint, str(body.get("endpoint")), window, metadata, session_id, webhook, prefs, dry_run,
                   output_expires_after if output_expires_after is not None else default_output_expiry,
                   execution, input_file_id, inline)


def _execution(value: Any) -> ExecutionMode:
    if isinstance(value, str) and value in {mode.value for mode in ExecutionMode}:
        return ExecutionMode(value)
    raise InvalidRequest(f"Invalid 'execution' {excerpt(repr(value))}: use \"auto\", \"managed\" or \"native\".",
                         code="invalid_value", param="execution")


def _source(input_file_id: Any, inline: Any, max_lines: int) -> tuple[str | None, bytes | None]:
    """Where the lines come from: (input_file_id, None) or (None, the inline rows as JSONL)."""
    if input_file_id is not None and inline is not None:
        raise InvalidRequest("Give either 'input_file_id' or inline 'requests', not both.",
                             code="conflicting_parameters", param="requests")
    if inline is not None:
        return None, inline_bytes(inline, max_lines)
    if input_file_id is not None and not isinstance(input_file_id, str):
        raise InvalidRequest(f"'input_file_id' must be a file id string, got {type(input_file_id).__name__}.",
                             code="invalid_type", param="input_file_id")
    if not input_file_id:
        raise InvalidRequest("Missing required parameter 'input_file_id' (or give inline 'requests').",
                             code="missing_required_parameter", param="input_file_id")
    return input_file_id, None


def inline_bytes(inline: Any, max_lines: int) -> bytes:
    if not isinstance(inline, list):
        raise InvalidRequest("'requests' must be a list of request lines {custom_id, method, url, body}.",
                             code="invalid_type", param="requests")
    if len(inline) > max_lines:
        raise InvalidRequest(f"'requests' has {len(inline)} rows; at most {max_lines} per batch.",
                             code="too_many_tasks", param="requests")
    lines = []
    for index, row in enumerate(inline):
        try:
            lines.append(orjson.dumps(row) + b"\n")
        except TypeError:  # parsed (orjson reads 1024 levels) but cannot be written back (255)
            raise InvalidRequest(f"'requests[{index}]' nests objects and arrays more than 255 levels deep.",
                                 code="invalid_value", param=f"requests[{index}]") from None
    return b"".join(lines)
