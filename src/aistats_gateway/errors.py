"""The GatewayError tree: every error a client can see, and its one wire form.

    GatewayError                       (server_error, 500)
    ├── InvalidRequest                 (invalid_request_error, 400)
    ├── AuthenticationFailed           (authentication_error, 401)
    ├── InsufficientFunds              (insufficient_funds, 402)
    ├── PermissionDenied               (permission_error, 403)
    ├── NotFound                       (not_found_error, 404)
    ├── MethodNotAllowed               (invalid_request_error, 405)
    ├── RequestTimeout                 (invalid_request_error, 408)
    ├── Conflict                       (conflict_error, 409)
    ├── PayloadTooLarge                (payload_too_large, 413)
    ├── UpgradeRequired                (invalid_request_error, 426)
    ├── RateLimited                    (rate_limit_error, 429)
    ├── HeaderTooLarge                 (invalid_request_error, 431)
    ├── ServiceUnavailable             (server_error, 503)
    └── InsufficientStorage            (server_error, 507)

Services raise these; the API layer renders them as the envelope of API.md. Nothing here does I/O.
A bad input must never surface as a bare 500, so anything a user can get wrong has a subclass
with a message that says what was wrong, where (`param`), and what to do.

The InternalError tree: what the layers below the services raise to each other. None of these reaches a
client as such (a service turns the ones a user can cause into a GatewayError above; the executor turns
upstream failures into result lines), so they carry no status code, only what the catcher needs to decide.

    InternalError
    ├── StorageError                   (our database or blob store)
    │   ├── StaleTransition            a compare-and-set matched no row: someone else moved first
    │   ├── InputFileUnavailable       a batch's input file cannot be read any more
    │   └── StorageUnavailable         the database is busy or unreachable (also a ServiceUnavailable: 503)
    └── ProviderError                  (an upstream provider)
        ├── UpstreamUnavailable        no usable answer to one request (`kind`: timeout, connection, ...)
        └── NativeError                a provider batch API call failed (`status` when it answered)
            ├── Rejected               a definitive refusal: nothing was created or changed
            └── Unavailable            no usable answer: a create may or may not have happened
"""

from __future__ import annotations

from typing import Any, ClassVar


def excerpt(text: str, limit: int = 100) -> str:
    """A caller's value as an error message quotes it: whole when short, else its start and its length (a
    60 MB 'execution' must not come back as a 60 MB message, nor sit in a batch's stored errors)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


class GatewayError(Exception):
    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.extra = extra or {}
        self.headers = headers or {}  # e.g. Retry-After on a 503

    def body(self, request_id: str | None) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
            "param": self.param,
        }
        error.update(self.extra)
        return {"error": error, "status_code": self.status_code, "request_id": request_id}


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"
    default_code = "invalid_request"


class AuthenticationFailed(GatewayError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class InsufficientFunds(GatewayError):
    status_code = 402
    error_type = "insufficient_funds"
    default_code = "insufficient_funds"


class PermissionDenied(GatewayError):
    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class NotFound(GatewayError):
    status_code = 404
    error_type = "not_found_error"
    default_code = "not_found"


class MethodNotAllowed(GatewayError):
    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class UpgradeRequired(GatewayError):
    status_code = 426
    error_type = "invalid_request_error"
    default_code = "websocket_upgrade_required"


class RequestTimeout(GatewayError):
    status_code = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class Conflict(GatewayError):
    status_code = 409
    error_type = "conflict_error"
    default_code = "conflict"


class PayloadTooLarge(GatewayError):
    status_code = 413
    error_type = "payload_too_large"
    default_code = "payload_too_large"


class RateLimited(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limited"


class HeaderTooLarge(GatewayError):
    status_code = 431
    error_type = "invalid_request_error"
    default_code = "request_header_too_large"


class ServiceUnavailable(GatewayError):
    status_code = 503
    error_type = "server_error"
    default_code = "service_unavailable"


class InsufficientStorage(GatewayError):
    status_code = 507
    error_type = "server_error"
    default_code = "insufficient_storage"


class InternalError(Exception):
    """The root of the errors the layers below the services raise to each other (the tree above)."""


class StorageError(InternalError):
    """Our own storage failed or refused an operation."""


class StaleTransition(StorageError):
    """A compare-and-set status change matched no row: someone else moved the batch (or native job) first.

    Callers decide whether that is benign (a concurrent cancel) or a conflict.
    """


class InputFileUnavailable(StorageError):
    """The batch's input file cannot be read any more (its row or blob is gone): its lines cannot be sent."""


class ProviderError(InternalError):
    """An upstream provider gave no usable answer, or refused."""


class UpstreamUnavailable(ProviderError):
    """No usable answer: `kind` is timeout | connection | invalid_response | too_large."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class NativeError(ProviderError):
    """A provider batch API call failed; `status` is the HTTP status when the provider answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Rejected(NativeError):
    """The provider refused the call (a definitive 4xx): nothing was created or changed."""


class Unavailable(NativeError):
    """No usable answer: timeout, connection failure, 5xx or 429. A create may or may not have happened."""


class StorageUnavailable(StorageError, ServiceUnavailable):
    """Our database is busy or unreachable (a driver's operational error, translated by storage.database):
    nothing was lost, the caller may retry.

    An internal StorageError like its siblings (the layers below catch it as one), and also the one internal
    error with a wire form of its own: a request that meets it can only be told to retry, so it is a
    ServiceUnavailable too and the API answers it as 503 `storage_unavailable` (api.errors logs it as a warning)."""

    default_code = "storage_unavailable"
    MESSAGE = ("The gateway's database is busy or unavailable (for example locked by another process); nothing "
               "was lost — retry shortly.")

    def __init__(self, detail: str = "") -> None:
        super().__init__(self.MESSAGE, code=self.default_code)
        self.detail = detail
