"""The mock provider's answers and the routing rules."""

from __future__ import annotations

import asyncio

import orjson

from aistats_gateway.providers.base import parse_retry_after, usage_of
from aistats_gateway.providers.mock import MockProvider
from aistats_gateway.providers.openai_compat import OpenAICompatibleProvider
from aistats_gateway.providers.routing import Router


def _openai(name: str = "openai", models: list[str] | None = None) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(name, "http://127.0.0.1:1/v1", None, models or ["*"], timeout_seconds=1,
                                    connect_timeout_seconds=1, max_connections=1)


def test_mock_is_deterministic_with_realistic_usage() -> None:
    mock = MockProvider()
    body = orjson.dumps({"model": "mock/echo", "messages": [{"role": "user", "content": "hello world " * 10}],
                         "max_tokens": 5})
    a = asyncio.run(mock.send("/v1/chat/completions", "mock/echo", body))
    b = asyncio.run(mock.send("/v1/chat/completions", "mock/echo", body))
    pa, pb = orjson.loads(a.body), orjson.loads(b.body)
    assert pa["choices"] == pb["choices"] and pa["id"] == pb["id"]
    assert pa["choices"][0]["finish_reason"] == "length" and pa["usage"]["completion_tokens"] <= 5
    assert a.input_tokens == pa["usage"]["prompt_tokens"] > 30


def test_mock_endpoints_have_their_shapes() -> None:
    mock = MockProvider()
    resp = orjson.loads(asyncio.run(mock.send("/v1/responses", "mock/echo",
                                              b'{"model":"mock/echo","input":"hi"}')).body)
    assert resp["object"] == "response" and resp["output"][0]["content"][0]["text"] == "echo: hi"
    emb = orjson.loads(asyncio.run(mock.send("/v1/embeddings", "mock/echo",
                                             b'{"model":"mock/echo","input":["a","b"],"dimensions":4}')).body)
    assert [len(d["embedding"]) for d in emb["data"]] == [4, 4]
    rejected = asyncio.run(mock.send("/v1/chat/completions", "mock/reject", b'{"model":"mock/reject"}'))
    assert rejected.status == 400


def test_mock_answers_a_malformed_messages_field_like_the_real_apis() -> None:
    """'messages': 1 made the mock raise TypeError: the line settled as the gateway's own internal_error."""
    mock = MockProvider()
    for endpoint in ("/v1/chat/completions", "/v1/messages"):
        for messages in (1, 1.5, True, "hi", {"role": "user"}):
            result = asyncio.run(mock.send(endpoint, "mock/echo", orjson.dumps({"model": "mock/echo",
                                                                                "messages": messages})))
            error = orjson.loads(result.body)["error"]
            assert result.status == 400 and error["param"] == "messages", (endpoint, messages)
    for body in ({"model": "mock/echo"}, {"model": "mock/echo", "messages": [1, None, {"content": {"a": 1}}]}):
        assert asyncio.run(mock.send("/v1/chat/completions", "mock/echo", orjson.dumps(body))).status == 200


def test_routing_prefix_pattern_and_preferences() -> None:
    router = Router([MockProvider(), _openai(), _openai("local", ["llama*"])])
    assert router.route("mock/echo") == ("mock", None)
    assert router.route("gpt-4o-mini") == ("openai", None)
    assert router.route("local/anything")[0] == "local"
    assert router.upstream_model(router.by_name["local"], "local/anything") == "anything"
    assert router.upstream_model(router.by_name["mock"], "mock/echo") == "mock/echo"
    assert router.route("llama3", {"order": ["local", "openai"]})[0] == "local"
    assert router.route("llama3", {"ignore": ["openai", "local"]})[0] is None
    no_openai = Router([MockProvider()])
    provider, reason = no_openai.route("gpt-4o-mini")
    assert provider is None and reason is not None and "OPENAI_API_KEY" in reason


def test_usage_and_retry_after_parsing() -> None:
    assert usage_of({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == (3, 4)
    assert usage_of({"usage": {"input_tokens": 5, "output_tokens": 6}}) == (5, 6)
    assert usage_of({"no": "usage"}) == (0, 0)
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10.0
    assert parse_retry_after({}) is None


def test_openai_url_joins_base_and_endpoint() -> None:
    assert _openai().url_for("/v1/chat/completions") == "http://127.0.0.1:1/v1/chat/completions"


def test_sort_ranks_candidates_and_order_still_comes_first() -> None:
    router = Router([_openai("a"), _openai("b"), _openai("c")])
    cost = {"a": 3.0, "b": 1.0, "c": 2.0}

    def by_cost(provider: object, model: str) -> float:
        return cost[provider.name]  # type: ignore[attr-defined]

    names = [p.name for p in router.candidates("gpt-4o", {"sort": "price"}, rank=by_cost)]
    assert names == ["b", "c", "a"]
    # `order` names go first, in its order; the rest keep the sort
    names = [p.name for p in router.candidates("gpt-4o", {"sort": "price", "order": ["a"]}, rank=by_cost)]
    assert names == ["a", "b", "c"]
    names = [p.name for p in router.candidates("gpt-4o", {"sort": "price", "ignore": ["b"]}, rank=by_cost)]
    assert names == ["c", "a"]
    # without preferences: configuration order, all candidates (for fallback)
    assert [p.name for p in router.candidates("gpt-4o")] == ["a", "b", "c"]


def test_price_rank_uses_the_catalog() -> None:
    from aistats_gateway.pricing.catalog import PriceCatalog
    from aistats_gateway.pricing.pricer import Pricer

    pricer = Pricer(PriceCatalog.load())
    assert pricer.unit_cost("openai", "gpt-4o-mini") < pricer.unit_cost("openai", "gpt-4o")
    assert pricer.unit_cost("anthropic", "claude-haiku-4-5") < pricer.unit_cost("anthropic", "claude-opus-4-1")
    assert pricer.unit_cost("openai", "no-such-model") > pricer.unit_cost("anthropic", "claude-opus-4-1")
