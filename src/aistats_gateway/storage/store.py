"""The Store: one Database and the repositories over it, built together at start.

Owns nothing but their wiring: each aggregate's reads and writes live in its repository (workspaces.py,
files.py, batches.py, items.py with settlement.py, lines.py, ledger.py, outbox.py, usage.py, error_summary.py,
idempotency.py, webhook_endpoints.py; native_jobs.py over the same Database), and consumers take the repository
they need (`store.batches`, `store.items`, …).
Statuses change only through `Batches.transition()`, a compare-and-set; an item's outcome and its
batch's counters change in the same transaction (settlement.py). How SQLite and PostgreSQL differ is
said in dialects.py and in the repository that needs it.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from aistats_gateway.clock import Clock
from aistats_gateway.storage.batches import Batches
from aistats_gateway.storage.database import BatchListener, Database
from aistats_gateway.storage.dialects import create_engine
from aistats_gateway.storage.error_summary import ErrorSummaries
from aistats_gateway.storage.files import Files
from aistats_gateway.storage.idempotency import IdempotencyKeys
from aistats_gateway.storage.items import ItemRef, ItemResult, Items
from aistats_gateway.storage.ledger import Ledger
from aistats_gateway.storage.lines import Lines
from aistats_gateway.storage.outbox import Outbox
from aistats_gateway.storage.request_rows import RequestRows
from aistats_gateway.storage.settlement import Settlement
from aistats_gateway.storage.usage import RequestLog
from aistats_gateway.storage.webhook_endpoints import WebhookEndpoints
from aistats_gateway.storage.workspaces import Workspaces

__all__ = ["BatchListener", "ItemRef", "ItemResult", "Settlement", "Store", "create_engine"]


class Store:
    """`listeners` hear of every committed batch change: (new record, whether a webhook event was queued)."""

    def __init__(self, engine: AsyncEngine, *, webhook_max_attempts: int = 4, clock: Clock | None = None) -> None:
        self.db = Database(engine, clock)
        self.outbox = Outbox(self.db, webhook_max_attempts)
        self.workspaces = Workspaces(self.db)
        self.files = Files(self.db)
        self.batches = Batches(self.db, self.outbox)
        self.items = Items(self.db, self.outbox)
        self.ledger = Ledger(self.db)
        self.request_log = RequestLog(self.db)
        self.errors = ErrorSummaries(self.db)
        self.idempotency = IdempotencyKeys(self.db)
        self.request_rows = RequestRows(self.db)  # a read model over items and the request log
        self.webhook_endpoints = WebhookEndpoints(self.db)
        self.lines = Lines(self.db)  # the line inspector's reads over items and the request log

    @property
    def engine(self) -> AsyncEngine:
        return self.db.engine

    @property
    def listeners(self) -> list[BatchListener]:
        return self.db.listeners

    async def close(self) -> None:
        await self.db.close()
