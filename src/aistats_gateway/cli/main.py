"""`aistats` — run the gateway and administer it.

    aistats serve [--host H] [--port P] [--no-worker]   run the API (and the executor)
    aistats keys create [--workspace W] [--name N]      mint an API key (prints it once)
    aistats migrate                                     bring the database schema up to date
Settings come from the environment and AISTATS_CONFIG (see the README); flags override them.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import typer
import uvicorn

from aistats_gateway import __version__
from aistats_gateway.config import ConfigError, Settings

app = typer.Typer(help="AI Stats Gateway: a self-hostable LLM gateway with an OpenAI-compatible Batch API.",
                  no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _settings(**overrides: object) -> Settings:
    try:
        return Settings.load(None, **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        typer.secho(f"configuration error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


@app.command()
def serve(
    host: str = typer.Option(None, help="Bind address (default AISTATS_HOST or 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default AISTATS_PORT or 8787)."),
    no_worker: bool = typer.Option(False, "--no-worker", help="Serve the API only; run no executor."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    access_log: bool = typer.Option(False, help="Log every HTTP request."),
) -> None:
    """Run the gateway (API + executor) on the configured storage."""
    from aistats_gateway.app import build_app

    settings = _settings(host=host, port=port, run_worker=False if no_worker else None)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    typer.echo(f"AI Stats Gateway {__version__} on http://{settings.host}:{settings.port}/v1 "
               f"(data: {settings.data_dir}; providers: {', '.join(p.name for p in settings.providers)})")
    # Fewer young-generation collections: the executor allocates many short-lived objects per request.
    gc.set_threshold(20_000, 20, 20)
    uvicorn.run(build_app(settings), host=settings.host, port=settings.port, log_level=log_level,
                access_log=access_log, loop="auto", http="auto", lifespan="on")


@keys_app.command("create")
def keys_create(
    workspace: str = typer.Option("default", help="Workspace name; created if it does not exist."),
    name: str = typer.Option(None, help="A label for the key."),
) -> None:
    """Create an API key and print it (only its hash is stored)."""
    from aistats_gateway.api.auth import DEFAULT_WORKSPACE
    from aistats_gateway.services.keys import create_key
    from aistats_gateway.storage.migrate import upgrade_to_head
    from aistats_gateway.storage.store import Store, create_engine

    settings = _settings()

    async def run() -> str:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.sqlalchemy_url)
        await upgrade_to_head(engine)
        store = Store(engine)
        try:
            return await create_key(store, DEFAULT_WORKSPACE if workspace == "default" else workspace, name)
        finally:
            await store.close()

    typer.echo(asyncio.run(run()))


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema, then exit."""
    from aistats_gateway.storage.migrate import upgrade_to_head
    from aistats_gateway.storage.store import create_engine

    settings = _settings()

    async def run() -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.sqlalchemy_url)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    typer.echo(f"schema up to date at {settings.sqlalchemy_url}")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()
