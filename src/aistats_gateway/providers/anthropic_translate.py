"""OpenAI request bodies → Anthropic Messages requests, pure (no I/O).

Owns the request half of the Anthropic translation: a `/v1/chat/completions` or `/v1/responses` body
becomes a `/v1/messages` body, so a user's OpenAI-format batch pointed at `claude-*` models just works.
The answer half (Messages answers and errors → OpenAI shapes) lives in anthropic_answers.py.

Rules (each rejection is a `TranslationError` naming the field, answered as a per-line 400):
  * system/developer messages (and Responses `instructions`) → top-level `system` text blocks;
  * user/assistant text and content parts; `image_url`/`input_image` → image blocks (data: URLs as base64,
    http(s) as url sources); assistant `tool_calls`/`function_call` items → `tool_use` blocks; `role: tool`
    messages/`function_call_output` items → `tool_result` blocks in a user turn; consecutive turns of one
    role are merged, as Anthropic requires alternating roles;
  * function tools → tools with `input_schema`; `tool_choice` auto/none/required/named → auto/none/any/tool;
    `parallel_tool_calls: false` → `disable_parallel_tool_use`;
  * `max_completion_tokens`/`max_tokens`/`max_output_tokens` → `max_tokens`, DEFAULT_MAX_TOKENS when absent
    (Anthropic requires it); `temperature` (0..1 only), `top_p`, `top_k`, `stop` → `stop_sequences`,
    `user` → `metadata.user_id`;
  * fields that would change what comes back and cannot be honoured (`stream`, `n` > 1, `logprobs`,
    JSON `response_format`/`text.format`, penalties, `logit_bias`, audio, stateful Responses fields, ...) →
    400 naming the field; other OpenAI-only fields (`seed`, `store`, `service_tier`, ...) and unknown
    fields are dropped. `cache_control` on messages and content parts passes through (prompt caching).
    `x_fault` (the test upstreams' fault plan, see testing/) passes through like every body field does on
    the OpenAI-compatible path.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, NoReturn

import orjson

DEFAULT_MAX_TOKENS = 4096
PASSTHROUGH = ("x_fault",)
_DATA_URL = re.compile(r"^data:(image/[a-zA-Z0-9.+-]+);base64,(.*)$", re.DOTALL)
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


class TranslationError(ValueError):
    """The request cannot be expressed for Anthropic; `param` is the body field at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _fail(param: str, why: str) -> NoReturn:
    raise TranslationError(f"'{param}' {why} (this model is served through the Anthropic Messages API).", param)


def _reject_if(cond: bool, param: str, why: str) -> None:
    if cond:
        _fail(param, why)


