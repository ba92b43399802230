"""`aistats batch …` — submit, watch, list, show, cancel and fetch results, through the SDK only.

Talks to any gateway over HTTP (`--base-url`/AISTATS_BASE_URL, `--api-key`/AI_STATS_API_KEY or
AISTATS_API_KEY). Every command takes `--json` for scripts. Exit codes: 0 ok; 1 the batch ended
failed, expired or cancelled (with --wait, or watch); 2 usage error or request rejected (4xx);
3 gateway unreachable or failing (5xx).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Column, Table

from aistats import AIStats, APIConnectionError, APIError, Batch

app = typer.Typer(help="Work with batches on a gateway (through the SDK).", no_args_is_help=True)
console = Console(stderr=True, highlight=False)
out = Console(highlight=False)
T = TypeVar("T")
TERMINAL = ("completed", "failed", "expired", "cancelled")


def _client(ctx: typer.Context) -> AIStats:
    client: AIStats = ctx.obj
    return client


@app.callback()
def _options(
    ctx: typer.Context,
    base_url: str = typer.Option(None, envvar="AISTATS_BASE_URL", help="Gateway base URL incl. /v1."),
    api_key: str = typer.Option(None, envvar=["AI_STATS_API_KEY", "AISTATS_API_KEY"], help="API key."),
) -> None:
    try:
        ctx.obj = AIStats(api_key=api_key, base_url=base_url or "http://127.0.0.1:8787/v1")
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


def _fail(exc: APIError) -> typer.Exit:
    """The message and exit code for an SDK error: 3 unreachable or 5xx, 2 for a rejected request."""
    if isinstance(exc, APIConnectionError):
        console.print(f"[red]cannot reach the gateway:[/red] {exc}")
        return typer.Exit(3)
    where = f" (param: {exc.param})" if exc.param else ""
    console.print(f"[red]{exc.status_code} {exc.code}:[/red] {exc.message}{where}")
    return typer.Exit(2 if exc.status_code and exc.status_code < 500 else 3)


def _call(fn: Callable[[], T]) -> T:
    """Run an SDK call, turning its errors into a message and a meaningful exit code."""
    try:
        return fn()
    except APIError as exc:
        raise _fail(exc) from exc


def _print_json(value: Any) -> None:
    print(json.dumps(value), flush=True)


def _metadata(pairs: list[str]) -> dict[str, str] | None:
    meta: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            console.print(f"[red]--metadata needs key=value, got '{pair}'[/red]")
            raise typer.Exit(2)
        meta[key] = value
    return meta or None


def _summary(batch: Batch) -> None:
    counts = batch.request_counts
    color = {"completed": "green", "failed": "red", "expired": "yellow", "cancelled": "yellow"}.get(batch.status)
    console.print(f"[bold {color or 'white'}]{batch.id} {batch.status}[/] — {counts.completed} completed, "
                  f"{counts.failed} failed of {counts.total}")
    if batch.get("errors"):
        for err in batch.errors.data[:10]:
            line = f"line {err.line}: " if err.get("line") else ""
            console.print(f"  [red]{line}{err.code}[/red] {err.message}")
    for label, key in (("output", "output_file_id"), ("errors", "error_file_id")):
        if batch.get(key):
            console.print(f"  {label}: {batch[key]}  (aistats batch results {batch.id}"
                          f"{' --errors' if label == 'errors' else ''} -o {label}.jsonl)")


@contextmanager
def _progress(batch: Batch) -> Iterator[Callable[[Batch], None]]:
    columns = [TextColumn("[bold]{task.fields[status]:<11}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[done]}/{task.fields[lines]} done, {task.fields[failed]} failed"),
               TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn()]
    start = time.monotonic()
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("batch", total=max(1, batch.request_counts.total), status=batch.status,
                                 done=0, failed=0, lines=batch.request_counts.total, rate="")

        def update(current: Batch) -> None:
            counts = current.request_counts
            settled = counts.completed + counts.failed
            elapsed = max(1e-6, time.monotonic() - start)
            progress.update(task, total=max(1, counts.total), completed=settled, status=current.status,
                            done=counts.completed, failed=counts.failed, lines=counts.total,
                            rate=f"{settled / elapsed:,.0f}/s" if settled else "")

        yield update


def _follow(client: AIStats, batch: Batch, as_json: bool) -> Batch:
    """Watch to the end: a live progress bar (or NDJSON events with --json)."""
    if batch.status in TERMINAL:
        return batch
    final = batch
    if as_json:
        for event in _call(lambda: client.batches.stream(batch.id, interval_ms=1000)):
            print(json.dumps(event), flush=True)
            if event.get("data"):
                final = Batch(event["data"])
        return final if final.status in TERMINAL else _call(lambda: client.batches.wait(batch.id))
    with _progress(batch) as update:
        try:
            for event in client.batches.stream(batch.id, interval_ms=1000):
                if event.get("data"):
                    final = Batch(event["data"])
                    update(final)
        except APIConnectionError:
            pass
        if final.status not in TERMINAL:
            final = _call(lambda: client.batches.wait(batch.id))
            update(final)
    return final


def _exit_for(batch: Batch) -> None:
    if batch.status != "completed":
        raise typer.Exit(1)


@app.command()
def submit(
    ctx: typer.Context,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="JSONL file of requests."),
    endpoint: str = typer.Option(..., "--endpoint", "-e", help="e.g. /v1/chat/completions or responses."),
    window: str = typer.Option("24h", "--window", help="completion_window, e.g. 24h or 90m."),
    session: str = typer.Option(None, "--session", help="session_id to group batches and logs."),
    metadata: list[str] = typer.Option([], "--metadata", "-m", help="key=value (repeatable)."),
    wait: bool = typer.Option(False, "--wait", help="Show live progress until the batch ends."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Upload a JSONL file and create a batch from it."""
    client = _client(ctx)
    uploaded = _call(lambda: client.files.create(file=file, purpose="batch"))
    batch = _call(lambda: client.batches.create(endpoint=endpoint, input_file_id=uploaded.id,
                                                completion_window=window, session_id=session,
                                                metadata=_metadata(metadata)))
    if not as_json:
        console.print(f"created [bold]{batch.id}[/bold] from {file.name} ({uploaded.bytes:,} bytes, {uploaded.id})")
    if wait:
        batch = _follow(client, batch, as_json)
        if as_json:
            _print_json(batch)
        else:
            _summary(batch)
        _exit_for(batch)
    elif as_json:
        _print_json(batch)
    else:
        console.print(f"follow it with: aistats batch watch {batch.id}")


