"""How a batch runs: the execution modes, which one a batch gets, and which price plan its lines pay. Pure.

    auto ──(create: window ≥ 24h and some provider has a batch API)──► auto ──(validation)──► native | managed
         └─(otherwise)────────────────────────────────────────────────► managed
    native ──(validation: every line's provider still has a batch API)──► native, else managed

`managed`: the executor sends every line itself, at the providers' standard prices. `native`: the lines run as
provider batches (executor/native.py), at the providers' batch prices. The providers' batch APIs promise their
results within 24 hours, so `auto` goes native only when the batch's own completion window allows that long.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum

# The price plans of the catalog (pricing/catalog.py reads its [plans] by these names).
STANDARD = "standard"
BATCH = "batch"

NATIVE_WINDOW_SECONDS = 24 * 3600  # what the providers' batch APIs need (they promise results within 24h)


class ExecutionMode(StrEnum):
    AUTO = "auto"
    MANAGED = "managed"
    NATIVE = "native"

    @classmethod
    def of(cls, stored: str | None) -> ExecutionMode:
        """A stored mode; rows from before modes existed (None) and unknown words ran managed."""
        try:
            return cls(stored) if stored is not None else cls.MANAGED
        except ValueError:
            return cls.MANAGED


def native_window(window_seconds: int) -> bool:
    """The rule "native needs a 24h window": whether a completion window leaves the providers their 24h."""
    return window_seconds >= NATIVE_WINDOW_SECONDS


def provider_window(window_seconds: int, completion_window: str) -> str:
    """The completion window a provider batch is created with: the providers' own 24h when ours allows it."""
    return "24h" if native_window(window_seconds) else completion_window


def at_create(requested: ExecutionMode, window_seconds: int, any_batch_api: bool) -> ExecutionMode:
    """The mode stored at create: `auto` becomes `managed` at once when it can never run natively (a window
    under 24h, or no provider with a batch API); otherwise it stays `auto` until validation sees the lines."""
    if requested is ExecutionMode.AUTO and not (any_batch_api and native_window(window_seconds)):
        return ExecutionMode.MANAGED
    return requested


def resolve(requested: str | None, window_seconds: int, providers: Collection[str],
            batch_api: Collection[str]) -> ExecutionMode:
    """The mode a validated batch runs in, from the providers its lines route to. `auto`: native exactly when
    every line's provider has a batch API enabled and the window allows 24h; `native` as asked unless a
    provider lost its batch API since create (then we run it ourselves); else managed."""
    mode = ExecutionMode.of(requested)
    if mode is ExecutionMode.MANAGED:
        return mode
    usable = bool(providers) and all(p in batch_api for p in providers)
    if mode is ExecutionMode.NATIVE:
        return ExecutionMode.NATIVE if usable else ExecutionMode.MANAGED
    return ExecutionMode.NATIVE if usable and native_window(window_seconds) else ExecutionMode.MANAGED


def pricing_plan(mode: str | None) -> str:
    """The rule "native lines are priced at the batch plan": the catalog plan a batch's lines (and their
    estimate and hold) are priced with. `auto` is priced standard until resolved (an upper bound either way)."""
    return BATCH if ExecutionMode.of(mode) is ExecutionMode.NATIVE else STANDARD
