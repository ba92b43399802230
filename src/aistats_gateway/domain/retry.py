"""Which lines a retry re-runs: the body of `POST /v1/batches/{id}/retry`, parsed into a `RetryFilter`.

Body (all optional): `statuses` (any of failed, expired, cancelled; default all three: every line that did not
succeed), `error_codes` (the codes the batch's `error_summary` shows) and `custom_ids`; a line is re-run when it
matches all that are given. A succeeded line is never re-run. What a failed line's code and outcome are is
domain/failures.py's rule, the same the error summary counts with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aistats_gateway.domain.failures import RETRY_STATUSES, Failure
from aistats_gateway.errors import InvalidRequest, excerpt

FIELDS = ("statuses", "error_codes", "custom_ids")
MAX_CUSTOM_IDS = 50_000  # the most a batch has (limits.max_batch_lines default); each is looked up


@dataclass(frozen=True)
class RetryFilter:
    statuses: frozenset[str] = frozenset(RETRY_STATUSES)
    error_codes: frozenset[str] | None = None
    custom_ids: frozenset[str] | None = None

    def matches(self, custom_id: str, failure: Failure) -> bool:
        return (failure.outcome in self.statuses
                and (self.error_codes is None or failure.code in self.error_codes)
                and (self.custom_ids is None or custom_id in self.custom_ids))

    def describe(self) -> str:
        parts = [f"statuses {sorted(self.statuses)}"]
        if self.error_codes is not None:
            parts.append(f"error_codes {sorted(self.error_codes)}")
        if self.custom_ids is not None:
            parts.append(f"{len(self.custom_ids)} custom_id(s)")
        return ", ".join(parts)


def _strings(body: dict[str, Any], name: str, limit: int) -> frozenset[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"'{name}' must be a non-empty list of strings (or left out).", code="invalid_type",
                             param=name)
    if len(value) > limit:
        raise InvalidRequest(f"'{name}' has {len(value)} entries; at most {limit}.", code="invalid_value",
                             param=name)
    for index, entry in enumerate(value):
        if not isinstance(entry, str) or not entry or "\x00" in entry:
            raise InvalidRequest(f"'{name}[{index}]' must be a non-empty string, got {excerpt(repr(entry))}.",
                                 code="invalid_type", param=f"{name}[{index}]")
    return frozenset(value)


def parse_retry(body: dict[str, Any]) -> RetryFilter:
    """The filter a retry body asks for; 400 naming the field for anything else."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidRequest(f"Unknown parameter '{excerpt(unknown[0])}'. Accepted: {', '.join(FIELDS)}.",
                             code="unknown_parameter", param=unknown[0][:100])
    statuses = _strings(body, "statuses", len(RETRY_STATUSES))
    for status in statuses or ():
        if status not in RETRY_STATUSES:
            raise InvalidRequest(f"Unknown status '{excerpt(status)}' in 'statuses'; use any of "
                                 f"{', '.join(RETRY_STATUSES)} (succeeded lines are never re-run).",
                                 code="invalid_value", param="statuses")
    return RetryFilter(statuses or frozenset(RETRY_STATUSES), _strings(body, "error_codes", 1000),
                       _strings(body, "custom_ids", MAX_CUSTOM_IDS))
