"""Browser WebSocket auth: the key offered as a `bearer.<key>` subprotocol, `aistats.v1` selected; the
Authorization header path unchanged; a wrong or missing key refused exactly as on the header path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from aistats_gateway.api.auth import websocket_credentials
from tests.harness import Gateway, chat_line, jsonl


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("wsproto") / "data")
    yield g
    g.stop()


@pytest.fixture(scope="module")
def batch_id(gw: Gateway) -> str:
    api = gw.client()
    f = api.post("/files", files={"file": ("in.jsonl", jsonl([chat_line("a", "x")]))}, data={"purpose": "batch"})
    created = api.post("/batches", json={"input_file_id": f.json()["id"], "endpoint": "/v1/chat/completions"})
    return str(created.json()["id"])


def url(gw: Gateway, batch_id: str) -> str:
    return gw.base_url.replace("http://", "ws://") + f"/async/batch/{batch_id}/ws"


def refusal(gw: Gateway, batch_id: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as err:
        connect(url(gw, batch_id), open_timeout=10, **kwargs)
    return err.value.response.status_code, json.loads(err.value.response.body or b"{}")


def test_key_as_subprotocol_is_accepted_and_aistats_v1_selected(gw: Gateway, batch_id: str) -> None:
    with connect(url(gw, batch_id), subprotocols=["aistats.v1", f"bearer.{gw.api_key}"],
                 open_timeout=10) as ws:
        assert ws.subprotocol == "aistats.v1"
        frame = json.loads(ws.recv(timeout=10))
    assert frame["type"] == "job.snapshot" and frame["data"]["id"] == batch_id


def test_header_path_unchanged(gw: Gateway, batch_id: str) -> None:
    with connect(url(gw, batch_id), additional_headers={"Authorization": f"Bearer {gw.api_key}"},
                 open_timeout=10) as ws:
        assert ws.subprotocol is None  # nothing offered, nothing selected
        assert json.loads(ws.recv(timeout=10))["type"] == "job.snapshot"


def test_header_wins_over_an_offered_key(gw: Gateway, batch_id: str) -> None:
    with connect(url(gw, batch_id), additional_headers={"Authorization": f"Bearer {gw.api_key}"},
                 subprotocols=["aistats.v1", "bearer.wrong"], open_timeout=10) as ws:
        assert ws.subprotocol == "aistats.v1"
        assert json.loads(ws.recv(timeout=10))["type"] == "job.snapshot"
    status, body = refusal(gw, batch_id, additional_headers={"Authorization": "Bearer wrong"},
                           subprotocols=["aistats.v1", f"bearer.{gw.api_key}"])
    assert status == 401 and body["error"]["code"] == "invalid_api_key"


def test_wrong_key_is_refused_exactly_like_a_wrong_bearer_header(gw: Gateway, batch_id: str) -> None:
    by_header = refusal(gw, batch_id, additional_headers={"Authorization": "Bearer sk-wrong"})
    by_protocol = refusal(gw, batch_id, subprotocols=["aistats.v1", "bearer.sk-wrong"])
    assert by_header[0] == by_protocol[0] == 401
    for body in (by_header[1], by_protocol[1]):
        body.pop("request_id")
    assert by_protocol[1] == by_header[1]
    assert by_protocol[1]["error"] == {"message": "Invalid API key.", "type": "authentication_error",
                                       "code": "invalid_api_key", "param": None}


def test_missing_key_and_foreign_batch(gw: Gateway, batch_id: str) -> None:
    status, body = refusal(gw, batch_id, subprotocols=["aistats.v1"])
    assert status == 401 and body["error"]["code"] == "missing_api_key"
    status, body = refusal(gw, batch_id, subprotocols=["aistats.v1", "bearer."])  # an empty key is no key
    assert status == 401 and body["error"]["code"] == "missing_api_key"
    other = gw.new_key("ws-other")
    status, body = refusal(gw, batch_id, subprotocols=["aistats.v1", f"bearer.{other}"])
    assert status == 404 and body["error"]["code"] == "async_job_not_found_or_not_owned"


@pytest.mark.parametrize(("authorization", "offered", "expected"), [
    (None, ["aistats.v1", "bearer.k1"], ("k1", "aistats.v1")),
    (None, ["bearer.k1", "aistats.v1"], ("k1", "aistats.v1")),
    (None, ["bearer.k1"], ("k1", None)),
    ("Bearer h1", ["aistats.v1", "bearer.k1"], ("h1", "aistats.v1")),
    ("Basic abc", ["bearer.k1"], (None, None)),  # a malformed header is not silently replaced
    (None, ["aistats.v1"], (None, "aistats.v1")),
    (None, ["bearer."], (None, None)),
    (None, [], (None, None)),
])
def test_websocket_credentials(authorization: str | None, offered: list[str],
                               expected: tuple[str | None, str | None]) -> None:
    assert websocket_credentials(authorization, offered) == expected
