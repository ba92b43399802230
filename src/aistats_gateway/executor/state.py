"""What the executor holds in memory: a leased line on its way (`Work`) and a batch it works on (`BatchState`).

Only an accelerator: the database is the truth, and the executor rebuilds all of this from it at start.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.executor.lanes import Lane
from aistats_gateway.providers.base import Provider
from aistats_gateway.storage.records import ItemRecord


@dataclass
class Work:
    item: ItemRecord
    endpoint: str
    body: bytes  # the request body (the item row's own, or read from the input file)
    attempts: int = 0  # non-429 attempts at the current provider
    throttles: int = 0
    tried: set[str] | None = None  # providers this item fell back from


@dataclass
class BatchState:
    """What the executor holds in memory for one batch it is working on."""

    endpoint: str
    workspace_id: str = ""
    session_id: str | None = None
    outstanding: int = 0  # leased here and not yet committed as settled (queued, in flight, waiting)
    exhausted: bool = False  # the last lease found nothing pending
    halt: BatchStatus | None = None  # CANCELLED or EXPIRED once a stop was requested
    timers: set[asyncio.TimerHandle] = field(default_factory=set)
    prefs: dict[str, Any] | None = None  # the batch's `provider` routing preferences
    routes: dict[str, tuple[float, list[Provider]]] = field(default_factory=dict)  # model -> (when, candidates)
    lanes: dict[str, Lane] = field(default_factory=dict)  # model -> the lane its lines went to last
    single_model: bool = False  # every line has the same model (the batch record says which)
    last_discovery: float = 0.0  # when a lease last looked past every full lane for lines of other models
