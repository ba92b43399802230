"""Request-scoped access to the composed gateway (built once in app.py) and to the caller's workspace."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from aistats_gateway.app import Gateway


def gateway(request: HTTPConnection) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


async def workspace(request: Request) -> str:
    return await gateway(request).auth(request)


def base_url(request: Request) -> str:
    configured = gateway(request).settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


Workspace = Annotated[str, Depends(workspace)]
