"""Ingest: validate a batch's input file as a stream and turn every line into a durable item row.

Runs in the background after create (the batch is `validating` meanwhile). Re-runnable: it starts
by deleting any items an interrupted earlier run left, so a crash mid-ingest just means "ingest
again" at the next start. Rows are inserted in chunks while reading; the first invalid line stops
the inserting (but not the reading, so every error up to the cap is reported with its line).

An item row does not copy its body: it points at its raw line in the input file (byte offset and
length, from the splitter), and the executor reads the bodies back a leased page at a time
(storage/bodies.py). So the file is parsed once here and written to the database as ~100 bytes a line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from aistats_gateway.clock import Clock
from aistats_gateway.config import LimitsConfig
from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.execution import ExecutionMode, pricing_plan
from aistats_gateway.domain.jsonl import LineError, LineSplitter, LineValidator
from aistats_gateway.errors import StaleTransition
from aistats_gateway.pricing.pricer import Pricer
from aistats_gateway.providers.routing import Router
from aistats_gateway.storage.blobs import BlobStore
from aistats_gateway.storage.records import BatchRecord
from aistats_gateway.storage.store import ItemRef, Store
from aistats_gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)
CHUNK_ROWS = 5000  # rows per insert: large enough that the insert's round trips hide behind the parsing


async def ingest(
    batch: BatchRecord, *, store: Store, blobs: BlobStore, router: Router, limits: LimitsConfig, clock: Clock,
    pricer: Pricer, execution: Callable[[BatchRecord, list[str]], ExecutionMode] | None = None,
) -> BatchRecord | None:
    """Validate and store the items; move the batch to in_progress or failed.

    `execution(batch, providers)` resolves the batch's execution mode (managed | native) from the providers
    its lines route to (executor/native.py); without it (no provider has a batch API) every batch runs managed.

    Returns the updated batch, or None when someone else moved it meanwhile (a cancel).
    """
    current = await store.batches.get(batch.id)
    if current is None or current.status is not BatchStatus.VALIDATING:
        # A stale request (the housekeeper's sweep read `validating` just before an earlier ingest finished):
        # ingesting again would delete items that are already leased, sent or settled.
        return None
    await store.items.discard_ingest(batch.id)
    validator = _validator(batch, router, limits, pricer)
    # Its owner may have deleted it since create: the row and blob stay while this batch is unfinished.
    file = await store.files.get(batch.workspace_id, batch.input_file_id, include_deleted=True)
    errors: list[LineError]
    if file is None or not await blobs.exists(file.blob_key):
        errors = [LineError("input_file_missing",
                            f"The input file {batch.input_file_id} was deleted before the batch could read it.",
                            None, "input_file_id")]
    else:
        errors = await _store_items(batch.id, file.blob_key, validator, store, blobs)
    now = clock.now()
    try:
        if errors:
            return await _fail(batch, store, validator, errors, now)
        return await _start(batch, store, validator, now, execution)
    except StaleTransition:
        log.info("batch %s changed status during validation", batch.id)
        return None


def _validator(batch: BatchRecord, router: Router, limits: LimitsConfig, pricer: Pricer) -> LineValidator:
    """The batch's line rules: its endpoint, its provider preferences, its limits, and its pricing plan."""
    plan_pricer = pricer.with_plan(pricing_plan(batch.execution))
    return LineValidator(
        endpoint=batch.endpoint,
        route=lambda model: router.route(model, batch.provider_prefs),
        # A held batch keeps the estimate its hold was taken for (at create): pricing its lines again is wasted.
        # A batch that asked for native execution runs at the providers' batch prices.
        estimate=None if batch.reservation_id else (
            lambda provider, model, body: plan_pricer.estimate(provider, model, batch.endpoint, body)),
        max_lines=limits.max_batch_lines,
        max_errors=limits.max_validation_errors,
    )


async def _store_items(
    batch_id: str, blob_key: str, validator: LineValidator, store: Store, blobs: BlobStore,
) -> list[LineError]:
    """Stream the input file through `validator`, inserting the item rows in chunks while no line has failed;
    the validation errors (none: every item is stored)."""
    rows: list[ItemRef] = []
    splitter = LineSplitter()
    # One chunk is inserted (on the database thread) while the next is parsed (on the event loop).
    pending: asyncio.Task[None] | None = None

    async def flush(chunk: list[ItemRef]) -> None:
        nonlocal pending
        if pending is not None:
            await pending
            pending = None
        if chunk:
            pending = asyncio.create_task(store.items.insert_refs(batch_id, chunk))

    async def take(lines: Iterable[tuple[int, int, bytes]]) -> None:
        nonlocal rows
        feed, append = validator.feed, rows.append
        for line_no, offset, raw in lines:
            valid = feed(line_no, raw)
            if valid is not None and not validator.error_count:
                append((line_no, valid.custom_id, valid.model, valid.provider, offset, len(raw)))
        if validator.error_count:
            rows.clear()
        elif len(rows) >= CHUNK_ROWS:
            chunk, rows = rows, []
            await flush(chunk)

    try:
        async for chunk in blobs.read(blob_key):
            await take(splitter.feed_at(chunk))
            # Let the loop run between chunks (a local read never waits): the insert task moves on meanwhile
            # (SQLite inserts on its own thread while we parse), and so do the API and the executor.
            await asyncio.sleep(0)
        await take(splitter.finish_at())
        errors = validator.finish()
        await flush(rows if not errors else [])
        await flush([])
    finally:
        if pending is not None and not pending.done():
            await cancel_and_wait([pending])
    return errors


async def _fail(
    batch: BatchRecord, store: Store, validator: LineValidator, errors: list[LineError], now: float,
) -> BatchRecord | None:
    """Drop whatever items were stored and fail the batch with the (capped) list of line errors."""
    await store.items.discard_ingest(batch.id)
    message = f"{validator.error_count} line(s) failed validation"
    if validator.error_count > len(errors):
        message += f"; the first {len(errors)} are listed"
    return await store.batches.transition(
        batch.id, BatchStatus.VALIDATING, BatchStatus.FAILED, now,
        errors=[e.as_dict() for e in errors], status_reason=message,
    )


async def _start(
    batch: BatchRecord, store: Store, validator: LineValidator, now: float,
    execution: Callable[[BatchRecord, list[str]], ExecutionMode] | None,
) -> BatchRecord | None:
    """Record what validation learnt (line count, the one model/provider, execution mode, estimate) and move
    the batch to in_progress."""
    models = list(validator.models)
    providers = list(validator.providers)
    summary: dict[str, object] = {"total": validator.accepted, "model": models[0] if len(models) == 1 else None,
                                  "provider": providers[0] if len(providers) == 1 else None}
    summary["execution"] = (execution(batch, providers) if execution is not None else ExecutionMode.MANAGED).value
    if not batch.reservation_id:  # a held batch keeps the estimate its hold was taken for
        summary["estimated_nanos"] = validator.estimated_nanos
    # Stored before the status moves, so a batch cancelled during validation still counts its lines.
    await store.batches.update_fields(batch.id, **summary)
    return await store.batches.transition(batch.id, BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, now)
