"""Key lifecycle across processes: a revoked key's open WebSockets are closed with 4401 (the revocation
comes from `aistats keys revoke`, another process; on SQLite and on PostgreSQL), and a gateway restarted
with another AISTATS_API_KEY refuses the old one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.backends import PG_SKIP, pg_available, pg_database
from tests.harness import Gateway, chat_line, wait_for_batch


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp(f"keys_{request.param}") / "data"
    if request.param == "sqlite":
        g = Gateway(data)
        yield g
        g.stop()
        return
    if not pg_available():
        pytest.skip(PG_SKIP)
    with pg_database() as url:
        g = Gateway(data, env={"AISTATS_DATABASE_URL": url})
        yield g
        g.stop()


def keys_cli(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aistats_gateway.cli.main", "keys", *args], env=gw.env,
                          capture_output=True, text=True, timeout=120)


def finished_batch(gw: Gateway, key: str) -> str:
    api = gw.client(key)
    created = api.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": [chat_line("a", "x")]})
    assert created.status_code == 200, created.text
    return str(wait_for_batch(api, created.json()["id"])["id"])


def open_socket(sockets: ExitStack, gw: Gateway, batch_id: str, key: str, *, browser: bool = False) -> ClientConnection:
    """A socket that stays open (close_on_terminal=false on a finished batch): only a revocation ends it."""
    url = gw.base_url.replace("http://", "ws://") + f"/async/batch/{batch_id}/ws?close_on_terminal=false"
    if browser:  # the dashboard's way: the key as an offered subprotocol
        ws = sockets.enter_context(connect(url, subprotocols=["aistats.v1", f"bearer.{key}"], open_timeout=10))
    else:
        ws = sockets.enter_context(connect(url, additional_headers={"Authorization": f"Bearer {key}"},
                                           open_timeout=10))
    assert json.loads(ws.recv(timeout=10))["type"] == "job.snapshot"
    return ws


def closed_within(ws: ClientConnection, seconds: float) -> tuple[int | None, str | None]:
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=deadline - time.monotonic())
    except ConnectionClosed:
        return ws.close_code, ws.close_reason
    except TimeoutError:
        pass
    raise AssertionError(f"socket still open {seconds}s after the key was revoked")


def pong(ws: ClientConnection) -> dict[str, Any]:
    ws.send("ping")
    return dict(json.loads(ws.recv(timeout=10)))


def test_revoking_a_key_closes_its_open_websockets_with_4401(gw: Gateway) -> None:
    key = gw.new_key("revoked-live")
    batch_id = finished_batch(gw, key)
    with ExitStack() as sockets:
        mine = [open_socket(sockets, gw, batch_id, key), open_socket(sockets, gw, batch_id, key, browser=True)]
        others = open_socket(sockets, gw, finished_batch(gw, gw.api_key), gw.api_key)
        assert pong(mine[0]) == {"type": "pong"}
        time.sleep(3)  # past a key check, so the sockets are known to survive their checks while valid
        assert pong(mine[1]) == {"type": "pong"}

        revoked = keys_cli(gw, "revoke", key)
        assert revoked.returncode == 0, revoked.stderr
        for ws in mine:
            assert closed_within(ws, 20) == (4401, "API key revoked")
        assert pong(others) == {"type": "pong"}  # another key's socket is left alone


def test_a_restart_with_another_static_key_refuses_the_old_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Gateway(data, api_key="sk-first-static-key-0001")
    try:
        created = first.new_key("kept")
        assert first.client().get("/batches").status_code == 200
    finally:
        first.stop()
    second = Gateway(data, api_key="sk-second-static-key-0002")
    try:
        assert second.client("sk-first-static-key-0001").get("/batches").status_code == 401
        assert second.client().get("/batches").status_code == 200
        assert second.client(created).get("/batches").status_code == 200  # `keys create` keys are not static

        listed = json.loads(keys_cli(second, "list", "--json").stdout)
        static = {k["prefix"]: k for k in listed if k["kind"] == "static"}
        assert set(static) == {"sk-first-sta", "sk-second-st"}
        assert static["sk-second-st"]["current_static"] and static["sk-second-st"]["revoked_at"] is None
        assert not static["sk-first-sta"]["current_static"] and static["sk-first-sta"]["revoked_at"] is not None
        text = keys_cli(second, "list").stdout.splitlines()
        assert [line for line in text if "static (current)" in line] == \
               [line for line in text if "sk-second-st…" in line]
    finally:
        second.stop()
