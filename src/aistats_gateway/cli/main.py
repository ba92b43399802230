"""`aistats` — run the gateway and administer it.

    aistats serve [--host H] [--port P] [--no-worker]   run the API (and the executor)
    aistats worker [--port P]                           run only the executor and webhook deliverer
    aistats keys create|list|revoke                     API keys of the local database
    aistats batch submit|watch|ls|show|cancel|results   work with batches on any gateway (via the SDK)
    aistats migrate [--from-sqlite PATH]                bring the database schema up to date (and copy a
                                                        stopped SQLite gateway into an empty PostgreSQL one)
Settings come from the environment and AISTATS_CONFIG (see the README); flags override them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from typing import Any

import typer
import uvicorn

from aistats_gateway import __version__
from aistats_gateway.cli.batch import app as batch_app
from aistats_gateway.config import ConfigError, Settings
from aistats_gateway.logs import configure as configure_logging

app = typer.Typer(help="AI Stats Gateway: a self-hostable LLM gateway with an OpenAI-compatible Batch API.",
                  no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="Manage API keys (works on the local database).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(batch_app, name="batch")


def _settings(**overrides: object) -> Settings:
    try:
        settings = Settings.load(None, **{k: v for k, v in overrides.items() if v is not None})
        from aistats_gateway.settings_check import check_settings  # after the quick checks: it imports more

        return check_settings(settings)
    except ConfigError as exc:
        typer.secho(f"configuration error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


@app.command()
def serve(
    host: str = typer.Option(None, help="Bind address (default AISTATS_HOST or 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default AISTATS_PORT or 8787)."),
    no_worker: bool = typer.Option(False, "--no-worker", help="Serve the API only; run no executor."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    log_format: str = typer.Option("auto", help="json, text, or auto (text on a terminal, else JSON lines)."),
    access_log: bool = typer.Option(False, help="Log every HTTP request."),
) -> None:
    """Run the gateway (API + executor) on the configured storage."""
    settings = _settings(host=host, port=port, run_worker=False if no_worker else None)  # refuse bad ones first
    from aistats_gateway import banner
    from aistats_gateway.app import build_app
    from aistats_gateway.http_guard import guarded_protocol

    configure_logging(log_level, log_format)
    typer.echo(f"AI Stats Gateway {__version__} starting on {banner.api_url(settings)} "
               f"({'API only' if no_worker else 'API + executor'}; {_where(settings)}; "
               f"providers: {', '.join(p.name for p in settings.providers)})")
    # Fewer young-generation collections: the executor allocates many short-lived objects per request.
    gc.set_threshold(20_000, 20, 20)
    application = build_app(settings, print_key=False)

    class Server(uvicorn.Server):
        """Says "ready" (with a generated key, boxed) once the port accepts connections, after the logs
        of migrations and startup, so neither is lost among them."""

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                typer.echo(banner.ready(settings, application.state.gateway.generated_key))

    config = uvicorn.Config(application, host=settings.host, port=settings.port, log_level=log_level,
                            log_config=None, access_log=access_log, loop="auto", lifespan="on",
                            # httptools with a limit on the request head's size and a deadline for reading
                            # it (http_guard.py)
                            http=guarded_protocol(settings.limits),
                            # open streams (WebSockets, results with follow=true) get this long before the
                            # executor drains
                            timeout_graceful_shutdown=5)
    server = Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise typer.Exit(3)


def _where(settings: Settings) -> str:
    """Where state lives, for the start line (never the password of a database URL)."""
    from sqlalchemy.engine import make_url

    db = make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)
    blobs = settings.blob_url or str(settings.blob_dir)
    return f"database {db}; blobs {blobs}" + (f"; redis {settings.redis.key_prefix}*" if settings.redis_url else "")


@app.command()
def worker(
    host: str = typer.Option(None, help="Bind address of the probes (default AISTATS_HOST or 127.0.0.1)."),
    port: int = typer.Option(8788, help="Port of the probes: GET /v1/health and /metrics."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    log_format: str = typer.Option("auto", help="json, text, or auto (text on a terminal, else JSON lines)."),
) -> None:
    """Run an executor process only (no API): it leases items of every batch from the shared database.

    Run several, each with its own AISTATS_NODE_ID, against PostgreSQL + S3-compatible blobs (+ Redis
    for shared rate limits and immediate cancels); see the README's Deployment section."""
    settings = _settings(host=host, port=port)  # refuse bad settings before the slow imports
    from aistats_gateway.app import build_worker_app
    from aistats_gateway.http_guard import guarded_protocol

    configure_logging(log_level, log_format)
    if settings.node_id == "local" and settings.is_postgresql:
        typer.secho("warning: AISTATS_NODE_ID is 'local'; give every worker process its own node id",
                    fg="yellow", err=True)
    typer.echo(f"AI Stats Gateway {__version__} worker {settings.node_id} (probes on "
               f"http://{settings.host}:{settings.port}/v1/health; {_where(settings)})")
    gc.set_threshold(20_000, 20, 20)
    uvicorn.run(build_worker_app(settings), host=settings.host, port=settings.port, log_level=log_level,
                log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                http=guarded_protocol(settings.limits))


