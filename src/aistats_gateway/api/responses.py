"""The JSON response class of every route: orjson-rendered (fast, and exact for ints and bytes)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import Response


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError as exc:
            if "64-bit" not in str(exc):
                raise
            # orjson refuses integers beyond 64 bits; JSON has no such limit and the value is exact as it is
            # (a dry run pricing a line with max_tokens=2**62 at the full cap, say).
            return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
