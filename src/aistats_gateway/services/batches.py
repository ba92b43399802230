"""Batches: create (from a file or inline rows), read, list and cancel, within one workspace.

Create checks the body synchronously (400/404 with the field named) and stores the batch as
`validating`; the executor validates the lines in the background. Cancel is a compare-and-set
to `cancelling`; the executor stops sending and finalizes with every finished result kept.
"""

from __future__ import annotations

import builtins
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson

from aistats_gateway import ids
from aistats_gateway.clock import Clock
from aistats_gateway.domain import batch as rules
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.jsonl import LineValidator
from aistats_gateway.domain.transitions import CANCELLABLE
from aistats_gateway.errors import Conflict, InvalidRequest, NotFound, StaleTransition, excerpt
from aistats_gateway.executor.service import Executor
from aistats_gateway.pricing.calculator import PricingLines, usd
from aistats_gateway.pricing.catalog import BATCH, STANDARD
from aistats_gateway.pricing.pricer import Pricer
from aistats_gateway.providers.routing import Router
from aistats_gateway.services.estimates import scan
from aistats_gateway.services.files import FileService
from aistats_gateway.storage.batches import BatchSearch
from aistats_gateway.storage.records import BatchRecord
from aistats_gateway.storage.store import Store

CREATE_FIELDS = {
    "input_file_id", "endpoint", "completion_window", "metadata", "session_id", "webhook", "provider",
    "requests", "output_expires_after", "dry_run", "execution",
}
EXECUTION_MODES = ("auto", "managed", "native")
_HTTP_STATUS = re.compile(r"[1-5][0-9]{2}")
DAY = 24 * 3600
MAX_SEARCH_CHARS = 512  # longer than any id, session id (256) or metadata value (512) could be


def ensure_rows_kept(batch: BatchRecord, what: str) -> None:
    """Refuse, saying why, to serve per-line rows that the retention policy removed (an empty answer would
    read as "nothing happened")."""
    if batch.rows_purged_at is not None:
        files = ", ".join(f"{name} {value}" for name, value in (("output_file_id", batch.output_file_id),
                                                                  ("error_file_id", batch.error_file_id)) if value)
        raise NotFound(f"The {what} of batch {batch.id} was removed by the retention policy ([retention] "
                       f"batch_rows_seconds) at {batch.rows_purged_at}, after the batch ended"
                       + (f"; its lines are in {files} unless those have expired." if files else "."),
                       code="batch_rows_purged", param="batch_id")