@app.command()
def watch(ctx: typer.Context, batch_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Live progress of a batch until it ends (exit 1 unless it completed)."""
    client = _client(ctx)
    batch = _follow(client, _call(lambda: client.batches.get(batch_id)), as_json)
    if as_json:
        _print_json(batch)
    else:
        _summary(batch)
    _exit_for(batch)


@app.command("ls")
def list_batches(
    ctx: typer.Context,
    status: str = typer.Option(None, help="Only batches in this status."),
    limit: int = typer.Option(20, min=1, max=100),
    after: str = typer.Option(None, help="Cursor: the last id of the previous page."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List batches, newest first."""
    page = _call(lambda: _client(ctx).batches.list(limit=limit, status=status, after=after))
    if as_json:
        _print_json(page)
        return
    table = Table("status", "progress", "done/failed/total", "model", "session", "created")
    table.columns.insert(0, Column("id", no_wrap=True))
    for b in page.data:
        c = b.request_counts
        table.add_row(b.id, b.status, f"{b.get('progress', 0)}%", f"{c.completed}/{c.failed}/{c.total}",
                      b.get("model") or "-", b.get("session_id") or "-",
                      time.strftime("%m-%d %H:%M", time.localtime(b.created_at)))
    out.print(table)
    if page.has_more:
        console.print(f"more: aistats batch ls --after {page.last_id}")


@app.command()
def show(ctx: typer.Context, batch_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """One batch: status, counts, files, errors."""
    batch = _call(lambda: _client(ctx).batches.get(batch_id))
    if as_json:
        _print_json(batch)
    else:
        _summary(batch)


@app.command()
def cancel(ctx: typer.Context, batch_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Cancel a batch; finished results are kept."""
    batch = _call(lambda: _client(ctx).batches.cancel(batch_id))
    if as_json:
        _print_json(batch)
    else:
        console.print(f"{batch.id} is {batch.status}")


@app.command()
def results(
    ctx: typer.Context,
    batch_id: str,
    output: Path = typer.Option(None, "--output", "-o", help="Write here instead of standard output."),
    errors: bool = typer.Option(False, "--errors", help="Only failed lines."),
    follow: bool = typer.Option(False, "--follow", help="Keep streaming until the batch ends."),
    as_json: bool = typer.Option(False, "--json", help="(results are always JSON lines)"),
) -> None:
    """Result lines (OpenAI output format) settled so far — also while the batch runs."""
    client = _client(ctx)
    sink = output.open("w") if output else sys.stdout
    count = 0
    try:
        for line in _take(client, batch_id, follow):
            failed = line.get("error") is not None or not 200 <= ((line.get("response") or {}).get(
                "status_code") or 0) < 300
            if errors and not failed:
                continue
            sink.write(json.dumps(line) + "\n")
            count += 1
    finally:
        if output:
            sink.close()
    if output:
        console.print(f"wrote {count} line(s) to {output}")


def _take(client: AIStats, batch_id: str, follow: bool) -> Iterator[dict[str, Any]]:
    try:
        yield from client.batches.results(batch_id, follow=follow)
    except APIError as exc:
        raise _fail(exc) from exc
