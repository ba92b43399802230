"""The TOML settings file: which tables it may hold, and errors that name the key, the file and a close match.

The tables are derived from the settings model (config.py), so every section the model has is read — a
section missing from a hand-written list was once silently ignored (`[retention]`). `[server]` and
`[storage]` group top-level settings; `[[providers]]` and `[[prices]]` are arrays of tables; every other table
is the settings section of the same name. Anything else stops the gateway at start, with the key's place.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

# Tables that group top-level settings (the model keeps these flat).
GROUPS: dict[str, tuple[str, ...]] = {
    "server": ("host", "port", "public_url", "api_key"),
    "storage": ("data_dir", "database_url", "sqlite_busy_timeout_ms", "blob_url", "redis_url"),
}
ARRAYS = ("providers", "prices")  # arrays of tables, taken as they are


class UnknownSetting(ValueError):
    """A key the settings do not have; the message names it, where it was, and a close match if any."""


def hint(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The settings model inside an annotation (`X`, `list[X]`, `dict[str, X]`, `X | None`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return None
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def sections(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """The model's fields that are settings sections themselves: each is a TOML table of the same name."""
    out: dict[str, type[BaseModel]] = {}
    for name, field in model.model_fields.items():
        if name in ARRAYS:
            continue
        inner = field.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            out[name] = inner
    return out


def from_toml(toml: Mapping[str, Any], model: type[BaseModel], source: str) -> dict[str, Any]:
    """The file's settings in the model's shape; raises UnknownSetting for a table or key it does not have."""
    tables = sections(model)
    known_tables = [*GROUPS, *tables, *ARRAYS]
    out: dict[str, Any] = {}
    for key, value in toml.items():
        if key in GROUPS:
            if not isinstance(value, Mapping):
                raise UnknownSetting(f"{source}: '{key}' must be a table ([{key}])")
            for inner, inner_value in value.items():
                if inner not in GROUPS[key]:
                    raise UnknownSetting(f"{source}: unknown setting '{inner}' in [{key}]{hint(inner, GROUPS[key])}")
                out[inner] = inner_value
        elif key in tables or key in ARRAYS:
            out[key] = value
        else:
            raise UnknownSetting(f"{source}: unknown section or setting '{key}'{hint(key, known_tables)}; the file "
                                 f"may hold {', '.join(f'[{t}]' for t in [*GROUPS, *tables])}, [[providers]], "
                                 f"[[prices]]")
    return out


def place(loc: Sequence[int | str]) -> str:
    """Where a validation error's location is in the file: `[executor]`, `[[providers]] #2`, …"""
    if not loc:
        return "the settings"
    head = loc[0]
    for group, keys in GROUPS.items():
        if head in keys:
            return f"[{group}]"
    if head in ARRAYS:
        where = f"[[{head}]]"
        if len(loc) > 1 and isinstance(loc[1], int):
            where += f" #{loc[1] + 1}"
        rest = [str(p) for p in loc[2:-1]]
        return where + (f" ({'.'.join(rest)})" if rest else "")
    return f"[{'.'.join(str(p) for p in loc[:-1])}]" if len(loc) > 1 else f"[{head}]"


def known_keys(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The keys the model accepts at the table holding `loc[-1]` (for a "did you mean" hint)."""
    current: type[BaseModel] | None = model
    skip_next = False
    for part in loc[:-1]:
        if current is None:
            return []
        if isinstance(part, int) or skip_next:
            skip_next = False
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        skip_next = typing.get_origin(field.annotation) is dict
        current = _model_in(field.annotation)
    return list(current.model_fields) if current is not None else []
