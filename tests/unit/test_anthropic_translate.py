"""The Anthropic translation, both directions: OpenAI chat/responses bodies → Messages requests, Messages
answers and errors → OpenAI shapes, rate-limit headers, and pricing of translated usage against the shipped
catalog."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aistats_gateway.pricing.catalog import PriceCatalog
from aistats_gateway.pricing.pricer import Pricer
from aistats_gateway.providers.anthropic import parse_anthropic_ratelimit, parse_reset
from aistats_gateway.providers.anthropic_answers import (
    AnswerError,
    error_to_openai,
    normalized_usage,
    to_chat_completion,
    to_response,
)
from aistats_gateway.providers.anthropic_translate import (
    DEFAULT_MAX_TOKENS,
    TranslationError,
    chat_to_messages,
    responses_to_messages,
)

M = "claude-sonnet-4-5"
PNG = "iVBORw0KGgo="  # valid base64
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return chat_to_messages({"model": M, "messages": list(messages), **extra})


def rejected(fn: Any, body: dict[str, Any]) -> TranslationError:
    with pytest.raises(TranslationError) as info:
        fn(body)
    assert info.value.param is not None and f"'{info.value.param}'" in info.value.message
    return info.value


# ----------------------------------------------------------------------------------------- chat → messages


def test_system_and_developer_messages_become_system_blocks() -> None:
    out = chat({"role": "system", "content": "Be brief."}, {"role": "developer", "content": [{"type": "text",
                                                                                           "text": "No lists."}]},
               {"role": "user", "content": "Hi"})
    assert out == {"model": M, "max_tokens": DEFAULT_MAX_TOKENS, "messages": [{"role": "user", "content": "Hi"}],
                   "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "No lists."}]}


def test_content_parts_and_images() -> None:
    out = chat({"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}}]})
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]


@pytest.mark.parametrize(("url", "param"), [
    ("data:image/tiff;base64," + PNG, "messages[0].content[0].image_url.url"),
    ("data:image/png;base64,@@@", "messages[0].content[0].image_url.url"),
    ("ftp://example.com/x.png", "messages[0].content[0].image_url.url"),
])
def test_bad_images_are_named(url: str, param: str) -> None:
    err = rejected(chat_to_messages, {"model": M, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]})
    assert err.param == param


def test_unsupported_content_part_is_named() -> None:
    err = rejected(chat_to_messages, {"model": M, "messages": [
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]})
    assert err.param == "messages[0].content[0].type" and "input_audio" in err.message


def test_tool_round_trip_and_merged_turns() -> None:
    out = chat({"role": "user", "content": "Weather in Paris and Rome?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                                     "arguments": "{\"city\": \"Paris\"}"}},
                   {"id": "call_2", "type": "function", "function": {"name": "get_weather",
                                                                     "arguments": "{\"city\": \"Rome\"}"}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
               {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
               {"role": "user", "content": "Which is warmer?"},
               tools=[WEATHER], tool_choice="auto")
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}}]
    assert out["messages"][2]["content"] == [  # tool results first, then the user's text, in one turn
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
        {"type": "text", "text": "Which is warmer?"}]
    assert out["tools"] == [{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"],
                             "description": "Weather of a city"}]
    assert out["tool_choice"] == {"type": "auto"}


def test_consecutive_user_messages_merge() -> None:
    out = chat({"role": "user", "content": "one"}, {"role": "user", "content": "two"})
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "one"},
                                                            {"type": "text", "text": "two"}]}]


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    ("auto", None, {"type": "auto"}),
    ("none", False, {"type": "none"}),
    ("required", None, {"type": "any"}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
])
def test_tool_choice(choice: Any, parallel: Any, expected: dict[str, Any]) -> None:
    extra: dict[str, Any] = {} if parallel is None else {"parallel_tool_calls": parallel}
    if choice is not None:
        extra["tool_choice"] = choice
    out = chat({"role": "user", "content": "x"}, tools=[WEATHER], **extra)
    assert out["tool_choice"] == expected
    assert "tool_choice" not in chat({"role": "user", "content": "x"}, tools=[WEATHER], parallel_tool_calls=True)


def test_tool_without_parameters_gets_an_empty_object_schema_and_choice_without_tools_is_dropped() -> None:
    out = chat({"role": "user", "content": "x"}, tools=[{"type": "function", "function": {"name": "ping"}}])
    assert out["tools"] == [{"name": "ping", "input_schema": {"type": "object", "properties": {}}}]
    assert "tool_choice" not in chat({"role": "user", "content": "x"}, tool_choice="auto")


def test_limits_sampling_stop_and_user() -> None:
    out = chat({"role": "user", "content": "x"}, max_tokens=50, max_completion_tokens=70, temperature=0.2,
               top_p=0.9, stop="END", user="u-1", seed=7, store=True, frequency_penalty=0, service_tier="auto",
               response_format={"type": "text"}, n=1, some_future_field={"a": 1})
    assert out == {"model": M, "max_tokens": 70, "temperature": 0.2, "top_p": 0.9, "stop_sequences": ["END"],
                   "metadata": {"user_id": "u-1"}, "messages": [{"role": "user", "content": "x"}]}
    assert chat({"role": "user", "content": "x"}, max_tokens=5, stop=["a", "b"])["stop_sequences"] == ["a", "b"]
    assert chat({"role": "user", "content": "x"}, max_tokens=5)["max_tokens"] == 5


def test_cache_control_and_fault_plans_pass_through() -> None:
    mark = {"type": "ephemeral"}
    out = chat({"role": "system", "content": [{"type": "text", "text": "long context", "cache_control": mark}]},
               {"role": "user", "content": "q"}, x_fault={"key": "k", "plan": [429]})
    assert out["system"] == [{"type": "text", "text": "long context", "cache_control": mark}]
    assert out["x_fault"] == {"key": "k", "plan": [429]}


@pytest.mark.parametrize(("extra", "param"), [
    ({"stream": True}, "stream"),
    ({"n": 3}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"temperature": 1.5}, "temperature"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"presence_penalty": -1}, "presence_penalty"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"stop": [1, 2]}, "stop"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
])
def test_semantic_fields_that_cannot_be_honoured_are_rejected_by_name(extra: dict[str, Any], param: str) -> None:
    err = rejected(chat_to_messages, {"model": M, "messages": [{"role": "user", "content": "x"}], **extra})
    assert err.param == param


@pytest.mark.parametrize(("messages", "param"), [
    ([], "messages"),
    ([{"role": "system", "content": "only rules"}], "messages"),
    ([{"role": "function", "name": "f", "content": "x"}], "messages[0].role"),
    ([{"role": "user", "content": "x"}, {"role": "tool", "content": "out"}], "messages[1].tool_call_id"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}],
     "messages[1].tool_calls[0].function.arguments"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"type": "function"}]}],
     "messages[1].tool_calls[0]"),
    ([{"role": "user", "content": 42}], "messages[0].content"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "tool_calls": 1.5}],
     "messages[1].tool_calls"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "tool_calls": {"id": "c"}}],
     "messages[1].tool_calls"),
])
def test_malformed_conversations_are_named(messages: list[Any], param: str) -> None:
    assert rejected(chat_to_messages, {"model": M, "messages": messages}).param == param


# ------------------------------------------------------------------------------------ responses → messages


def test_responses_string_input_and_instructions() -> None:
    out = responses_to_messages({"model": M, "input": "Hello", "instructions": "Be terse.", "max_output_tokens": 99,
                                 "store": False, "reasoning": {"effort": "low"}, "truncation": "auto"})
    assert out == {"model": M, "max_tokens": 99, "system": [{"type": "text", "text": "Be terse."}],
                   "messages": [{"role": "user", "content": "Hello"}]}


def test_responses_items_images_and_function_calls() -> None:
    out = responses_to_messages({"model": M, "input": [
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Look"},
            {"type": "input_image", "image_url": f"data:image/jpeg;base64,{PNG}"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
        {"type": "function_call_output", "call_id": "call_9", "output": "-3C"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "It is cold."}]},
        {"role": "user", "content": "Thanks"}],
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "get_weather"}, "parallel_tool_calls": False})
    assert out["system"] == [{"type": "text", "text": "rules"}]
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Look"}, {"type": "image", "source": {
            "type": "base64", "media_type": "image/jpeg", "data": PNG}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_9", "name": "get_weather",
                                           "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_9", "content": "-3C"}]},
        {"role": "assistant", "content": "It is cold."},
        {"role": "user", "content": "Thanks"}]
    assert out["tools"] == [{"name": "get_weather", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(("extra", "param"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"background": True}, "background"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, "text.format"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
     "input[0].content[0].file_id"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"input": []}, "input"),
    ({"stream": True}, "stream"),
    ({"max_output_tokens": -1}, "max_output_tokens"),
])
def test_responses_rejections_are_named(extra: dict[str, Any], param: str) -> None:
    assert rejected(responses_to_messages, {"model": M, "input": "x", **extra}).param == param


# ------------------------------------------------------------------------------------------ answers → OpenAI

USAGE = {"input_tokens": 100, "output_tokens": 30, "cache_read_input_tokens": 2000,
         "cache_creation_input_tokens": 500}


def answer(content: list[dict[str, Any]], stop: str = "end_turn", usage: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    return {"id": "msg_abc", "type": "message", "role": "assistant", "model": M, "content": content,
            "stop_reason": stop, "stop_sequence": None, "usage": usage or USAGE}


def test_text_answer_to_chat_completion_with_usage() -> None:
    out = to_chat_completion(answer([{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                     {"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]), now=7)
    assert out == {"id": "chatcmpl-msg_abc", "object": "chat.completion", "created": 7, "model": M,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there", "refusal": None},
                                "logprobs": None, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 2600, "completion_tokens": 30, "total_tokens": 2630,
                             "prompt_tokens_details": {"cached_tokens": 2000}}}


def test_tool_use_answer_to_chat_completion() -> None:
    out = to_chat_completion(answer([{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                      "input": {"city": "Paris"}}], stop="tool_use"))
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [{"id": "toolu_1", "type": "function", "function": {
        "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]
    assert orjson.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}


@pytest.mark.parametrize(("stop", "finish"), [("end_turn", "stop"), ("stop_sequence", "stop"),
                                              ("max_tokens", "length"), ("tool_use", "tool_calls"),
                                              ("refusal", "content_filter")])
def test_finish_reasons(stop: str, finish: str) -> None:
    assert to_chat_completion(answer([{"type": "text", "text": "x"}], stop))["choices"][0]["finish_reason"] == finish


def test_answer_to_response_object() -> None:
    request = {"model": M, "input": "x", "instructions": "rules", "max_output_tokens": 40, "temperature": 0.5}
    out = to_response(answer([{"type": "text", "text": "Let me check."},
                              {"type": "tool_use", "id": "toolu_7", "name": "get_weather", "input": {"city": "Rome"}}],
                             stop="tool_use"), request, now=9)
    assert out["object"] == "response" and out["id"] == "resp_abc" and out["created_at"] == 9
    assert out["status"] == "completed" and out["incomplete_details"] is None and out["error"] is None
    assert (out["instructions"], out["max_output_tokens"], out["temperature"], out["model"]) == ("rules", 40, 0.5, M)
    assert out["output"] == [
        {"type": "message", "id": "msg_abc", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}]},
        {"type": "function_call", "id": "fc_toolu_7", "call_id": "toolu_7", "name": "get_weather",
         "arguments": "{\"city\":\"Rome\"}", "status": "completed"}]
    assert out["usage"] == {"input_tokens": 2600, "output_tokens": 30, "total_tokens": 2630,
                            "input_tokens_details": {"cached_tokens": 2000},
                            "output_tokens_details": {"reasoning_tokens": 0}}


def test_cut_answer_is_an_incomplete_response() -> None:
    out = to_response(answer([{"type": "text", "text": "Once upon"}], stop="max_tokens"), {"input": "x"})
    assert out["status"] == "incomplete" and out["incomplete_details"] == {"reason": "max_output_tokens"}
    assert out["output"][0]["status"] == "incomplete"


def test_answer_without_content_is_an_error() -> None:
    with pytest.raises(AnswerError):
        to_chat_completion({"id": "msg_x", "usage": {}})


def test_usage_normalization_fills_cache_counts() -> None:
    assert normalized_usage({"usage": {"input_tokens": 5, "output_tokens": 2}}) == {
        "input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    assert normalized_usage({"usage": {"input_tokens": -3, "output_tokens": "x"}})["input_tokens"] == 0


@pytest.mark.parametrize(("status", "kind", "openai_type"), [
    (400, "invalid_request_error", "invalid_request_error"), (429, "rate_limit_error", "rate_limit_error"),
    (529, "overloaded_error", "server_error"), (500, "api_error", "server_error"),
    (401, "authentication_error", "authentication_error")])
def test_errors_become_the_openai_envelope(status: int, kind: str, openai_type: str) -> None:
    raw = orjson.dumps({"type": "error", "error": {"type": kind, "message": "why"}, "request_id": "req_1"})
    assert orjson.loads(error_to_openai(status, raw, "anthropic")) == {
        "error": {"message": "why", "type": openai_type, "param": None, "code": kind}}


def test_non_json_error_keeps_status_and_text() -> None:
    out = orjson.loads(error_to_openai(502, b"<html>bad gateway</html>", "anthropic"))["error"]
    assert out["type"] == "server_error" and out["code"] == "http_502" and "bad gateway" in out["message"]


# ------------------------------------------------------------------------------------------- rate-limit headers


def test_ratelimit_headers_pick_the_tightest_token_budget() -> None:
    now = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    headers = {
        "anthropic-ratelimit-requests-limit": "1000", "anthropic-ratelimit-requests-remaining": "999",
        "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:50Z",
        "anthropic-ratelimit-tokens-limit": "96000", "anthropic-ratelimit-tokens-remaining": "90000",
        "anthropic-ratelimit-tokens-reset": "2023-11-14T22:13:21Z",
        "anthropic-ratelimit-input-tokens-limit": "80000", "anthropic-ratelimit-input-tokens-remaining": "78000",
        "anthropic-ratelimit-input-tokens-reset": "2023-11-14T22:13:22Z",
        "anthropic-ratelimit-output-tokens-limit": "16000", "anthropic-ratelimit-output-tokens-remaining": "12000",
        "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:13:25.500Z",
    }
    info = parse_anthropic_ratelimit(headers, now)
    assert info is not None
    assert (info.limit_requests, info.remaining_requests, info.reset_requests) == (1000, 999, 30.0)
    assert (info.limit_tokens, info.remaining_tokens, info.reset_tokens) == (16000, 12000, 5.5)
    assert parse_anthropic_ratelimit({"x-ratelimit-limit-requests": "5"}) is None
    assert parse_reset("2023-11-14T22:13:00Z", now) == 0.0  # in the past: no wait
    assert parse_reset("soon", now) is None and parse_reset("2023-11-14T22:13:00", now) is None


# ------------------------------------------------------------------------------------------------- pricing


@pytest.mark.parametrize("endpoint", ["/v1/messages", "/v1/chat/completions", "/v1/responses"])
def test_translated_usage_prices_like_the_catalog_says(endpoint: str) -> None:
    """claude-sonnet-4-5 standard: $3 input, $0.30 cache read, $3.75 cache write (5 minutes), $15 output per
    1M tokens (prices.toml), whichever shape the answer was translated to."""
    rows, cost = Pricer(PriceCatalog.load()).usage_rows("anthropic", M, endpoint, normalized_usage(answer([])))
    meters = {r.meter: (r.quantity, r.unit_price_nanos) for r in rows}
    assert meters == {"input_text_tokens": (100, 3_000_000_000), "cached_read_text_tokens": (2000, 300_000_000),
                      "cached_write_text_tokens": (500, 3_750_000_000), "output_text_tokens": (30, 15_000_000_000),
                      "requests": (1, 0)}
    assert cost == 100 * 3000 + 2000 * 300 + 500 * 3750 + 30 * 15000  # nanos per token = USD per 1M tokens × 1000


# ------------------------------------------------------------------------------------------- configuration


def test_env_configures_anthropic_before_the_catch_all_openai_provider(tmp_path: Any) -> None:
    from aistats_gateway.config import Settings
    from aistats_gateway.providers.anthropic import AnthropicProvider
    from aistats_gateway.providers.kinds import build_provider
    from aistats_gateway.providers.routing import Router

    settings = Settings.load({"AISTATS_DATA_DIR": str(tmp_path), "OPENAI_API_KEY": "sk-o",
                              "ANTHROPIC_API_KEY": "sk-ant", "ANTHROPIC_BASE_URL": "http://127.0.0.1:1/v1/"})
    assert [(p.name, p.kind, p.models) for p in settings.providers] == [
        ("mock", "mock", ["mock/*"]), ("anthropic", "anthropic", ["claude-*"]), ("openai", "openai", ["*"])]
    router = Router([build_provider(p, settings) for p in settings.providers])
    assert router.route("claude-haiku-4-5")[0] == "anthropic" and router.route("gpt-4o-mini")[0] == "openai"
    provider = router.by_name["anthropic"]
    assert isinstance(provider, AnthropicProvider) and provider.url == "http://127.0.0.1:1/v1/messages"
    default = Settings.load({"AISTATS_DATA_DIR": str(tmp_path), "ANTHROPIC_API_KEY": "sk-ant"})
    assert isinstance(p := build_provider(default.providers[1], default), AnthropicProvider)
    assert p.url == "https://api.anthropic.com/v1/messages"
    assert [x.name for x in Settings.load({"AISTATS_DATA_DIR": str(tmp_path)}).providers] == ["mock"]
