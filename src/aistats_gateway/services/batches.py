"""Batches: create (from a file or inline rows), read, list and cancel, within one workspace.

Create checks the body synchronously (400/404 with the field named) and stores the batch as
`validating`; the executor validates the lines in the background. Cancel is a compare-and-set
to `cancelling`; the executor stops sending and finalizes with every finished result kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aistats_gateway import ids
from aistats_gateway.clock import Clock
from aistats_gateway.domain import execution
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.create_batch import CreateBatch
from aistats_gateway.domain.execution import STANDARD, ExecutionMode
from aistats_gateway.domain.idempotency import IdempotencyKey, replay_of
from aistats_gateway.domain.jsonl import LineValidator
from aistats_gateway.domain.transitions import CANCELLABLE
from aistats_gateway.errors import Conflict, InvalidRequest, NotFound, StaleTransition, excerpt
from aistats_gateway.executor.service import Executor
from aistats_gateway.pricing.calculator import PricingLines, usd
from aistats_gateway.pricing.pricer import Pricer
from aistats_gateway.providers.routing import Router
from aistats_gateway.services.estimates import scan
from aistats_gateway.services.files import FileService
from aistats_gateway.services.webhook_endpoints import check_batch_endpoint
from aistats_gateway.storage.batches import BatchSearch
from aistats_gateway.storage.idempotency import KeyTaken
from aistats_gateway.storage.records import BatchRecord, FileRecord
from aistats_gateway.storage.store import Store

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

    def parse_create(self, body: dict[str, Any]) -> CreateBatch:
        """The create body checked field by field (400 naming the first bad one)."""
        return CreateBatch.parse(body, allow_local_webhooks=self.allow_local_webhooks, max_lines=self.max_lines,
                                 default_output_expiry=self.files.retention.output_files_seconds)

    def _mode(self, request: CreateBatch) -> ExecutionMode:
        return execution.at_create(request.execution, request.window.seconds, bool(self.batch_api))

    async def create_once(self, workspace_id: str, request: CreateBatch, key: IdempotencyKey | None
                          ) -> tuple[BatchRecord, bool]:
        """`create` with an optional Idempotency-Key: (the batch, whether an earlier request with this key and
        body created it — looked up before any work, and again if a racing request stored the key first)."""
        if key is None:
            return await self.create(workspace_id, request), False
        earlier = replay_of(await self.store.idempotency.get(workspace_id, key.key), key, self.clock.now())
        if earlier is None:
            try:
                return await self.create(workspace_id, request, key=key), False
            except KeyTaken as taken:
                earlier = replay_of(taken.stored, key, self.clock.now())
                if earlier is None:
                    raise
        return await self.get(workspace_id, earlier), True

    async def create(self, workspace_id: str, request: CreateBatch, *, key: IdempotencyKey | None = None,
                     lineage: dict[str, str] | None = None) -> BatchRecord:
        """Store the new batch as `validating` (its input file made from inline rows first, if given); the
        executor validates its lines in the background. With `key`, the key's row is written with the batch
        (KeyTaken, and nothing kept, if another request holds it); `lineage`: a retry's parent and root ids."""
        endpoint_id = (request.webhook or {}).get("endpoint_id")
        if endpoint_id:  # a registered endpoint: the workspace's own, and active
            check_batch_endpoint(await self.store.webhook_endpoints.get(workspace_id, endpoint_id), endpoint_id)
        inline_file: str | None = None
        input_file_id = request.input_file_id
        if request.inline is not None:
            inline_file = input_file_id = (await self.files.create_from_bytes(
                workspace_id, request.inline, filename="inline_requests.jsonl", purpose="batch")).id
        assert input_file_id is not None
        try:
            record = await self._create_from(workspace_id, request, input_file_id, key, lineage)
        except BaseException:
            # Nothing half-created: whatever refused the batch (a native check, the credit hold, a storage
            # error), the file made from its inline rows goes too.
            if inline_file is not None:
                with contextlib.suppress(Exception):
                    await self.files.delete(workspace_id, inline_file)
            raise
        if self.executor is not None:
            self.executor.submitted(record)
        return record

    async def dry_run(self, workspace_id: str, request: CreateBatch) -> dict[str, Any]:
        """Validate and price without creating anything (our extension: `"dry_run": true`). What an explicitly
        native batch costs is the providers' batch price; `auto` is resolved only at validation, so its
        preview stays at the standard price (an upper bound either way)."""
        plan = execution.pricing_plan(self._mode(request))
        if request.inline is not None:
            chunks = _once(request.inline)
        else:
            assert request.input_file_id is not None
            file = await self._input_file(workspace_id, request.input_file_id)
            chunks = self.files.blobs.read(file.blob_key)
        expected = PricingLines()
        validator = await self._scan(request.endpoint, request.prefs, chunks, expected, plan)
        balance, held = await self.store.ledger.account(workspace_id)
        available = None if balance is None else balance - held
        errors = [e.as_dict() for e in validator.errors]
        estimate = validator.estimated_nanos
        return {
            "object": "batch.dry_run", "endpoint": request.endpoint, "valid": not errors,
            "errors": {"object": "list", "data": errors} if errors else None,
            "request_counts": {"total": validator.accepted}, "models": validator.models,
            "providers": validator.providers, "estimated_nanos": estimate, "estimated_usd": usd(estimate),
            "pricing_lines": expected.to_wire(), "expected_cost_nanos": expected.total_nanos(),
            "available_nanos": available, "would_be_refused": available is not None and estimate > available,
        }

    async def _input_file(self, workspace_id: str, input_file_id: str) -> FileRecord:
        file = await self.files.get(workspace_id, input_file_id, param="input_file_id")
        if file.purpose != "batch":
            raise InvalidRequest(
                f"File '{input_file_id}' has purpose '{file.purpose}'; batch input files need purpose 'batch'.",
                code="invalid_file_purpose", param="input_file_id")
        return file

    async def _create_from(self, workspace_id: str, request: CreateBatch, input_file_id: str,
                           key: IdempotencyKey | None, lineage: dict[str, str] | None) -> BatchRecord:
        file = await self._input_file(workspace_id, input_file_id)
        mode = self._mode(request)
        scanned: LineValidator | None = None
        if mode is ExecutionMode.NATIVE:
            scanned = await self._check_native(request.endpoint, request.prefs, self.files.blobs.read(file.blob_key))
        hold: int | None = None
        balance, _held = await self.store.ledger.account(workspace_id)
        if balance is not None:  # a limited account: hold an upper bound of the cost now, or refuse
            if scanned is None:
                scanned = await self._scan(request.endpoint, request.prefs, self.files.blobs.read(file.blob_key),
                                           plan=execution.pricing_plan(mode))
            hold = scanned.estimated_nanos
        now = self.clock.now()
        values = {
            "id": ids.batch_id(), "workspace_id": workspace_id, "request_id": ids.gateway_request_id(),
            "endpoint": request.endpoint, "endpoint_input": request.endpoint_input,
            "status": BatchStatus.VALIDATING.value,
            "input_file_id": input_file_id,
            "completion_window": request.window.text,
            "created_at": int(now), "expires_at": int(now) + request.window.seconds, "total": 0, "completed": 0,
            "failed": 0, "input_tokens": 0, "output_tokens": 0, "metadata": request.metadata,
            "session_id": request.session_id, "webhook": request.webhook, "provider_prefs": request.prefs,
            "updated_at": now, "estimated_nanos": hold or 0, "execution": mode.value,
            "output_expires_after": request.output_expires_after, **(lineage or {}),
        }
        return await self.store.batches.insert(values, hold_nanos=hold, key=key)

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
        validator = await self._scan(endpoint, prefs, chunks, plan=execution.pricing_plan(ExecutionMode.NATIVE))
        for model in validator.models:
            provider, _reason = self.router.route(model, prefs)
            if provider is not None and provider not in self.batch_api:
                raise InvalidRequest(
                    f"'execution' is \"native\" but model '{model}' is served by provider '{provider}', which "
                    f"has no batch API enabled (providers with one: {', '.join(sorted(self.batch_api))}). Use "
                    "\"managed\" or \"auto\", or route the model to one of those.",
                    code="native_unavailable", param="execution")
        return validator

    async def _scan(self, endpoint: str, prefs: dict[str, Any] | None, chunks: AsyncIterator[bytes],
                    expected: PricingLines | None = None, plan: str = STANDARD) -> LineValidator:
        """Validate and price the lines; `plan` "batch" for a batch that runs natively (at the providers'
        batch prices), so its hold and estimate are not twice what it can cost."""
        assert self.router is not None and self.pricer is not None
        return await scan(chunks, endpoint=endpoint, router=self.router, prefs=prefs,
                          pricer=self.pricer.with_plan(plan), max_lines=self.max_lines, max_errors=self.max_errors,
                          expected=expected)

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
