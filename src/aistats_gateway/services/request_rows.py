"""`GET /v1/batches/{id}/requests`: the batch's request rows (one per input line), or its attempts log.

A page of rows is read in three steps: the lines (storage/request_rows.py), their attempts, and their request
bodies (for `request_body_hash`: ranged reads of the input file, storage/bodies.py; none once that file is
gone); each row is then rendered by domain/request_rows.py within one page budget for bodies. `view=attempts`
is the request log as it was before rows existed (one entry per upstream attempt; the dashboard's "Request
log"), with its own filters (success, error, an HTTP status code).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from aistats_gateway.domain import request_rows as rules
from aistats_gateway.errors import InputFileUnavailable, InvalidRequest, excerpt
from aistats_gateway.storage.blobs import BlobStore
from aistats_gateway.storage.bodies import InputBodies
from aistats_gateway.storage.native_jobs import NativeJobs
from aistats_gateway.storage.records import BatchRecord
from aistats_gateway.storage.store import Store

VIEWS = ("rows", "attempts")
_HTTP_STATUS = re.compile(r"[1-5][0-9]{2}")
INLINE_FILENAME = "inline_requests.jsonl"  # what BatchService names the file it makes of inline `requests`


def parse_view(value: str | None) -> str:
    if value is None or value in VIEWS:
        return value or "rows"
    raise InvalidRequest(f"Unknown view '{excerpt(value)}'; use rows (one per request line, the default) or "
                         "attempts (one per upstream attempt).", code="invalid_value", param="view")


class RequestRowService:
    def __init__(self, store: Store, blobs: BlobStore) -> None:
        self.store = store
        self.bodies = InputBodies(store.files, blobs)

    async def rows(self, batch: BatchRecord, *, limit: int, offset: int,
                   status: str | None) -> tuple[list[dict[str, Any]], bool]:
        flt = rules.parse_filter(status)
        found, has_more = await self.store.request_rows.page(batch.id, limit=limit, offset=offset, flt=flt)
        tries = await self.store.request_rows.attempts(batch.id, [r["line"] for r in found])
        hashes: list[str | None] = [None] * len(found)
        with contextlib.suppress(InputFileUnavailable, OSError):
            bodies = await self.bodies.load(batch.id, [(r["body"], r["body_offset"], r["body_length"]) for r in found])
            hashes = [rules.body_hash(b) for b in bodies]
        natives = await self._native_ids(batch)
        input_file = await self.store.files.get(batch.workspace_id, batch.input_file_id, include_deleted=True)
        mode = "requests" if input_file is not None and input_file.filename == INLINE_FILENAME else "file"
        budget = rules.Budget()
        out = []
        for row, body_hash in zip(found, hashes, strict=True):
            last, count, cost = tries.get(row["line"], (None, 0, None))
            line = rules.Line(batch.id, row["line"], row["request_index"], row["custom_id"], row["model"],
                              row["provider"], row["status"], row["error_code"], row["result"], count,
                              row["settled_at"], last, cost, body_hash)
            native = natives.get((row["provider"], row["model"])) or natives.get((row["provider"], "*"))
            out.append(rules.render(line, endpoint=batch.endpoint, native_batch_id=native or batch.native_batch_id,
                                    session_id=batch.session_id, created_at=batch.created_at, input_mode=mode,
                                    budget=budget))
        return out, has_more

    async def attempts(self, batch: BatchRecord, *, limit: int, offset: int,
                       status: str | None) -> tuple[list[dict[str, Any]], bool]:
        """The request log: one row per upstream attempt (`status`: success, error or a code)."""
        if status is not None and status not in ("success", "error") and not _HTTP_STATUS.fullmatch(status):
            # ASCII only: str.isdigit() also takes "²" (int() refuses it) and 30-digit numbers overflow the column
            raise InvalidRequest(f"Unknown status filter '{excerpt(status)}'; use success, error or an HTTP status "
                                 "code (100-599).", code="invalid_status", param="status")
        return await self.store.request_log.page(batch.workspace_id, batch.id, limit=limit, offset=offset,
                                                 status=status)

    async def _native_ids(self, batch: BatchRecord) -> dict[tuple[str, str], str]:
        """(provider, model) → its provider batch id, where exactly one provider batch ran them."""
        if batch.execution != "native":
            return {}
        seen: dict[tuple[str, str], list[str]] = {}
        for job in await NativeJobs(self.store.db, self.store.outbox).for_batch(batch.id):
            if job.native_batch_id:
                seen.setdefault((job.provider, job.model), []).append(job.native_batch_id)
        return {key: ids[0] for key, ids in seen.items() if len(ids) == 1}

