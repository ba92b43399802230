"""The newest AI Stats / Phaseo batch surface over real HTTP (issue 16, items 1-3, 8, 9): every route alias,
the literal segments, capabilities and models computed from the configured providers, and the batch object's
superset shape.

One gateway serves the module, configured with the built-in mock, an OpenAI-compatible provider with its batch
API on (the test upstream, which lists models at GET /v1/models), an Anthropic provider without one, and an
OpenAI-compatible provider whose upstream is unreachable (its /v1/models must not fail the models list).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import Gateway, Receiver, Upstream, chat_line, free_port, jsonl, wait_for_batch

FILE_PREFIXES = ("/files", "/batches/files", "/batch/files")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("surface")
    upstream = Upstream(root / "upstream.log", models=("gpt-4o-mini", "local-llama-3.1-8b", "other-model"))
    receiver = Receiver(root / "receiver.log")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = f"""
[webhooks]
allow_local = true

[[providers]]
name = "mock"
kind = "mock"
models = ["mock/*"]

[[providers]]
name = "oai"
kind = "openai"
base_url = "{upstream.base_url}"
api_key = "sk-up"
models = ["gpt-4o*", "local-*"]
batch_api = true

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{dead.removesuffix('/v1')}"
api_key = "sk-ant"
models = ["claude-*"]

