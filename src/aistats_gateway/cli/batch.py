"""`aistats batch …` — submit, watch, list, show, cancel, retry and fetch results (also a chain's merged), via the SDK.

Talks to any gateway over HTTP (`--base-url`/AISTATS_BASE_URL, `--api-key`/AI_STATS_API_KEY or
AISTATS_API_KEY; given before or after the subcommand). Every command takes `--json` for scripts.
What a command answers goes to standard output (`show ID > f` works); progress and diagnostics go to
standard error. Text from the gateway, the config or the user is escaped before Rich prints it (a
hint naming `[[providers]]` must not be eaten as markup). Exit codes: 0 ok; 1 the batch ended failed,
expired or cancelled (with --wait, or watch); 2 usage error or request rejected (4xx); 3 gateway
unreachable or failing (5xx).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from aistats import AIStats, APIConnectionError, APIError, Batch
from aistats_gateway.cli.live import LineCounts, progress_view

app = typer.Typer(help="Work with batches on a gateway (through the SDK).", no_args_is_help=True)
console = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)  # no wrapping at 80 columns in a file (`show ID > f`)
T = TypeVar("T")
TERMINAL = ("completed", "failed", "expired", "cancelled")
DEFAULT_BASE_URL = "http://127.0.0.1:8787/v1"
ERRORS_SHOWN = 10

# The gateway options, accepted before the subcommand (with their environment variables) and after it
# (explicit only, so an environment variable never overrides a flag given before the subcommand).
BASE_URL_HELP = "Gateway base URL incl. /v1 (default AISTATS_BASE_URL or http://127.0.0.1:8787/v1)."
API_KEY_HELP = "API key (default AI_STATS_API_KEY or AISTATS_API_KEY)."
BaseUrl = typer.Option(None, "--base-url", help=BASE_URL_HELP)
ApiKey = typer.Option(None, "--api-key", help=API_KEY_HELP)
Json = typer.Option(False, "--json", help="Machine-readable output (JSON on standard output).")


@app.callback()
def _options(
    ctx: typer.Context,
    base_url: str = typer.Option(None, "--base-url", envvar="AISTATS_BASE_URL", help=BASE_URL_HELP),
    api_key: str = typer.Option(None, "--api-key", envvar=["AI_STATS_API_KEY", "AISTATS_API_KEY"], help=API_KEY_HELP),
) -> None:
    # The client is made by the command itself: `--help` and usage errors need no key.
    ctx.obj = {"base_url": base_url, "api_key": api_key}


def _client(ctx: typer.Context, base_url: str | None, api_key: str | None) -> AIStats:
    given = ctx.obj or {}
    url = base_url or given.get("base_url") or DEFAULT_BASE_URL
    ctx.obj = {**given, "base_url": url}
    try:
        return AIStats(api_key=api_key or given.get("api_key"), base_url=url)
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/red] (or pass --api-key)")
        raise typer.Exit(2) from exc


def base_url_hint(base_url: str, status: int | None) -> str | None:
    """A 404 from a base URL that does not end in /v1 is most likely the missing /v1."""
    if status == 404 and not base_url.rstrip("/").endswith("/v1"):
        return f"hint: the base URL usually ends in /v1, e.g. {base_url.rstrip('/')}/v1"
    return None


def _fail(exc: APIError) -> typer.Exit:
    """The message and exit code for an SDK error: 3 unreachable or 5xx, 2 for a rejected request."""
    if isinstance(exc, APIConnectionError):
        console.print(f"[red]cannot reach the gateway:[/red] {escape(str(exc))}")
        return typer.Exit(3)
    where = f" (param: {exc.param})" if exc.param else ""
    console.print(f"[red]{exc.status_code} {escape(str(exc.code))}:[/red] {escape(exc.message + where)}")
    ctx = click.get_current_context(silent=True)
    hint = base_url_hint(str(((ctx.obj if ctx else None) or {}).get("base_url") or ""), exc.status_code)
    if hint:
        console.print(escape(hint))
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
            console.print(f"[red]--metadata needs key=value, got '{escape(pair)}'[/red]")
            raise typer.Exit(2)
        meta[key] = value
    return meta or None


def _when(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def duration(batch: Batch, now: float) -> str | None:
    """How long it ran: from start (or creation) to its end, or to `now` while it runs."""
    begun = batch.get("in_progress_at") or batch.get("created_at")
    ended = next((batch.get(k) for k in ("completed_at", "failed_at", "expired_at", "cancelled_at") if batch.get(k)),
                 None)
    if not begun:
        return None
    seconds = max(0, int((ended or now) - begun))
    text = f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return text if ended else f"{text} so far"


def error_lines(errors: list[Any], shown: int = ERRORS_SHOWN) -> list[str]:
    """The first `shown` validation errors (plain text) and how many more there are."""
    lines = [f"line {err.get('line')}: {err.get('code')} {err.get('message')}" if err.get("line")
             else f"{err.get('code')} {err.get('message')}" for err in errors[:shown]]
    if len(errors) > shown:
        lines.append(f"… and {len(errors) - shown} more (aistats batch show ID --json lists them all)")
    return lines


def _summary(batch: Batch) -> None:
    """What a batch is, on standard output: status, counts, timings, tokens, cost, files, errors."""
    counts = LineCounts.of(batch)
    color = {"completed": "green", "failed": "red", "expired": "yellow", "cancelled": "yellow"}.get(batch.status)
    out.print(f"[bold {color or 'white'}]{escape(batch.id)} {escape(batch.status)}[/] — {counts.completed} "
              f"completed, {counts.failed} failed{counts.not_run_text()} of {counts.total}")
    facts = [f"endpoint {batch.get('endpoint')}", f"model {batch.get('model') or '-'}"]
    if batch.get("session_id"):
        facts.append(f"session {batch.session_id}")
    if batch.get("metadata"):
        facts.append("metadata " + ", ".join(f"{k}={v}" for k, v in dict(batch.metadata).items()))
    out.print("  " + escape(" · ".join(facts)))
    times = [f"created {_when(batch.get('created_at'))}"]
    for label, key in (("started", "in_progress_at"), ("completed", "completed_at"), ("failed", "failed_at"),
                       ("expired", "expired_at"), ("cancelled", "cancelled_at")):
        if batch.get(key):
            times.append(f"{label} {_when(batch[key])}")
    took = duration(batch, time.time())
    out.print("  " + " · ".join(times) + (f" · took {took}" if took else ""))
    usage = batch.get("usage") or {}
    if usage:
        out.print(f"  tokens {usage.get('input_tokens', 0):,} in · {usage.get('output_tokens', 0):,} out · "
                  f"{usage.get('total_tokens', 0):,} total")
    billing = batch.get("billing") or {}
    if billing:
        estimate = f" · estimated ${billing['estimated_usd']}" if billing.get("estimated_usd") else ""
        out.print(f"  cost ${billing.get('cost_usd') or '0'} ({billing.get('state')}){estimate}")
    errors = list((batch.get("errors") or {}).get("data") or [])
    for line in error_lines(errors):
        out.print(f"  [red]{escape(line)}[/red]")
    for label, key in (("output", "output_file_id"), ("errors", "error_file_id")):
        if batch.get(key):
            out.print(f"  {label}: {escape(batch[key])}  (aistats batch results {escape(batch.id)}"
                      f"{' --errors' if label == 'errors' else ''} -o {label}.jsonl)")


def _follow(client: AIStats, batch: Batch, as_json: bool) -> Batch:
    """Watch to the end: a live progress bar on stderr (or NDJSON updates with --json). The SDK's
    `follow()` polls while the stream is down, so the bar moves on and says "reconnecting…"."""
    if batch.status in TERMINAL:
        return batch
    final = batch
    try:
        if as_json:
            for step in client.batches.follow(batch.id):
                final = step.batch or final
                _print_json({"type": step.event or step.state, "state": step.state, "data": step.batch})
        else:
            with progress_view(console, batch) as update:
                for step in client.batches.follow(batch.id):
                    final = step.batch or final
                    update(step.batch, step.state)
    except APIError as exc:
        raise _fail(exc) from exc
    return final if final.status in TERMINAL else _call(lambda: client.batches.get(batch.id))


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
    as_json: bool = Json, base_url: str = BaseUrl, api_key: str = ApiKey,
) -> None:
    """Upload a JSONL file and create a batch from it."""
    client = _client(ctx, base_url, api_key)
    meta = _metadata(metadata)
    uploaded = _call(lambda: client.files.create(file=file, purpose="batch"))
    batch = _call(lambda: client.batches.create(endpoint=endpoint, input_file_id=uploaded.id,
                                                completion_window=window, session_id=session, metadata=meta))
    if not as_json:
        console.print(f"created [bold]{batch.id}[/bold] from {escape(file.name)} ({uploaded.bytes:,} bytes, "
                      f"{uploaded.id})")
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
        out.print(batch.id)
        console.print(f"follow it with: aistats batch watch {batch.id}")


@app.command()
def watch(ctx: typer.Context, batch_id: str, as_json: bool = Json, base_url: str = BaseUrl,
          api_key: str = ApiKey) -> None:
    """Live progress of a batch until it ends (exit 1 unless it completed)."""
    client = _client(ctx, base_url, api_key)
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
    session: str = typer.Option(None, "--session", help="Only batches of this session_id."),
    limit: int = typer.Option(20, min=1, max=100),
    after: str = typer.Option(None, help="Cursor: the last id of the previous page."),
    as_json: bool = Json, base_url: str = BaseUrl, api_key: str = ApiKey,
) -> None:
    """List batches, newest first."""
    client = _client(ctx, base_url, api_key)
    page = _call(lambda: client.batches.list(limit=limit, status=status, after=after, session_id=session))
    if as_json:
        _print_json(page)
        return
    table = Table("status", "progress", "done/failed/total", "model", "session", "created")
    table.columns.insert(0, Column("id", no_wrap=True))
    for b in page.data:
        c = LineCounts.of(b)
        table.add_row(escape(b.id), escape(b.status), f"{c.percent}%",
                      f"{c.completed}/{c.failed}/{c.total}" + (f" ({c.not_run:,} not run)" if c.not_run else ""),
                      escape(b.get("model") or "-"), escape(b.get("session_id") or "-"),
                      time.strftime("%m-%d %H:%M", time.localtime(b.created_at)))
    out.print(table)
    if page.has_more:
        more = f" --session {session}" if session else ""
        console.print(escape(f"more: aistats batch ls{more} --after {page.last_id}"))


@app.command()
def show(ctx: typer.Context, batch_id: str, as_json: bool = Json, base_url: str = BaseUrl,
         api_key: str = ApiKey) -> None:
    """One batch: status, counts, timings, tokens, cost, files, errors (on standard output)."""
    client = _client(ctx, base_url, api_key)
    batch = _call(lambda: client.batches.get(batch_id))
    if as_json:
        _print_json(batch)
    else:
        _summary(batch)


@app.command()
def cancel(ctx: typer.Context, batch_id: str, as_json: bool = Json, base_url: str = BaseUrl,
           api_key: str = ApiKey) -> None:
    """Cancel a batch; finished results are kept."""
    client = _client(ctx, base_url, api_key)
    batch = _call(lambda: client.batches.cancel(batch_id))
    if as_json:
        _print_json(batch)
    else:
        out.print(f"{escape(batch.id)} is {escape(batch.status)}")


@app.command()
def retry(
    ctx: typer.Context,
    batch_id: str,
    codes: str = typer.Option(None, "--codes", help="Only lines that failed with these error codes (comma-separated, "
                                                    "as the batch's error_summary shows them)."),
    status: list[str] = typer.Option([], "--status", help="failed, expired or cancelled (repeatable; default: "
                                                          "every line that did not succeed)."),
    key: str = typer.Option(None, "--idempotency-key", help="Send twice, get one retry batch."),
    wait: bool = typer.Option(False, "--wait", help="Show live progress until the retry ends."),
    as_json: bool = Json, base_url: str = BaseUrl, api_key: str = ApiKey,
) -> None:
    """Re-run the lines of an ended batch that did not succeed, as a new batch (its parent_batch_id is BATCH_ID)."""
    client = _client(ctx, base_url, api_key)
    error_codes = [c.strip() for c in codes.split(",") if c.strip()] if codes else None
    batch = _call(lambda: client.batches.retry(batch_id, statuses=status or None, error_codes=error_codes,
                                               idempotency_key=key))
    if not as_json:
        console.print(f"created [bold]{escape(batch.id)}[/bold] re-running {batch.request_counts['total'] or 'the'} "
                      f"line(s) of {escape(batch_id)}")
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
        out.print(batch.id)


@app.command()
def results(
    ctx: typer.Context,
    batch_id: str,
    output: Path = typer.Option(None, "--output", "-o", help="Write here instead of standard output (replaced "
                                                                 "only once every line has arrived)."),
    errors: bool = typer.Option(False, "--errors", help="Only failed lines."),
    follow: bool = typer.Option(False, "--follow", help="Keep streaming until the batch ends."),
    merged: bool = typer.Option(False, "--merged", help="One line per custom_id of the retry chain's first input: "
                                                        "the latest success anywhere in the chain."),
    as_json: bool = typer.Option(False, "--json", help="(results are always JSON lines)"),
    base_url: str = BaseUrl, api_key: str = ApiKey,
) -> None:
    """Result lines (OpenAI output format) settled so far — also while the batch runs."""
    client = _client(ctx, base_url, api_key)
    lines = _take(client, batch_id, follow, errors, merged)
    if output is None:
        for line in lines:
            sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        return
    count = write_atomically(output, (json.dumps(line) + "\n" for line in lines))
    if as_json:
        _print_json({"path": str(output), "lines": count})
    else:
        console.print(f"wrote {count} line(s) to {escape(str(output))}")


def write_atomically(path: Path, chunks: Iterator[str]) -> int:
    """Write `chunks` to a temporary file beside `path` and rename it over `path` only once all arrived:
    a failure (404, connection lost, Ctrl-C) leaves an existing file as it was. Returns the chunk count."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    count = 0
    try:
        with os.fdopen(fd, "w") as sink:
            for chunk in chunks:
                sink.write(chunk)
                count += 1
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return count


def _take(client: AIStats, batch_id: str, follow: bool, errors: bool, merged: bool = False
          ) -> Iterator[dict[str, Any]]:
    try:
        for line in client.batches.results(batch_id, follow=follow, merged=merged):
            failed = line.get("error") is not None or not 200 <= ((line.get("response") or {}).get(
                "status_code") or 0) < 300
            if not errors or failed:
                yield line
    except APIError as exc:
        raise _fail(exc) from exc
