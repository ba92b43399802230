"""Seeded fuzz of the pure request handlers that take a line's body as it came: the Anthropic translators
(OpenAI chat/responses → Messages) and the fake Anthropic upstream's validation and answer. Random bodies of
every shape must be translated, or refused with the handler's own error naming the field, never raise
anything else (in the gateway that became an 'internal_error' line; in the fake, an HTTP 500)."""

from __future__ import annotations

import random
import traceback
from typing import Any

from aistats_gateway.providers.anthropic_answers import to_chat_completion, to_response
from aistats_gateway.providers.anthropic_translate import TranslationError, chat_to_messages, responses_to_messages
from aistats_gateway.testing.anthropic_upstream import AnthropicUpstream, Invalid, validate

ATOMS: list[Any] = [None, True, False, 0, 1, -1, 1.5, "", "x", "auto", "none", "required", "function", "text",
                    "image_url", "user", "assistant", "system", "tool", "developer", "tool_use", "tool_result",
                    "data:image/png;base64,AAAA", "https://x/y.png", "{}", "[]", [], {}]
KEYS = ["role", "content", "type", "text", "image_url", "url", "tool_calls", "id", "function", "name", "arguments",
        "tool_call_id", "cache_control", "call_id", "output", "parameters", "input", "tool_use_id", "source",
        "input_schema", "format"]
ANSWER = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "end_turn",
          "content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "t", "name": "f", "input": {}}],
          "usage": {"input_tokens": 1, "output_tokens": 1}}


class Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if depth > 3 or r < 0.5:
            return self.rng.choice(ATOMS)
        if r < 0.75:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 3))]
        return {self.rng.choice(KEYS): self.value(depth + 1) for _ in range(self.rng.randint(0, 4))}

    def message(self, role: Any) -> dict[str, Any]:
        message = {"role": role, "content": self.value(1) if self.rng.random() < 0.7 else "hi"}
        for key in self.rng.sample(KEYS, self.rng.randint(0, 3)):
            message[key] = self.value(1)
        return message


def crashes(run: Any, iterations: int) -> list[str]:
    found: dict[tuple[str, int], str] = {}
    for i in range(iterations):
        try:
            run(i)
        except (TranslationError, Invalid):
            pass
        except Exception as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            found.setdefault((type(exc).__name__, frame.lineno or 0), f"{frame.name}:{frame.lineno} {exc!r}")
    return sorted(found.values())


def test_the_translators_refuse_or_translate_every_body() -> None:
    gen = Gen(11)
    roles = ["user", "assistant", "system", "tool", "developer"]

    def run(i: int) -> None:
        if i % 2:
            body: dict[str, Any] = {"model": "claude", "messages": [gen.message(gen.rng.choice(roles + ATOMS[:6]))
                                                                     for _ in range(gen.rng.randint(1, 4))]}
            for key in gen.rng.sample(["tools", "tool_choice", "max_tokens", "temperature", "stop", "n", "user",
                                       "response_format", "parallel_tool_calls", "logprobs"], gen.rng.randint(0, 3)):
                body[key] = gen.value()
            chat_to_messages(body)
            to_chat_completion(ANSWER)
        else:
            body = {"model": "claude", "input": gen.value() if gen.rng.random() < 0.5 else
                    [gen.message(gen.rng.choice(roles)) for _ in range(gen.rng.randint(1, 3))]}
            for key in gen.rng.sample(["instructions", "tools", "tool_choice", "max_output_tokens", "text",
                                       "reasoning", "temperature", "previous_response_id"], gen.rng.randint(0, 3)):
                body[key] = gen.value()
            responses_to_messages(body)
            to_response(ANSWER, body)

    assert crashes(run, 6000) == []


def test_the_fake_anthropic_upstream_answers_400_not_500() -> None:
    gen = Gen(12)
    upstream = AnthropicUpstream()

    def run(i: int) -> None:
        blocks = [{"type": gen.rng.choice(["text", "tool_use", "tool_result", "image", gen.value()]),
                   **{k: gen.value(1) for k in gen.rng.sample(KEYS, gen.rng.randint(0, 3))}}
                  for _ in range(gen.rng.randint(1, 3))]
        messages = [{"role": "user" if j % 2 == 0 else "assistant",
                     "content": gen.rng.choice(["hi", blocks, gen.value()])} for j in range(gen.rng.randint(1, 3))]
        body: dict[str, Any] = {"model": "claude", "max_tokens": 10, "messages": messages}
        for key in gen.rng.sample(["tools", "tool_choice", "system", "temperature", "stop_sequences", "metadata"],
                                  gen.rng.randint(0, 3)):
            body[key] = gen.value()
        validate(body)
        upstream.answer(body, "msg_fuzz")

    assert crashes(run, 6000) == []
