"""The CLI's live view of a running batch: the progress bar of `batch submit --wait` and `batch watch`.

Owns what the bar claims: the rate (`RateMeter`: lines settled per second over a sliding window of
what this process saw settle — never lines that had settled before it started watching), the ETA
derived from it, and the "reconnecting…" note while the gateway is away (the SDK's `follow()` polls
then, so the bar moves again as soon as the gateway answers). The rate and ETA are plain values that
unit tests compute without a terminal.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from aistats import Batch

WINDOW_SECONDS = 10.0  # long enough to smooth 1-second stream updates, short enough to follow a change of pace
MIN_SPAN_SECONDS = 1.0  # below this a rate is noise: show none yet


@dataclass
class RateMeter:
    """Lines settled per second over the last `window` seconds of observations (time, settled count)."""

    window: float = WINDOW_SECONDS
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def observe(self, now: float, settled: int) -> None:
        if self.samples and settled < self.samples[-1][1]:
            self.samples.clear()  # a count that went back (another batch, a reset): start over
        self.samples.append((now, settled))
        # keep one sample at or before the window's start, so the span covers the whole window
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()

    def rate(self) -> float | None:
        """None until observations span at least MIN_SPAN_SECONDS."""
        if len(self.samples) < 2:
            return None
        (t0, s0), (t1, s1) = self.samples[0], self.samples[-1]
        if t1 - t0 < MIN_SPAN_SECONDS:
            return None
        return (s1 - s0) / (t1 - t0)


def settled(batch: Batch) -> int:
    counts = batch.request_counts
    return int(counts.completed) + int(counts.failed)


@dataclass(frozen=True)
class LineCounts:
    """A batch's lines as the CLI reports them: `failed` are lines that ran and failed; lines the batch never
    ran (cancelled or expired first: the gateway's `request_counts` extensions) are `not_run`, not failures.
    An older gateway without the extensions reports every failure as `failed`."""

    total: int
    completed: int
    failed: int
    not_run: int
    why: str  # "cancelled", "expired", or both

    @classmethod
    def of(cls, batch: Batch) -> LineCounts:
        c = dict(batch.request_counts or {})
        cancelled, expired = int(c.get("cancelled") or 0), int(c.get("expired") or 0)
        failed = int(c.get("errored", int(c.get("failed") or 0) - cancelled - expired))
        why = " and ".join(name for name, n in (("cancelled", cancelled), ("expired", expired)) if n)
        return cls(int(c.get("total") or 0), int(c.get("completed") or 0), max(0, failed), cancelled + expired, why)

    @property
    def ran(self) -> int:
        """Lines that ran to the end (answered or failed): what the bar shows."""
        return self.completed + self.failed

    @property
    def percent(self) -> int:
        """Whole percent of the lines that ran (100 only when all did)."""
        if self.total <= 0:
            return 0
        return 100 if self.ran >= self.total else min(99, self.ran * 100 // self.total)

    def not_run_text(self) -> str:
        return f" · {self.not_run:,} not run ({self.why})" if self.not_run else ""


def eta(remaining: int, rate: float | None) -> str:
    """`H:MM:SS` left at `rate`, or `-:--:--` when there is no rate to go by."""
    if remaining <= 0:
        return "0:00:00"
    if not rate or rate <= 0:
        return "-:--:--"
    seconds = int(remaining / rate + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def rate_text(rate: float | None) -> str:
    if rate is None:
        return ""
    return f"{rate:,.0f}/s" if rate >= 10 else f"{rate:,.1f}/s"


@contextmanager
def progress_view(console: Console, batch: Batch,
                  clock: Callable[[], float] = time.monotonic) -> Iterator[Callable[[Batch | None, str], None]]:
    """A live bar on `console`; yields `update(batch, state)` to call for every `follow()` step."""
    columns = [TextColumn("[bold]{task.fields[status]:<11}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[done]}/{task.fields[lines]} done, {task.fields[failed]} failed"
                          "{task.fields[not_run]}"),
               TextColumn("{task.fields[rate]}"), TextColumn("ETA {task.fields[eta]}"),
               TextColumn("{task.fields[note]}")]
    meter = RateMeter()
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("batch", total=1, status="", done=0, failed=0, lines=0, rate="", eta="", note="",
                                 not_run="")
        shown = batch

        def update(current: Batch | None, state: str) -> None:
            nonlocal shown
            if current is not None:
                shown = current
                meter.observe(clock(), settled(current))
            counts = LineCounts.of(shown)
            rate = meter.rate()
            note = "[yellow]reconnecting…[/yellow]" if state == "reconnecting" else ""
            # the bar shows what ran: a batch cancelled at 15 % ends at 15 %, its other lines "not run"
            progress.update(task, total=max(1, counts.total), completed=counts.ran,
                            status=escape(str(shown.status)), done=counts.completed, failed=counts.failed,
                            lines=counts.total, rate=rate_text(rate), eta=eta(counts.total - settled(shown), rate),
                            note=note, not_run=counts.not_run_text())

        update(batch, "live")
        yield update
