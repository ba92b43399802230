"""Claude through the real gateway and a real fake Anthropic process: OpenAI-format chat and responses batches
come back in OpenAI shapes, native /v1/messages batches pass through, lines Anthropic cannot take land in the
error file with the field named, 429/529 answers are retried, and billing matches the catalog by hand."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Gateway, Proc, free_port, wait_for_batch

MODEL = "claude-sonnet-4-5"
KEY = "sk-ant-test"
# claude-sonnet-4-5 standard list prices in nanos per token (USD per 1M tokens × 1000), from prices.toml by hand.
INPUT, CACHE_READ, CACHE_WRITE, OUTPUT = 3000, 300, 3750, 15000  # cache writes: 1.25x input
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


class FakeAnthropic(Proc):
    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([sys.executable, "-m", "aistats_gateway.testing.anthropic_upstream", "--port",
                          str(self.port), "--api-key", KEY], dict(os.environ), log, f"{self.url}/_stats")

    def get(self, what: str) -> Any:
        return httpx.get(f"{self.url}/_{what}").json()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("anthropic")
    fake = FakeAnthropic(root / "fake.log")
    config = f"""
[executor]
max_attempts = 3
backoff_base_seconds = 0.05
backoff_max_seconds = 0.2

[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "{fake.url}/v1"
api_key = "{KEY}"
models = ["claude-*"]
"""
    gw = Gateway(root / "data", config=config)
    yield gw, fake
    gw.stop()
    fake.stop()


Lines = dict[str, Any]


def run(api: httpx.Client, endpoint: str, rows: list[tuple[str, Any]]) -> tuple[dict[str, Any], Lines, Lines]:
    """Run a batch of `rows` (custom_id → body) to the end: (batch, output lines by id, error lines by id)."""
    requests = [{"custom_id": cid, "method": "POST", "url": endpoint, "body": body} for cid, body in rows]
    created = api.post("/batches", json={"endpoint": endpoint, "requests": requests})
    assert created.status_code == 200, created.text
    done = wait_for_batch(api, created.json()["id"], timeout=60)
    assert done["status"] == "completed", done

    def read(file_id: str | None) -> dict[str, Any]:
        if not file_id:
            return {}
        lines = [json.loads(x) for x in api.get(f"/files/{file_id}/content").text.splitlines()]
        return {x["custom_id"]: x for x in lines}

    return done, read(done["output_file_id"]), read(done.get("error_file_id"))


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": list(messages), "max_tokens": 200, **extra}


def test_chat_completions_batch_is_translated(stack: Any) -> None:
    gw, fake = stack
    api = gw.client()
    rows = [
        ("plain", chat({"role": "user", "content": "hello claude"})),
        ("system", chat({"role": "system", "content": "You are terse."}, {"role": "user", "content": "hi"})),
        ("tools", chat({"role": "user", "content": "use get_weather for Paris"}, tools=[WEATHER])),
        ("tool-result", chat({"role": "user", "content": "weather?"},
                             {"role": "assistant", "content": None, "tool_calls": [{
                                 "id": "call_1", "type": "function",
                                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
                             {"role": "tool", "tool_call_id": "call_1", "content": "-3C"}, tools=[WEATHER])),
        ("invalid", chat({"role": "user", "content": "too hot"}, temperature=1.7)),
        ("upstream-invalid", chat({"role": "assistant", "content": "I speak first"})),
        ("throttled", chat({"role": "user", "content": "slow down"},
                           x_fault={"key": "throttled", "plan": [429], "retry_after": 0.1})),
        ("overloaded", chat({"role": "user", "content": "busy"}, x_fault={"key": "overloaded", "plan": [529]})),
    ]
    done, out, err = run(api, "/v1/chat/completions", rows)
    assert done["request_counts"].items() >= {"total": 8, "completed": 6, "failed": 2}.items()
    assert set(out) == {"plain", "system", "tools", "tool-result", "throttled", "overloaded"}
    for cid, line in out.items():
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and body["object"] == "chat.completion", cid
        assert body["model"] == MODEL and set(body["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert out["plain"]["response"]["body"]["choices"][0]["message"]["content"] == "echo: hello claude"
    assert out["tool-result"]["response"]["body"]["choices"][0]["message"]["content"] == "echo: tool result: -3C"
    call = out["tools"]["response"]["body"]["choices"][0]
    assert call["finish_reason"] == "tool_calls" and call["message"]["content"] is None
    assert call["message"]["tool_calls"][0]["function"] == {"name": "get_weather",
                                                           "arguments": "{\"city\":\"use get_weather for Paris\"}"}
    assert out["throttled"]["response"]["body"]["choices"][0]["message"]["content"] == "echo: slow down"

    invalid = err["invalid"]["response"]
    assert invalid["status_code"] == 400 and invalid["body"]["error"]["param"] == "temperature"
    assert "between 0 and 1" in invalid["body"]["error"]["message"]
    upstream = err["upstream-invalid"]["response"]
    assert upstream["status_code"] == 400 and upstream["body"]["error"]["type"] == "invalid_request_error"
    assert "alternate" in upstream["body"]["error"]["message"]  # Anthropic's error, in OpenAI's envelope

    ledger = fake.get("ledger")
    assert ledger["throttled"] == 2 and ledger["overloaded"] == 2  # retried once each
    sent = {r["messages"][-1]["content"] if isinstance(r["messages"][-1]["content"], str) else "": r
            for r in fake.get("requests")}
    assert sent["hi"]["system"] == [{"type": "text", "text": "You are terse."}]
    assert not any("too hot" == r["messages"][0].get("content") for r in fake.get("requests"))  # never sent
    cost = sum(x["response"]["body"]["usage"]["prompt_tokens"] * INPUT
               + x["response"]["body"]["usage"]["completion_tokens"] * OUTPUT for x in out.values())
    assert done["billing"]["cost_nanos"] == cost > 0


def test_responses_batch_is_translated(stack: Any) -> None:
    gw, _ = stack
    api = gw.client()
    tool = {"type": "function", "name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}
    rows = [("text", {"model": MODEL, "input": "hello responses", "instructions": "Be nice."}),
            ("call", {"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_text", "text": "find"}]}],
                      "tools": [tool], "tool_choice": "required"}),
            ("cut", {"model": MODEL, "input": "a long story about everything", "max_output_tokens": 2})]
    done, out, err = run(api, "/v1/responses", rows)
    assert not err and done["request_counts"]["completed"] == 3
    text = out["text"]["response"]["body"]
    assert text["object"] == "response" and text["status"] == "completed" and text["instructions"] == "Be nice."
    assert text["output"][0]["content"][0] == {"type": "output_text", "text": "echo: hello responses",
                                               "annotations": []}
    assert set(text["usage"]) == {"input_tokens", "output_tokens", "total_tokens", "input_tokens_details",
                                  "output_tokens_details"}
    call = out["call"]["response"]["body"]["output"]
    assert [item["type"] for item in call] == ["function_call"]
    assert call[0]["name"] == "lookup" and json.loads(call[0]["arguments"]) == {"q": "find"}
    cut = out["cut"]["response"]["body"]
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "max_output_tokens"}


def test_native_messages_batch_and_cache_billing(stack: Any) -> None:
    gw, _ = stack
    api = gw.client()
    prefix = "You are a careful assistant. " * 40

    def cached(cid: str, text: str, system: str = prefix) -> tuple[str, dict[str, Any]]:
        return cid, {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": text}],
                     "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]}

    run(api, "/v1/messages", [cached("warm", "first")])  # writes the cache entry
    done, out, err = run(api, "/v1/messages", [
        cached("read", "second"), cached("write", "third", "Another long prefix. " * 30),
        ("plain", {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "no cache"}]}),
        ("bad", {"model": MODEL, "messages": [{"role": "user", "content": "no max_tokens"}]})])
    assert set(out) == {"read", "write", "plain"} and set(err) == {"bad"}
    assert err["bad"]["response"]["status_code"] == 400
    assert err["bad"]["response"]["body"]["error"]["type"] == "invalid_request_error"  # Anthropic's own shape
    usages = {cid: line["response"]["body"]["usage"] for cid, line in out.items()}
    assert out["plain"]["response"]["body"]["type"] == "message"  # unchanged Anthropic answer
    assert usages["read"]["cache_read_input_tokens"] > 0 and usages["read"]["cache_creation_input_tokens"] == 0
    assert usages["write"]["cache_creation_input_tokens"] > 0 and usages["write"]["cache_read_input_tokens"] == 0

    expected = sum(u["input_tokens"] * INPUT + u["cache_creation_input_tokens"] * CACHE_WRITE
                   + u["cache_read_input_tokens"] * CACHE_READ + u["output_tokens"] * OUTPUT for u in usages.values())
    assert done["billing"]["cost_nanos"] == expected == sum(p["line_nanos"] for p in done["pricing_lines"])
    lines = {p["dimension"]: p for p in done["pricing_lines"] if p["quantity"]}
    assert {(p["provider"], p["model"], p["pricing_plan"]) for p in lines.values()} == {
        ("anthropic", MODEL, "standard")}
    assert lines["cached_read_text_tokens"]["quantity"] == usages["read"]["cache_read_input_tokens"]
    assert lines["cached_read_text_tokens"]["unit_price_usd"] == "0.300000000"
    assert lines["input_text_tokens"]["unit_price_usd"] == "3.000000000"
    assert lines["output_text_tokens"]["unit_price_usd"] == "15.000000000"
    assert lines["cached_write_text_tokens"]["quantity"] == usages["write"]["cache_creation_input_tokens"]
    assert lines["cached_write_text_tokens"]["unit_price_usd"] == "3.750000000"


def test_endpoint_anthropic_does_not_serve(stack: Any) -> None:
    gw, _ = stack
    _, out, err = run(gw.client(), "/v1/embeddings", [("emb", {"model": MODEL, "input": "vectors please"})])
    assert not out and err["emb"]["response"]["status_code"] == 400
    assert "does not serve /v1/embeddings" in err["emb"]["response"]["body"]["error"]["message"]
