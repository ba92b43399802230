"""The AI Stats Gateway client SDK (sync and async); depends on httpx only.

    from aistats import AIStats
    client = AIStats(api_key=..., base_url="http://127.0.0.1:8787/v1")
    f = client.upload_file(purpose="batch", file="requests.jsonl")
    batch = client.create_batch(endpoint="/v1/chat/completions", input_file_id=f.id, completion_window="24h")
"""

from aistats._client import AIStats, AsyncAIStats
from aistats._errors import (
    AIStatsError,
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InsufficientFundsError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
)
from aistats._types import APIObject, Batch, FileObject, Page
from aistats._webhooks import compute_signature, verify_webhook

__all__ = [
    "AIStats", "AIStatsError", "APIConnectionError", "APIError", "APIObject", "AsyncAIStats", "AuthenticationError",
    "BadRequestError", "Batch", "ConflictError", "FileObject", "InsufficientFundsError", "InternalServerError",
    "NotFoundError", "Page", "PayloadTooLargeError", "PermissionDeniedError", "RateLimitError", "compute_signature",
    "verify_webhook",
]
