"""Named crash points for durability tests: when armed, the process dies abruptly right there.

Armed only through the `AISTATS_FAILPOINTS` setting (a test harness sets it on a gateway subprocess):
a comma-separated list of `name` (die the first time the point is reached) or `name:N` (die the N-th
time). Dying is `os._exit(86)`: no cleanup, no flush, no finally blocks — what a power cut or SIGKILL
leaves behind. Unarmed points cost one dict lookup. Points reached through `stall()` can instead be armed
as `name~SECONDS`: the task that reaches them waits that long there (every time) while the rest of the
process runs on — a race window as a loaded machine opens it, made wide and certain.

Points:
    after_lease             items leased, before any is sent upstream
    after_upstream          an upstream answer is in memory, before its result is committed
    after_settle            a group of results committed, before the batch is finalized
    mid_output_write        half-way through writing a batch's output file
    before_publish          output/error files written, before the status change that publishes them
    after_publish           the terminal status (and its billing settlement) committed
    after_event_claimed     a webhook event claimed for delivery, before it is sent
    native_before_create    a native job's create attempt is recorded, before the provider is called
    native_after_create     the provider created the batch, before its id is stored
    native_before_finish    (stall) every line of a native batch is settled, before the runner finalizes it
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

EXIT_CODE = 86
log = logging.getLogger(__name__)
KNOWN = frozenset({"after_lease", "after_upstream", "after_settle", "mid_output_write", "before_publish",
                   "after_publish", "after_event_claimed",
                   "native_before_create", "native_after_create", "native_before_finish"})


class Failpoints:
    def __init__(self, spec: str | None = None) -> None:
        self._armed: dict[str, int] = {}
        self._hits: dict[str, int] = {}
        self._stalls: dict[str, float] = {}
        for part in (spec or "").split(","):
            part = part.strip()
            if not part:
                continue
            if "~" in part:
                name, _, seconds = part.partition("~")
                if name not in KNOWN:
                    raise ValueError(f"unknown failpoint '{name}'; known: {', '.join(sorted(KNOWN))}")
                self._stalls[name] = float(seconds)
                continue
            name, _, count = part.partition(":")
            if name not in KNOWN:
                raise ValueError(f"unknown failpoint '{name}'; known: {', '.join(sorted(KNOWN))}")
            self._armed[name] = int(count) if count else 1

    @property
    def armed(self) -> bool:
        return bool(self._armed or self._stalls)

    async def stall(self, name: str) -> None:
        """Wait here if `name` is armed as a stall; else the same as `hit`."""
        seconds = self._stalls.get(name)
        if seconds is None:
            self.hit(name)
            return
        log.warning("failpoint %s: stalling %.1f s", name, seconds)
        await asyncio.sleep(seconds)

    def hit(self, name: str) -> None:
        target = self._armed.get(name)
        if target is None:
            return
        self._hits[name] = self._hits.get(name, 0) + 1
        if self._hits[name] >= target:
            print(f"FAILPOINT {name} fired (hit {self._hits[name]}): exiting abruptly", file=sys.stderr, flush=True)
            os._exit(EXIT_CODE)


NONE = Failpoints()