def _present(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    return value is not None and value is not False and value != 0 and value != {} and value != []


def _common(body: dict[str, Any], out: dict[str, Any]) -> None:
    """Sampling, stop, user and pass-through fields shared by both OpenAI endpoints."""
    _reject_if(body.get("stream") is True, "stream", "is not supported in batches: remove it or set it to false")
    temperature = body.get("temperature")
    if temperature is not None:
        _reject_if(not isinstance(temperature, (int, float)) or isinstance(temperature, bool)
                   or not 0 <= temperature <= 1, "temperature", "must be a number between 0 and 1 for Claude models")
        out["temperature"] = temperature
    for key in ("top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    for key in ("frequency_penalty", "presence_penalty", "logit_bias", "top_logprobs", "prediction", "audio",
                "web_search_options"):
        _reject_if(_present(body, key), key, "is not supported")
    modalities = body.get("modalities")
    _reject_if(isinstance(modalities, list) and any(m != "text" for m in modalities), "modalities",
               "may only ask for text")
    for key in PASSTHROUGH:
        if key in body:
            out[key] = body[key]


def _max_tokens(body: dict[str, Any], keys: tuple[str, ...], out: dict[str, Any]) -> None:
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        _reject_if(not isinstance(value, int) or isinstance(value, bool) or value < 1, key,
                   "must be a positive integer")
        out["max_tokens"] = value
        return
    out["max_tokens"] = DEFAULT_MAX_TOKENS


def _image(url: Any, param: str) -> dict[str, Any]:
    if not isinstance(url, str) or not url:
        raise TranslationError(f"'{param}' must be a URL string (https:// or data:image/...;base64,...).", param)
    found = _DATA_URL.match(url)
    if found:
        media, data = found.group(1).lower(), found.group(2)
        _reject_if(media not in _IMAGE_TYPES, param,
                   f"has media type {media}; Claude accepts {', '.join(_IMAGE_TYPES)}")
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TranslationError(f"'{param}' is a data: URL whose base64 payload does not decode.", param) from exc
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    _reject_if(not url.startswith(("https://", "http://")), param, "must be an http(s) URL or a base64 data: URL")
    return {"type": "image", "source": {"type": "url", "url": url}}


def _with_cache(block: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _blocks(content: Any, param: str, *, images: bool) -> list[dict[str, Any]]:
    """OpenAI content (a string or a list of parts, chat or Responses flavour) → Anthropic blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if content is None:
        return []
    if not isinstance(content, list):
        raise TranslationError(f"'{param}' must be a string or a list of content parts.", param)
    out: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        if isinstance(part, str):
            out.append({"type": "text", "text": part})
            continue
        if not isinstance(part, dict):
            raise TranslationError(f"'{where}' must be a content part object.", where)
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            text = part.get("text")
            _reject_if(not isinstance(text, str), f"{where}.text", "must be a string")
            if text:
                out.append(_with_cache({"type": "text", "text": text}, part))
        elif kind == "refusal":
            if isinstance(part.get("refusal"), str) and part["refusal"]:
                out.append({"type": "text", "text": part["refusal"]})
        elif kind in ("image_url", "input_image") and images:
            url = part.get("image_url")
            if isinstance(url, dict):
                url = url.get("url")
            field = f"{where}.image_url" + (".url" if kind == "image_url" else "")
            _reject_if(kind == "input_image" and url is None and part.get("file_id") is not None,
                       f"{where}.file_id", "(an OpenAI file id) cannot be sent to Anthropic; inline the image")
            out.append(_with_cache(_image(url, field), part))
        else:
            _fail(f"{where}.type", f"'{kind}' is not a supported content part here")
    return out


class _Turns:
    """Anthropic messages under construction: consecutive blocks of one role merge into one turn."""

    def __init__(self) -> None:
        self.system: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []

    def add(self, role: str, blocks: list[dict[str, Any]], cache_control: Any = None) -> None:
        if not blocks:
            return
        if isinstance(cache_control, dict):
            blocks[-1] = {**blocks[-1], "cache_control": cache_control}
        if self.messages and self.messages[-1]["role"] == role:
            self.messages[-1]["content"].extend(blocks)
        else:
            self.messages.append({"role": role, "content": blocks})

    def finish(self, out: dict[str, Any], where: str) -> dict[str, Any]:
        if not self.messages:
            raise TranslationError(f"'{where}' needs at least one user message (system text alone is not a "
                                   "conversation for Claude).", where)
        for message in self.messages:  # a lone text block reads best (and cheapest) as a plain string
            content = message["content"]
            if len(content) == 1 and content[0]["type"] == "text" and "cache_control" not in content[0]:
                message["content"] = content[0]["text"]
        out["messages"] = self.messages
        if self.system:
            out["system"] = self.system
        return out


def _arguments(raw: Any, param: str) -> Any:
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    try:
        parsed = orjson.loads(raw) if isinstance(raw, str) else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise TranslationError(f"'{param}' must be a JSON object encoded as a string.", param)
    return parsed


def _tool_result(call_id: Any, output: Any, param: str, output_param: str) -> dict[str, Any]:
    if not isinstance(call_id, str) or not call_id:
        raise TranslationError(f"'{param}' is missing: a tool result must name the tool call it answers.", param)
    if isinstance(output, str) or output is None:
        content: Any = output or ""
    elif isinstance(output, list):
        content = _blocks(output, output_param, images=True)
    else:
        content = orjson.dumps(output).decode()
    return {"type": "tool_result", "tool_use_id": call_id, "content": content}


def _tools(tools: Any, choice: Any, parallel: Any, out: dict[str, Any], *, nested: bool) -> None:
    """Function tools (chat: nested under `function`; Responses: flat) and tool_choice."""
    if tools is not None:
        _reject_if(not isinstance(tools, list), "tools", "must be a list")
        converted = []
        for i, tool in enumerate(tools):
            _reject_if(not isinstance(tool, dict) or tool.get("type") != "function", f"tools[{i}].type",
                       f"'{tool.get('type') if isinstance(tool, dict) else tool}' is not supported; only "
                       "function tools translate to Claude")
            spec = tool.get("function") if nested else tool
            _reject_if(not isinstance(spec, dict) or not isinstance(spec.get("name"), str),
                       f"tools[{i}]" + (".function.name" if nested else ".name"), "is required")
            entry: dict[str, Any] = {"name": spec["name"],
                                     "input_schema": spec.get("parameters") or {"type": "object", "properties": {}}}
            if isinstance(spec.get("description"), str):
                entry["description"] = spec["description"]
            converted.append(_with_cache(entry, tool))
        if converted:
            out["tools"] = converted
    if "tools" not in out or (choice is None and parallel is not False):
        return
    mapped: dict[str, Any]
    if choice is None or choice in ("auto", "none"):
        mapped = {"type": choice or "auto"}
    elif choice == "required":
        mapped = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name") if nested else choice.get("name")
        _reject_if(not isinstance(name, str), "tool_choice", "must name the function to call")
        mapped = {"type": "tool", "name": name}
    else:
        raise TranslationError("'tool_choice' must be \"auto\", \"none\", \"required\" or a named function.",
                               "tool_choice")
    if parallel is False and mapped["type"] != "none":
        mapped["disable_parallel_tool_use"] = True
    out["tool_choice"] = mapped


def chat_to_messages(body: dict[str, Any]) -> dict[str, Any]:
    """A `/v1/chat/completions` body → a `/v1/messages` body (raises TranslationError)."""
    out: dict[str, Any] = {"model": body.get("model")}
    _reject_if(isinstance(body.get("n"), int) and body["n"] > 1, "n", "must be 1: Claude answers one choice")
    _reject_if(bool(body.get("logprobs")), "logprobs", "is not supported")
    _reject_if(_present(body, "functions") or _present(body, "function_call"), "functions",
               "(the legacy function-calling fields) is not supported: use 'tools' and 'tool_choice'")
    fmt = body.get("response_format")
    _reject_if(isinstance(fmt, dict) and fmt.get("type") not in (None, "text"), "response_format",
               f"of type '{fmt.get('type') if isinstance(fmt, dict) else fmt}' is not supported")
    _max_tokens(body, ("max_completion_tokens", "max_tokens"), out)
    _common(body, out)
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        _reject_if(not isinstance(stops, list) or not all(isinstance(s, str) for s in stops), "stop",
                   "must be a string or a list of strings")
        if stops:
            out["stop_sequences"] = stops
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        _fail("messages", "must be a non-empty list")
    turns = _Turns()
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        _reject_if(not isinstance(message, dict), where, "must be an object")
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            turns.system.extend(_blocks(content, f"{where}.content", images=False))
        elif role == "user":
            turns.add("user", _blocks(content, f"{where}.content", images=True), message.get("cache_control"))
        elif role == "assistant":
            blocks = _blocks(content, f"{where}.content", images=False)
            calls = message.get("tool_calls") or []
            _reject_if(not isinstance(calls, list), f"{where}.tool_calls", "must be a list of tool calls")
            for j, call in enumerate(calls):
                at = f"{where}.tool_calls[{j}]"
                function = call.get("function") if isinstance(call, dict) else None
                _reject_if(not isinstance(function, dict) or not isinstance(function.get("name"), str)
                           or not isinstance(call.get("id"), str), at, "needs an 'id' and a 'function.name'")
                assert isinstance(function, dict) and isinstance(call, dict)
                blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"],
                               "input": _arguments(function.get("arguments"), f"{at}.function.arguments")})
            turns.add("assistant", blocks, message.get("cache_control"))
        elif role == "tool":
            turns.add("user", [_tool_result(message.get("tool_call_id"), content, f"{where}.tool_call_id",
                                                 f"{where}.content")])
        else:
            _fail(f"{where}.role", f"'{role}' is not supported (use system, developer, user, assistant or tool)")
    _tools(body.get("tools"), body.get("tool_choice"), body.get("parallel_tool_calls"), out, nested=True)
    return turns.finish(out, "messages")


def responses_to_messages(body: dict[str, Any]) -> dict[str, Any]:
    """A `/v1/responses` body → a `/v1/messages` body (raises TranslationError)."""
    out: dict[str, Any] = {"model": body.get("model")}
    for key in ("previous_response_id", "conversation", "prompt", "background", "max_tool_calls"):
        _reject_if(_present(body, key), key, "is not supported (the gateway keeps no Responses state)"
                   if key in ("previous_response_id", "conversation") else "is not supported")
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    _reject_if(isinstance(fmt, dict) and fmt.get("type") not in (None, "text"), "text.format",
               f"of type '{fmt.get('type') if isinstance(fmt, dict) else fmt}' is not supported")
    _max_tokens(body, ("max_output_tokens",), out)
    _common(body, out)
    turns = _Turns()
    instructions = body.get("instructions")
    if instructions is not None:
        turns.system.extend(_blocks(instructions, "instructions", images=False))
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        _fail("input", "must be a string or a non-empty list of items")
    for i, item in enumerate(items):
        where = f"input[{i}]"
        _reject_if(not isinstance(item, dict), where, "must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role in ("system", "developer"):
                turns.system.extend(_blocks(item.get("content"), f"{where}.content", images=False))
            elif role in ("user", "assistant"):
                turns.add(role, _blocks(item.get("content"), f"{where}.content", images=role == "user"),
                          item.get("cache_control"))
            else:
                _fail(f"{where}.role", f"'{role}' is not supported")
        elif kind == "function_call":
            _reject_if(not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str), where,
                       "needs a 'call_id' and a 'name'")
            turns.add("assistant", [{"type": "tool_use", "id": item["call_id"], "name": item["name"],
                                     "input": _arguments(item.get("arguments"), f"{where}.arguments")}])
        elif kind == "function_call_output":
            turns.add("user", [_tool_result(item.get("call_id"), item.get("output"), f"{where}.call_id",
                                                 f"{where}.output")])
        elif kind == "reasoning":
            continue  # another model's reasoning summary: Claude cannot use it
        else:
            _fail(f"{where}.type", f"'{kind}' is not a supported input item")
    _tools(body.get("tools"), body.get("tool_choice"), body.get("parallel_tool_calls"), out, nested=False)
    return turns.finish(out, "input")
