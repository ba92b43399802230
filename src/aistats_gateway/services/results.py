"""Result lines of settled items, as the output/error files and the live results stream show them.

One rendering for both, so a line read from `GET /v1/batches/{id}/results` while the batch runs is the
line the output or error file will hold (lines settled by a cancel or expiry are rendered here from
their error code).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aistats_gateway import ids
from aistats_gateway.bus import BatchBus
from aistats_gateway.domain.jsonl import error_line
from aistats_gateway.errors import InvalidRequest, excerpt
from aistats_gateway.storage.records import BatchRecord
from aistats_gateway.storage.schema import ITEM_SUCCEEDED
from aistats_gateway.storage.store import ItemResult, Store

HALT_MESSAGES = {
    "batch_cancelled": "The batch was cancelled before this request was processed.",
    "batch_expired": "The batch expired before this request could be processed (completion_window ran out).",
}
PAGE = 1000


def is_success(item: ItemResult) -> bool:
    return item.status == ITEM_SUCCEEDED and item.result is not None


def result_line(item: ItemResult) -> bytes:
    """The stored line, or the error line of an item that settled without an upstream answer."""
    if item.result is not None:
        return item.result
    code = item.error_code or "request_failed"
    return error_line(ids.batch_request_id(), item.custom_id, code, HALT_MESSAGES.get(code, "The request failed."))


async def cursor_of(store: Store, batch: BatchRecord, after: str | None) -> int:
    """The settle position after which to resume: that of the line whose custom_id is `after`."""
    if not after:
        return 0
    seq = await store.items.seq_of(batch.id, after)
    if seq is None:
        raise InvalidRequest(f"'after' names no line of batch {batch.id}: no custom_id '{excerpt(after)}'.",
                             code="invalid_cursor", param="after")
    if seq < 0:
        raise InvalidRequest(f"'after' names line '{after}', which has not settled yet.",
                             code="invalid_cursor", param="after")
    return seq


async def stream_results(
    store: Store, bus: BatchBus, batch: BatchRecord, *, cursor: int, follow: bool, idle_wait: float = 1.0
) -> AsyncIterator[bytes]:
    """NDJSON of every settled line after position `cursor`, in settle order; with `follow`, keeps
    streaming until the batch is terminal and every line has been sent."""
    sub = bus.subscribe(batch.id) if follow else None
    try:
        while True:
            current = await store.batches.get(batch.id) if follow else batch
            terminal = current is None or current.status.terminal
            page = await store.items.results_after(batch.id, cursor, PAGE)
            if page:
                cursor = page[-1][0]
                yield b"".join(result_line(item) + b"\n" for _, item in page)
                continue
            if not follow or terminal or sub is None:
                return
            sub.changed.clear()
            sub.armed = True
            try:
                await asyncio.wait_for(sub.changed.wait(), idle_wait)
            except TimeoutError:
                pass
    finally:
        if sub is not None:
            sub.close()
