"""Batch objects as routes and the stream serve them: the record plus its webhook delivery state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aistats_gateway.api import wire
from aistats_gateway.storage.records import BatchRecord

if TYPE_CHECKING:
    from aistats_gateway.app import Gateway


async def batch_view(gw: Gateway, record: BatchRecord, base_url: str) -> dict[str, Any]:
    state = await gw.store.webhook_state(record.id) if record.webhook else None
    return wire.batch_object(record, base_url, state)