def _with_store(fn: Any) -> Any:
    """Run `fn(store)` against the configured database (migrated first)."""
    from aistats_gateway.storage.migrate import upgrade_to_head
    from aistats_gateway.storage.store import Store, create_engine

    settings = _settings()

    async def run() -> Any:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.sqlalchemy_url)
        await upgrade_to_head(engine)
        store = Store(engine)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


@keys_app.command("create")
def keys_create(
    workspace: str = typer.Option("default", help="Workspace name; created if it does not exist."),
    name: str = typer.Option(None, help="A label for the key."),
    as_json: bool = typer.Option(False, "--json", help="The key, its id and workspace as JSON."),
) -> None:
    """Create an API key and print it (only its hash is stored)."""
    from aistats_gateway.domain.keys import DEFAULT_WORKSPACE, hash_key
    from aistats_gateway.services.keys import create_key

    async def create(store: Any) -> dict[str, Any]:
        key = await create_key(store.workspaces, DEFAULT_WORKSPACE if workspace == "default" else workspace, name)
        row = (await store.workspaces.find_keys("", [hash_key(key)]))[0]
        return {"object": "api_key", "id": row["id"], "workspace_id": row["workspace_id"], "name": name, "key": key}

    created = _with_store(create)
    typer.echo(json.dumps(created) if as_json else created["key"])


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Keys (id, workspace, prefix, state, kind, label); never the keys themselves. The static key the
    gateway accepts (AISTATS_API_KEY at its last start) is marked `static (current)`."""
    from aistats_gateway.services.keys import listing

    rows = listing(_with_store(lambda store: store.workspaces.list_keys()))
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        state = "revoked" if row["revoked_at"] else "active"
        kind = f"{row['kind']} (current)" if row["current_static"] else row["kind"]
        shown = f"{row['shown']}…" if row["shown"] else "(shared prefix)"
        typer.echo(f"{row['id']}  {row['workspace_id']:<20} {shown:<20} {state:<8} {kind:<17} {row['name'] or ''}")


@keys_app.command("revoke")
def keys_revoke(key: str = typer.Argument(..., help="The key's id (key_…, see `keys list`), the key itself, "
                                                    "or its SHA-256 hash (64 hex digits)."),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Revoke exactly one key; a running gateway refuses it (and closes its WebSockets) within seconds."""
    from aistats_gateway.services.keys import revoke

    revoked, message = _with_store(lambda store: revoke(store.workspaces, key, time.time()))
    if revoked is None:
        typer.secho(message, fg="red", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps({"revoked": revoked["id"], "workspace_id": revoked["workspace_id"], "message": message})
               if as_json else message)


credits_app = typer.Typer(help="Workspace credit (works on the local database).", no_args_is_help=True)
app.add_typer(credits_app, name="credits")


def _workspace_id(workspace: str) -> str:
    from aistats_gateway.domain.keys import DEFAULT_WORKSPACE

    if workspace == "default":
        return DEFAULT_WORKSPACE
    return workspace if workspace.startswith("ws_") else f"ws_{workspace}"


