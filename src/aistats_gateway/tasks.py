"""Stopping background tasks: the one way every service here ends the tasks it started.

Cancel them all first, then wait for each: cancelling one at a time would let the others run on (and
start more work) while the first unwinds. A task's own failure is not the stopper's business (each task
logs what went wrong where it ran), so it is swallowed here rather than aborting the shutdown half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel every task (None entries are skipped), then wait until each has ended."""
    pending = [task for task in tasks if task is not None]
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