[[providers]]
name = "down"
kind = "openai"
base_url = "{dead}"
api_key = "sk-down"
models = ["gpt-5-nano", "self-*"]
"""
    gw = Gateway(root / "data", config=config)
    try:
        yield {"gw": gw, "upstream": upstream, "receiver": receiver}
    finally:
        gw.stop()
        upstream.stop()
        receiver.stop()


@pytest.fixture
def client(stack: dict[str, Any]) -> Iterator[httpx.Client]:
    with stack["gw"].client() as c:
        yield c


# ------------------------------------------------------------------------------------------ item 1: routes


@pytest.mark.parametrize("prefix", FILE_PREFIXES)
def test_files_api_on_every_prefix(client: httpx.Client, prefix: str) -> None:
    text = jsonl([chat_line(f"{prefix}-{i}", "hi") for i in range(2)])
    multipart = client.post(prefix, files={"file": ("in.jsonl", text, "application/jsonl")}, data={"purpose": "batch"})
    assert multipart.status_code == 200, multipart.text
    as_json = client.post(prefix, json={"purpose": "batch", "file": text.decode()})
    assert as_json.status_code == 200, as_json.text
    ids = [multipart.json()["id"], as_json.json()["id"]]
    listed = client.get(prefix)
    assert listed.status_code == 200 and {f["id"] for f in listed.json()["data"]} >= set(ids), listed.text
    for file_id in ids:
        got = client.get(f"{prefix}/{file_id}")
        assert got.status_code == 200 and got.json()["bytes"] == len(text), got.text
        content = client.get(f"{prefix}/{file_id}/content")
        assert content.status_code == 200 and content.content == text
        deleted = client.delete(f"{prefix}/{file_id}")
        assert deleted.status_code == 200 and deleted.json() == {"id": file_id, "object": "file", "deleted": True}
        gone = client.get(f"/files/{file_id}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "file_not_found_or_not_owned"


def test_batch_routes_on_the_singular_alias(client: httpx.Client) -> None:
    created = client.post("/batch", json={"endpoint": "/v1/chat/completions",
                                          "requests": [chat_line(f"alias-{i}", "x") for i in range(3)]})
    assert created.status_code == 200, created.text
    batch_id = created.json()["id"]
    done = wait_for_batch(client, batch_id)
    assert done["status"] == "completed"
    got = client.get(f"/batch/{batch_id}")
    assert got.status_code == 200 and got.json()["id"] == batch_id and got.json()["status"] == "completed"
    listed = client.get("/batch", params={"limit": 100})
    assert listed.status_code == 200 and batch_id in [b["id"] for b in listed.json()["data"]]
    results = client.get(f"/batch/{batch_id}/results")
    assert results.status_code == 200 and len(results.text.splitlines()) == 3
    assert client.get(f"/batch/{batch_id}/requests").status_code == 200
    slow = client.post("/batch", json={"endpoint": "/v1/chat/completions",
                                       "requests": [chat_line(f"slow-{i}", "x", "mock/slow") for i in range(50)]})
    assert slow.status_code == 200, slow.text
    cancelled = client.post(f"/batch/{slow.json()['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] in ("cancelling", "cancelled"), cancelled.text


@pytest.mark.parametrize("prefix", ("/batches", "/batch"))
def test_literal_segments_are_never_batch_ids(client: httpx.Client, prefix: str) -> None:
    for path in ("models", "capabilities", "files"):
        answer = client.get(f"{prefix}/{path}")
        assert answer.status_code == 200 and answer.json()["object"] == "list", (path, answer.text)
    for method, path in (("POST", "models/cancel"), ("GET", "capabilities/results"), ("GET", "models/requests"),
                         ("POST", "files/cancel"), ("GET", "files/file-x/requests"), ("GET", "capabilities/x")):
        answer = client.request(method, f"{prefix}/{path}")
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["error"]["code"] == "route_not_found", (method, path, answer.text)
    assert client.get(f"{prefix}/batch_00000000000000000000000000").json()["error"]["code"] == \
        "batch_not_found_or_not_owned"


def test_openapi_lists_every_alias_with_unique_operation_ids(stack: dict[str, Any]) -> None:
    spec = httpx.get(stack["gw"].base_url.removesuffix("/v1") + "/openapi.json").json()
    ops = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(ops) == len(set(ops))
    for path in ("/v1/batch", "/v1/batch/{batch_id}/cancel", "/v1/batches/models", "/v1/batch/capabilities",
                 "/v1/batches/files/{file_id}/content", "/v1/batch/files"):
        assert path in spec["paths"], path
    assert not any("{rest}" in p for p in spec["paths"])  # the literal guards stay out of the schema


# ------------------------------------------------------------------------------------ item 2: capabilities


def test_capabilities_describe_the_configured_providers(client: httpx.Client) -> None:
    answer = client.get("/batches/capabilities")
    assert answer.status_code == 200, answer.text
    by_id = {c["id"]: c for c in answer.json()["data"]}
    assert list(by_id) == ["mock", "oai", "claude", "down"]
    for cap in by_id.values():
        assert cap["status"] == "active" and cap["gateway_input_modes"] == ["file", "requests"]
        assert isinstance(cap["name"], str) and isinstance(cap["notes"], str)
        assert all(e["mode"] in ("native", "translated") for e in cap["endpoints"])
    assert by_id["oai"]["native_input_modes"] == ["file"]  # batch_api = true
    assert by_id["oai"]["documentation_url"].startswith("https://platform.openai.com/")
    assert by_id["down"]["native_input_modes"] == [] and by_id["mock"]["native_input_modes"] == []
    assert by_id["claude"]["native_input_modes"] == []  # Anthropic, but its batch_api is off
    claude = {e["endpoint"]: e["mode"] for e in by_id["claude"]["endpoints"]}
    assert claude == {"/v1/messages": "native", "/v1/chat/completions": "translated", "/v1/responses": "translated"}
    assert {e["mode"] for e in by_id["oai"]["endpoints"]} == {"native"}
    assert client.get("/batch/capabilities").json() == answer.json()


# ------------------------------------------------------------------------------------------ item 3: models


def test_models_from_patterns_catalog_and_upstream_lists(stack: dict[str, Any], client: httpx.Client) -> None:
    before = stack["upstream"].stats().get("models_list", 0)
    started = time.monotonic()
    answer = client.get("/batches/models")
    assert answer.status_code == 200, answer.text
    assert time.monotonic() - started < 20  # the unreachable upstream cost at most its short timeout
    models = {m["model"]: m for m in answer.json()["data"]}
    # mock: its built-in models; oai: catalog gpt-4o* models and the upstream's listed ids matching its patterns
    assert {"mock/echo", "mock/slow", "mock/reject", "gpt-4o-mini", "gpt-4o", "local-llama-3.1-8b"} <= set(models)
    assert "other-model" not in models  # listed upstream, but no pattern of "oai" routes it
    assert "gpt-5-nano" in models  # an exact pattern of "down", whose upstream does not answer
    assert {m for m in models if m.startswith("claude-")}  # Anthropic's catalog models, by pattern
    mini = models["gpt-4o-mini"]
    assert [p["id"] for p in mini["providers"]] == ["oai"]
    assert mini["supported_params"] == mini["supported_parameters"] and "endpoint" in mini["supported_params"]
    assert "/v1/chat/completions" in mini["supported_params_detail"]["endpoint"]["values"]
    standard = mini["pricing"]["standard"]["meters"]
    batch = mini["pricing"]["batch"]["meters"]
    assert standard["input_text_tokens"]["price_per_unit"] == "0.15"  # prices.toml list prices, per 1M tokens
    assert batch["input_text_tokens"]["price_per_unit"] == "0.075"  # batch_api on: the batch price applies
    assert mini["pricing"]["meters"] == standard and mini["pricing"]["pricing_plan"] == "standard"
    nano = models["gpt-5-nano"]
    assert nano["pricing"]["standard"]["meters"]["output_text_tokens"]["price_per_unit"] == "0.4"
    assert nano["pricing"]["batch"] is None  # "down" has no batch API: batches there pay standard prices
    local = models["local-llama-3.1-8b"]
    assert local["pricing"]["meters"] is None and local["providers"][0]["id"] == "oai"  # unpriced
    again = client.get("/batch/models")
    assert again.status_code == 200 and again.json() == answer.json()
    assert stack["upstream"].stats().get("models_list", 0) - before <= 1  # cached between calls


def test_models_params_filter(client: httpx.Client) -> None:
    every = client.get("/batches/models").json()["data"]
    kept = client.get("/batches/models", params=[("params", "request_endpoint,window"), ("params", "metadata")])
    assert kept.status_code == 200 and len(kept.json()["data"]) == len(every)
    none = client.get("/batches/models", params={"params": "no_such_param"})
    assert none.status_code == 200 and none.json()["data"] == []


# ------------------------------------------------------------------------------------------ item 8: shapes


def test_batch_object_superset(stack: dict[str, Any], client: httpx.Client) -> None:
    receiver: Receiver = stack["receiver"]
    rows = [chat_line(f"shape-{i}", f"hello {i}", "gpt-4o-mini",
                      x_usage={"cached_tokens": 2, "reasoning_tokens": 3 + i}) for i in range(4)]
    created = client.post("/batches", json={"endpoint": "/v1/chat/completions", "requests": rows,
                                            "execution": "managed",
                                            "webhook": {"url": receiver.url, "secret": "whsec_shape"}})
    assert created.status_code == 200, created.text
    batch_id = created.json()["id"]
    done = wait_for_batch(client, batch_id)
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 4, done
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = client.get(f"/batches/{batch_id}").json()
        if done["webhook"]["delivery"]["last_delivered_at"] and "batch.completed" in \
                done["webhook"]["delivery"]["delivered_event_types"]:
            break
        time.sleep(0.1)
    base = stack["gw"].base_url
    assert done["results_url"] == f"{base}/batches/{batch_id}/results"
    assert done["usage"]["input_tokens_details"] == {"cached_tokens": 8}
    assert done["usage"]["output_tokens_details"] == {"reasoning_tokens": 3 + 4 + 5 + 6}
    assert ISO.match(done["billing"]["finalized_at"]), done["billing"]
    assert ISO.match(done["finalized_at"])
    delivery = done["webhook"]["delivery"]
    assert ISO.match(delivery["last_attempt_at"]) and ISO.match(delivery["last_delivered_at"]), delivery
    assert delivery["next_retry_at"] is None
    assert all(ISO.match(a["tried_at"]) for a in done["webhook"]["attempts"])
    assert ISO.match(done["last_webhook_dispatched_at"]) and done["next_webhook_retry_at"] is None
    for name in ("created_at", "completed_at", "in_progress_at", "expires_at"):
        assert isinstance(done[name], int)  # OpenAI's own fields stay integers
    assert done["progress"] == 100 and done["websocket_url"].startswith("ws://")
    upstream_bodies = stack["upstream"].bodies()
    assert upstream_bodies  # the lines went through the OpenAI-compatible upstream


# ------------------------------------------------------------------------------------------ item 9: cancel


def test_cancel_of_a_finished_batch_is_a_conflict(client: httpx.Client) -> None:
    created = client.post("/batches", json={"endpoint": "/v1/chat/completions",
                                            "requests": [chat_line("done-1", "x")]})
    batch_id = created.json()["id"]
    assert wait_for_batch(client, batch_id)["status"] == "completed"
    for prefix in ("/batches", "/batch"):
        answer = client.post(f"{prefix}/{batch_id}/cancel")
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"]["code"] == "batch_not_cancellable"
