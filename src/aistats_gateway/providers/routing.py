"""Which provider serves a model.

Rules, in order: a `<provider>/` prefix naming a configured provider selects it explicitly (the
prefix is dropped before the upstream call, except for the mock provider whose models carry it);
otherwise every provider whose `models` patterns match, in configuration order. The batch's
`provider` preferences narrow and reorder them: `only` and `ignore` filter; `sort` (price | latency |
throughput, ranked by a key the executor supplies from prices and lane statistics) reorders; `order`
names providers to try first, in that order, ahead of the sorted rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aistats_gateway.providers.base import Provider


class Router:
    def __init__(self, providers: Sequence[Provider]) -> None:
        self.providers = list(providers)
        self.by_name = {p.name: p for p in providers}

    def candidates(self, model: str, prefs: dict[str, Any] | None = None,
                   rank: Callable[[Provider, str], float] | None = None) -> list[Provider]:
        prefix, _, rest = model.partition("/")
        if rest and prefix in self.by_name and self.by_name[prefix].kind != "mock":
            found = [self.by_name[prefix]]
        else:
            found = [p for p in self.providers if p.serves(model)]
        if prefs:
            only = prefs.get("only")
            if only:
                found = [p for p in found if p.name in only]
            ignore = prefs.get("ignore") or []
            found = [p for p in found if p.name not in ignore]
            if rank is not None:
                ranker = rank
                found.sort(key=lambda p: ranker(p, model))
            order = prefs.get("order") or []
            if order:
                position = {name: i for i, name in enumerate(order)}
                found.sort(key=lambda p: position.get(p.name, len(position)))
        return found

    def route(self, model: str, prefs: dict[str, Any] | None = None) -> tuple[str | None, str | None]:
        found = self.candidates(model, prefs)
        if found:
            return found[0].name, None
        configured = ", ".join(p.name for p in self.providers)
        if prefs and (prefs.get("only") or prefs.get("ignore")):
            return None, (f"No provider allowed by the batch's 'provider' preferences serves model "
                          f"'{model}' (configured providers: {configured}).")
        hint = ("set OPENAI_API_KEY (and OPENAI_BASE_URL for any OpenAI-compatible server) or add a "
                "[[providers]] entry to the config file")
        return None, (f"No configured provider serves model '{model}' (configured: {configured}); "
                      f"{hint}. Built-in models: mock/echo, mock/slow, mock/reject.")

    def upstream_model(self, provider: Provider, model: str) -> str:
        prefix, _, rest = model.partition("/")
        if rest and prefix == provider.name and provider.kind != "mock":
            return rest
        return model
