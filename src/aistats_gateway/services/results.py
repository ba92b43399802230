"""Result lines of settled items, as the output/error files and the live results stream show them.

One rendering for both, so a line read from `GET /v1/batches/{id}/results` while the batch runs is the
line the output or error file will hold (lines settled by a cancel or expiry are rendered here from
their error code). Also the merged results of a retry chain (`?merged=true`): one line per custom_id of
the root's input, in its order, picked by `merged_pick` from every batch of the chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aistats_gateway.bus import BatchBus
from aistats_gateway.errors import InvalidRequest, excerpt
from aistats_gateway.storage.items import ItemResult
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


def merged_pick(outcomes: list[tuple[int, ItemResult]]) -> ItemResult | None:
    """A line's merged outcome from its settled outcomes across a chain, as (position of the batch in the chain,
    oldest first; item): the latest success anywhere, else the latest outcome; None if it never settled."""
    succeeded = [o for o in outcomes if o[1].succeeded]
    chosen = max(succeeded or outcomes, key=lambda o: o[0], default=None)
    return chosen[1] if chosen is not None else None


async def stream_merged(store: Store, chain: list[BatchRecord]) -> AsyncIterator[bytes]:
    """NDJSON: for every custom_id of the chain root's input (chain[0]), in input order, its merged outcome
    (lines settled nowhere yet are left out)."""
    root, retries = chain[0], chain[1:]
    position = {b.id: index for index, b in enumerate(chain)}
    after = 0
    while True:
        page = await store.items.settled_by_line(root.id, after, PAGE)
        if not page:
            return
        after = page[-1].line
        found: dict[str, list[tuple[int, ItemResult]]] = {item.custom_id: [(0, item)] for item in page}
        for batch_id, item in await store.items.settled_of([b.id for b in retries], list(found)):
            found[item.custom_id].append((position[batch_id], item))
        picked = (merged_pick(found[item.custom_id]) for item in page)
        yield b"".join(chosen.rendered() + b"\n" for chosen in picked if chosen is not None)