class BatchService:
    def __init__(
        self, store: Store, files: FileService, executor: Executor | None, clock: Clock, max_lines: int,
        *, allow_local_webhooks: bool = False, router: Router | None = None, pricer: Pricer | None = None,
        max_errors: int = 100, batch_api: set[str] | None = None,
    ) -> None:
        self.batch_api = batch_api or set()  # providers whose own batch API may run native batches
        self.router = router
        self.pricer = pricer
        self.max_errors = max_errors
        self.allow_local_webhooks = allow_local_webhooks
        self.store = store
        self.files = files
        self.executor = executor
        self.clock = clock
        self.max_lines = max_lines

    async def create(self, workspace_id: str, body: dict[str, Any]) -> BatchRecord | dict[str, Any]:
        """The new batch; or, for `dry_run`, the validation and cost preview (a dict; nothing is created)."""
        unknown = sorted(set(body) - CREATE_FIELDS)
        if unknown:
            raise InvalidRequest(
                f"Unknown parameter '{excerpt(unknown[0])}'. Accepted: {', '.join(sorted(CREATE_FIELDS))}.",
                code="unknown_parameter", param=unknown[0][:100])
        endpoint_input = body.get("endpoint")
        endpoint = rules.parse_endpoint(endpoint_input)
        window = rules.parse_completion_window(body.get("completion_window"))
        metadata = rules.parse_metadata(body.get("metadata"))
        session_id = rules.parse_session_id(body.get("session_id"))
        webhook = rules.parse_webhook(body.get("webhook"), allow_local_http=self.allow_local_webhooks)
        prefs = rules.parse_provider_preferences(body.get("provider"))
        input_file_id = body.get("input_file_id")
        inline = body.get("requests")
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise InvalidRequest("'dry_run' must be true or false.", code="invalid_type", param="dry_run")
        output_expires_after = rules.parse_expires_after(body.get("output_expires_after"), "output_expires_after")
        if output_expires_after is None:
            output_expires_after = self.files.retention.output_files_seconds
        execution = body.get("execution", "auto")
        if execution not in EXECUTION_MODES:
            raise InvalidRequest(f"Invalid 'execution' {excerpt(repr(execution))}: use \"auto\", \"managed\" or "
                                 "\"native\".",
                                 code="invalid_value", param="execution")
        if execution == "auto" and (window < DAY or not self.batch_api):
            execution = "managed"  # auto needs a 24h window and providers with a batch API
        # What an explicitly native batch costs is the providers' batch price; `auto` is resolved only at
        # validation, so its hold and preview stay at the standard price (an upper bound either way).
        plan = BATCH if execution == "native" else STANDARD
        if input_file_id is not None and inline is not None:
            raise InvalidRequest("Give either 'input_file_id' or inline 'requests', not both.",
                                 code="conflicting_parameters", param="requests")
        inline_file: str | None = None
        if inline is not None:
            data = self._inline_bytes(inline)
            if dry_run:
                return await self._dry_run(workspace_id, endpoint, prefs, _once(data), plan)
            inline_file = input_file_id = (await self.files.create_from_bytes(
                workspace_id, data, filename="inline_requests.jsonl", purpose="batch")).id
        elif input_file_id is not None and not isinstance(input_file_id, str):
            raise InvalidRequest(f"'input_file_id' must be a file id string, got {type(input_file_id).__name__}.",
                                 code="invalid_type", param="input_file_id")
        elif not input_file_id:
            raise InvalidRequest("Missing required parameter 'input_file_id' (or give inline 'requests').",
                                 code="missing_required_parameter", param="input_file_id")
        try:
            record = await self._create_from(workspace_id, body, input_file_id, endpoint, window, metadata,
                                             session_id, webhook, prefs, dry_run, output_expires_after, execution)
        except BaseException:
            # Nothing half-created: whatever refused the batch (a native check, the credit hold, a storage
            # error), the file made from its inline rows goes too.
            if inline_file is not None:
                with contextlib.suppress(Exception):
                    await self.files.delete(workspace_id, inline_file)
            raise
        if isinstance(record, BatchRecord) and self.executor is not None:
            self.executor.submitted(record)
        return record

    async def _create_from(
        self, workspace_id: str, body: dict[str, Any], input_file_id: str, endpoint: str, window: int,
        metadata: dict[str, str] | None, session_id: str | None, webhook: dict[str, Any] | None,
        prefs: dict[str, Any] | None, dry_run: bool, output_expires_after: int | None, execution: str,
    ) -> BatchRecord | dict[str, Any]:
        file = await self.files.get(workspace_id, input_file_id, param="input_file_id")
        if file.purpose != "batch":
            raise InvalidRequest(
                f"File '{input_file_id}' has purpose '{file.purpose}'; batch input files need purpose 'batch'.",
                code="invalid_file_purpose", param="input_file_id")
        plan = BATCH if execution == "native" else STANDARD  # as in create()
        if dry_run:
            return await self._dry_run(workspace_id, endpoint, prefs, self.files.blobs.read(file.blob_key), plan)
        scanned: LineValidator | None = None
        if execution == "native":
            scanned = await self._check_native(endpoint, prefs, self.files.blobs.read(file.blob_key))
        hold: int | None = None
        balance, _held = await self.store.ledger.account(workspace_id)
        if balance is not None:  # a limited account: hold an upper bound of the cost now, or refuse
            if scanned is None:
                scanned = await self._scan(endpoint, prefs, self.files.blobs.read(file.blob_key), plan=plan)
            hold = scanned.estimated_nanos
        now = self.clock.now()
        values = {
            "id": ids.batch_id(), "workspace_id": workspace_id, "request_id": ids.gateway_request_id(),
            "endpoint": endpoint, "endpoint_input": str(body.get("endpoint")),
            "status": BatchStatus.VALIDATING.value,
            "input_file_id": input_file_id,
            "completion_window": rules.completion_window_text(body.get("completion_window")),
            "created_at": int(now), "expires_at": int(now) + window, "total": 0, "completed": 0, "failed": 0,
            "input_tokens": 0, "output_tokens": 0, "metadata": metadata, "session_id": session_id,
            "webhook": webhook, "provider_prefs": prefs, "updated_at": now, "estimated_nanos": hold or 0,
            "execution": execution, "output_expires_after": output_expires_after,
        }
        return await self.store.batches.insert(values, hold_nanos=hold)

    async def _check_native(self, endpoint: str, prefs: dict[str, Any] | None,
                            chunks: AsyncIterator[bytes]) -> LineValidator:
        """`execution: "native"` needs every line's provider to have a batch API: else 400 naming one line's
        model and provider (lines that fail validation are left to the batch's own validation). Returns the scan,
        priced at the batch plan (the hold of a limited workspace reuses it)."""
        assert self.router is not None
        if not self.batch_api:
            raise InvalidRequest("'execution' is \"native\" but no provider has a batch API enabled "
                                 "(set batch_api = true on an openai or anthropic [[providers]] entry).",
                                 code="native_unavailable", param="execution")
        validator = await self._scan(endpoint, prefs, chunks, plan=BATCH)
        for model in validator.models:
            provider, _reason = self.router.route(model, prefs)
            if provider is not None and provider not in self.batch_api:
                raise InvalidRequest(
                    f"'execution' is \"native\" but model '{model}' is served by provider '{provider}', which "
                    f"has no batch API enabled (providers with one: {', '.join(sorted(self.batch_api))}). Use "
                    "\"managed\" or \"auto\", or route the model to one of those.",
                    code="native_unavailable", param="execution")
        return validator

    def _inline_bytes(self, inline: Any) -> bytes:
        if not isinstance(inline, list):
            raise InvalidRequest("'requests' must be a list of request lines {custom_id, method, url, body}.",
                                 code="invalid_type", param="requests")
        if len(inline) > self.max_lines:
            raise InvalidRequest(f"'requests' has {len(inline)} rows; at most {self.max_lines} per batch.",
                                 code="too_many_tasks", param="requests")
        lines = []
        for index, row in enumerate(inline):
            try:
                lines.append(orjson.dumps(row) + b"\n")
            except TypeError:  # parsed (orjson reads 1024 levels) but cannot be written back (255)
                raise InvalidRequest(f"'requests[{index}]' nests objects and arrays more than 255 levels deep.",
                                     code="invalid_value", param=f"requests[{index}]") from None
        return b"".join(lines)

    async def _scan(self, endpoint: str, prefs: dict[str, Any] | None, chunks: AsyncIterator[bytes],
                    expected: PricingLines | None = None, plan: str = STANDARD) -> LineValidator:
        """Validate and price the lines; `plan` "batch" for a batch that runs natively (at the providers'
        batch prices), so its hold and estimate are not twice what it can cost."""
        assert self.router is not None and self.pricer is not None
        return await scan(chunks, endpoint=endpoint, router=self.router, prefs=prefs,
                          pricer=self.pricer.with_plan(plan), max_lines=self.max_lines, max_errors=self.max_errors,
                          expected=expected)

    async def _dry_run(self, workspace_id: str, endpoint: str, prefs: dict[str, Any] | None,
                       chunks: AsyncIterator[bytes], plan: str = STANDARD) -> dict[str, Any]:
        """Validate and price without creating anything (our extension: `"dry_run": true`)."""
        expected = PricingLines()
        validator = await self._scan(endpoint, prefs, chunks, expected, plan)
        balance, held = await self.store.ledger.account(workspace_id)
        available = None if balance is None else balance - held
        errors = [e.as_dict() for e in validator.errors]
        estimate = validator.estimated_nanos
        return {
            "object": "batch.dry_run", "endpoint": endpoint, "valid": not errors,
            "errors": {"object": "list", "data": errors} if errors else None,
            "request_counts": {"total": validator.accepted}, "models": validator.models,
            "providers": validator.providers, "estimated_nanos": estimate, "estimated_usd": usd(estimate),
            "pricing_lines": expected.to_wire(), "expected_cost_nanos": expected.total_nanos(),
            "available_nanos": available, "would_be_refused": available is not None and estimate > available,
        }

    async def get(self, workspace_id: str, batch_id: str) -> BatchRecord:
        record = await self.store.batches.get(batch_id, workspace_id)
        if record is None:
            raise NotFound(f"No batch with id '{excerpt(batch_id)}' in this workspace.",
                           code="batch_not_found_or_not_owned", param="batch_id")
        return record

    async def list(
        self, workspace_id: str, *, after: str | None, limit: int, status: str | None, session_id: str | None = None,
        search: BatchSearch | None = None,
    ) -> tuple[list[BatchRecord], bool]:
        if status is not None and status not in {s.value for s in BatchStatus}:
            raise InvalidRequest(f"Unknown status filter '{excerpt(status)}'; use one of "
                                 + ", ".join(s.value for s in BatchStatus) + ".",
                                 code="invalid_status", param="status")
        for name, value in vars(search or BatchSearch()).items():
            if value is not None and len(value) > MAX_SEARCH_CHARS:
                raise InvalidRequest(f"'{name}' is {len(value):,} characters long; at most {MAX_SEARCH_CHARS}.",
                                     code="invalid_value", param=name)
        return await self.store.batches.page(workspace_id, after=after, limit=limit, status=status,
                                             session_id=session_id, search=search)

    async def requests(
        self, workspace_id: str, batch_id: str, *, limit: int, offset: int, status: str | None
    ) -> tuple[builtins.list[dict[str, Any]], bool]:
        """The request log of a batch: one row per upstream attempt."""
        ensure_rows_kept(await self.get(workspace_id, batch_id), "request log")
        if status is not None and status not in ("success", "error") and not _HTTP_STATUS.fullmatch(status):
            # ASCII only: str.isdigit() also takes "²" (int() refuses it) and 30-digit numbers overflow the column
            raise InvalidRequest(f"Unknown status filter '{excerpt(status)}'; use success, error or an HTTP status "
                                 "code (100-599).", code="invalid_status", param="status")
        return await self.store.request_log.page(workspace_id, batch_id, limit=limit, offset=offset, status=status)

    async def generation(self, workspace_id: str, request_id: str) -> dict[str, Any]:
        entry = await self.store.request_log.entry(workspace_id, request_id)
        if entry is None:
            raise NotFound(f"No request '{excerpt(request_id)}' in this workspace.",
                           code="generation_not_found_or_not_owned",
                           param="request_id")
        return entry

    async def cancel(self, workspace_id: str, batch_id: str) -> BatchRecord:
        record = await self.get(workspace_id, batch_id)
        for _ in range(3):
            if record.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
                return record  # cancelling twice is harmless: answer with the batch as it is
            if record.status not in CANCELLABLE:
                raise Conflict(f"Batch '{batch_id}' is already {record.status.value}; only validating or "
                               "in_progress batches can be cancelled.", code="batch_not_cancellable",
                               param="batch_id")
            try:
                record = await self.store.batches.transition(record.id, record.status, BatchStatus.CANCELLING,
                                                     self.clock.now())
            except StaleTransition:
                record = await self.get(workspace_id, batch_id)
                continue
            if self.executor is not None:
                self.executor.halt(record.id, BatchStatus.CANCELLED, record.endpoint)
            return record
        return record


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
