"""Errors raised by the SDK: one class per error `type` of the gateway's envelope."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """Base class; `status_code`, `code`, `param`, `request_id` and the raw `body` when the server answered."""

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None,
                 param: str | None = None, request_id: str | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.param = param
        self.request_id = request_id
        self.body = body


AIStatsError = APIError  # the name earlier releases used


class APIConnectionError(APIError):
    """The gateway could not be reached."""


class BadRequestError(APIError): ...
class AuthenticationError(APIError): ...
class InsufficientFundsError(APIError): ...
class PermissionDeniedError(APIError): ...
class NotFoundError(APIError): ...
class ConflictError(APIError): ...
class PayloadTooLargeError(APIError): ...
class RateLimitError(APIError): ...
class InternalServerError(APIError): ...


BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError, 401: AuthenticationError, 402: InsufficientFundsError, 403: PermissionDeniedError,
    404: NotFoundError, 409: ConflictError, 413: PayloadTooLargeError, 429: RateLimitError,
}


def from_response(status: int, body: Any) -> APIError:
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message") or f"HTTP {status}")
    cls = BY_STATUS.get(status, InternalServerError if status >= 500 else APIError)
    return cls(message, status_code=status, code=error.get("code"), param=error.get("param"),
               request_id=body.get("request_id") if isinstance(body, dict) else None, body=body)