@credits_app.command("grant")
def credits_grant(
    usd_amount: str = typer.Option(None, "--usd", help="Add this many US dollars, e.g. 10 or 0.25."),
    unlimited: bool = typer.Option(False, "--unlimited", help="Lift the limit instead."),
    workspace: str = typer.Option("default", help="Workspace name."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Add credit to a workspace (a workspace without credit is unlimited until the first grant)."""
    from aistats_gateway.api.meta import credit_view
    from aistats_gateway.pricing.catalog import usd_to_nanos

    if unlimited == (usd_amount is not None):
        typer.secho("give exactly one of --usd AMOUNT or --unlimited", fg="red", err=True)
        raise typer.Exit(2)
    try:
        amount = None if unlimited else usd_to_nanos(usd_amount)
    except ValueError as exc:
        typer.secho(f"--usd: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    ws = _workspace_id(workspace)
    balance, held = _with_store(lambda store: store.ledger.grant(ws, amount, time.time()))
    view = credit_view(ws, balance, held)
    typer.echo(json.dumps(view) if as_json else f"{ws}: balance {view['balance_usd'] or 'unlimited'} USD, "
               f"held {view['held_usd']}, available {view['available_usd'] or 'unlimited'}")


@credits_app.command("show")
def credits_show(workspace: str = typer.Option("default"), as_json: bool = typer.Option(False, "--json")) -> None:
    """A workspace's balance, holds and available credit."""
    from aistats_gateway.api.meta import credit_view

    ws = _workspace_id(workspace)
    balance, held = _with_store(lambda store: store.ledger.account(ws))
    view = credit_view(ws, balance, held)
    typer.echo(json.dumps(view) if as_json else f"{ws}: balance {view['balance_usd'] or 'unlimited'} USD, "
               f"held {view['held_usd']}, available {view['available_usd'] or 'unlimited'}")


@app.command()
def migrate(
    from_sqlite: str = typer.Option(None, "--from-sqlite", metavar="PATH",
                                    help="Also copy a stopped gateway's SQLite database (its gateway.db) into "
                                         "the configured, empty database, with its blobs."),
    from_blobs: str = typer.Option(None, "--from-blobs", metavar="DIR",
                                   help="The source gateway's blob directory (default: blobs/ beside PATH)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create or upgrade the database schema, then exit (optionally copying a SQLite gateway into it)."""
    from pathlib import Path

    from aistats_gateway.storage.blobs import LocalBlobStore, open_blob_store
    from aistats_gateway.storage.copy import CopyRefused, copy_gateway, source_engine_url
    from aistats_gateway.storage.migrate import upgrade_to_head
    from aistats_gateway.storage.store import create_engine

    settings = _settings()
    path = Path(from_sqlite).expanduser() if from_sqlite else None
    blob_dir = Path(from_blobs).expanduser() if from_blobs else (path.parent / "blobs" if path else None)

    async def run() -> dict[str, int] | None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.sqlalchemy_url)
        try:
            await upgrade_to_head(engine)
            if path is None or blob_dir is None:
                return None
            source = create_engine(source_engine_url(path))
            blobs = await open_blob_store(settings)
            try:
                await upgrade_to_head(source)  # an older source is brought to the same schema first
                source_blobs = LocalBlobStore(blob_dir)
                return await copy_gateway(source, engine, source_blobs, blobs, progress=typer.echo)
            finally:
                await blobs.close()
                await source.dispose()
        finally:
            await engine.dispose()

    try:
        copied = asyncio.run(run())
    except CopyRefused as exc:
        typer.secho(f"migrate: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps({"schema": "up to date", "copied": copied}))
        return
    typer.echo(f"schema up to date ({_where(settings)})")
    if copied is not None:
        typer.echo(f"copied {sum(v for k, v in copied.items() if k != 'blobs')} row(s) and {copied['blobs']} blob(s)")


@app.command()
def version(as_json: bool = typer.Option(False, "--json")) -> None:
    """Print the version."""
    typer.echo(json.dumps({"version": __version__}) if as_json else __version__)


if __name__ == "__main__":  # pragma: no cover
    app()
