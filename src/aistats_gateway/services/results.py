"""Result lines of settled items, as the output/error files and the live results stream show them.

One rendering for both, so a line read from `GET /v1/batches/{id}/results` while the batch runs is the
line the output or error file will hold (lines settled by a cancel or expiry are rendered here from
their error code).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aistats_gateway.bus import BatchBus
from aistats_gateway.errors import InvalidRequest, excerpt
from aistats_gateway.storage.records import BatchRecord
from aistats_gateway.storage.store import Store

PAGE = 1000


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
                yield b"".join(item.rendered() + b"\n" for _, item in page)
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
