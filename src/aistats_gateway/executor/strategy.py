"""Native execution as the executor sees it: one interface, given to the Executor at construction.

The executor leases and sends managed batches itself; a native batch (domain/execution.py) runs as provider
batches instead (executor/native.py, the `NativeRunner`). At every point where a batch could change hands the
executor asks its strategy first: `adopt` (resume, activate, the sweep), `halt` (cancel, expiry), `resolve`
(validation picks the mode), `start`/`stop` with the executor's own lifecycle. `start` also hands over
`finish`: a native batch's finalization target only the provider's outcome decides, so the strategy calls the
executor back when every line is settled. With no provider batch API configured the executor gets
`ManagedOnly`, which takes nothing, so no call site needs to ask whether native execution exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from aistats_gateway.domain.batch import BatchStatus
from aistats_gateway.domain.execution import ExecutionMode
from aistats_gateway.storage.records import BatchRecord

Finish = Callable[[str, BatchStatus], None]  # (batch id, target): finalize the batch now


class NativeExecution(Protocol):
    def resolve(self, batch: BatchRecord, providers: list[str]) -> ExecutionMode:
        """The mode a validated batch runs in, from the providers its lines route to."""
        ...

    def adopt(self, batch: BatchRecord, *, wake: bool = True) -> bool:
        """Take `batch` if it runs natively (True): the executor then leaves it alone, finalization included.
        `wake`: poll its provider batches now if it already runs here."""
        ...

    def halt(self, batch_id: str, target: BatchStatus) -> bool:
        """Cancel or expire a native batch running here (True): its provider batches are cancelled."""
        ...

    async def refresh(self, batch_id: str) -> None:
        """Reconcile a native batch with its provider now (a GET of the batch), when it is worth it."""
        ...

    async def start(self, finish: Finish) -> None:
        ...

    async def stop(self) -> None:
        """Stop this process's tasks; the provider batches keep running and are resumed at the next start."""
        ...


class ManagedOnly:
    """No provider batch API is configured: every batch runs managed, nothing is adopted."""

    def resolve(self, batch: BatchRecord, providers: list[str]) -> ExecutionMode:
        return ExecutionMode.MANAGED

    def adopt(self, batch: BatchRecord, *, wake: bool = True) -> bool:
        return False

    def halt(self, batch_id: str, target: BatchStatus) -> bool:
        return False

    async def refresh(self, batch_id: str) -> None:
        return None

    async def start(self, finish: Finish) -> None:
        return None

    async def stop(self) -> None:
        return None
