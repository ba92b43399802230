"""Registered webhook endpoints of a workspace: create, list, get, update, delete, rotate the secret, test.

The rules (bodies, events, secrets, the rotation's overlap) are domain/webhook_endpoints.py; the rows are
storage/webhook_endpoints.py. Another workspace's endpoint, or a deleted one, is a 404 like an unknown id.
The test delivery is one signed POST of a synthetic event through the deliverer's own `post`, so it obeys the
same SSRF rule and shows a local target's answer no more than a real delivery does (no status, no preview,
one error message).
"""

from __future__ import annotations

import builtins
import time
from typing import Any

import orjson

from aistats_gateway import ids
from aistats_gateway.clock import Clock
from aistats_gateway.config import WebhookConfig
from aistats_gateway.domain import webhook_endpoints as rules
from aistats_gateway.errors import Conflict, InvalidRequest, NotFound, excerpt
from aistats_gateway.storage.webhook_endpoints import Row, WebhookEndpoints
from aistats_gateway.webhooks import signer
from aistats_gateway.webhooks.deliverer import post, system_resolve

MAX_ENDPOINTS = 100  # per workspace (not counting deleted ones): as many as one list page shows
TEST_EVENT = "webhook_endpoint.test"


class WebhookEndpointService:
    def __init__(self, endpoints: WebhookEndpoints, cfg: WebhookConfig, clock: Clock, *,
                 resolve: Any = system_resolve) -> None:
        self.endpoints = endpoints
        self.cfg = cfg
        self.clock = clock
        self.resolve = resolve

    async def create(self, workspace_id: str, body: dict[str, Any]) -> Row:
        """The new endpoint, with its secret (shown this once)."""
        values = rules.parse_create(body, allow_local=self.cfg.allow_local)
        if await self.endpoints.count(workspace_id) >= MAX_ENDPOINTS:
            raise Conflict(f"This workspace has {MAX_ENDPOINTS} webhook endpoints, the most it may have; delete "
                           "one first.", code="too_many_webhook_endpoints", param="url")
        now = int(self.clock.now())
        return await self.endpoints.insert({
            **values, "id": "we_" + ids.ulid(), "workspace_id": workspace_id, "status": "active",
            "secret": rules.new_secret(), "previous_secret": None, "previous_secret_until": None,
            "created_at": now, "updated_at": now, "deleted_at": None})

    async def list(self, workspace_id: str, *, limit: int, offset: int,
                   include_deleted: bool) -> tuple[builtins.list[Row], bool]:
        return await self.endpoints.page(workspace_id, limit=limit, offset=offset, include_deleted=include_deleted)

    async def get(self, workspace_id: str, endpoint_id: str) -> Row:
        return _found(await self.endpoints.get(workspace_id, endpoint_id), endpoint_id)

    async def update(self, workspace_id: str, endpoint_id: str, body: dict[str, Any]) -> Row:
        values = rules.parse_update(body, allow_local=self.cfg.allow_local)
        return _found(await self.endpoints.update(workspace_id, endpoint_id, values), endpoint_id)

    async def delete(self, workspace_id: str, endpoint_id: str) -> None:
        if not await self.endpoints.delete(workspace_id, endpoint_id):
            _found(None, endpoint_id)

    async def rotate(self, workspace_id: str, endpoint_id: str, body: dict[str, Any]) -> Row:
        """A new current secret (returned, shown this once); the old one signs too for the overlap window."""
        overlap = rules.parse_overlap(body)
        return _found(await self.endpoints.rotate(workspace_id, endpoint_id, rules.new_secret(), overlap),
                      endpoint_id)

    async def test(self, workspace_id: str, endpoint_id: str) -> dict[str, Any]:
        """One signed synthetic delivery, now, without retries: `{ok, event_id, status_code,
        response_body_preview, error}` (the SDKs' WebhookEndpointTestResponse). A disabled endpoint is tested
        too: that is how one checks a receiver before enabling it again."""
        endpoint = await self.get(workspace_id, endpoint_id)
        now = self.clock.now()
        event_id = ids.event_id()
        body = orjson.dumps({
            "id": event_id, "type": TEST_EVENT, "created_at": int(now),
            "delivery": {"key": TEST_EVENT, "attempt": 1, "max_attempts": 1},
            "data": {"object": "webhook_endpoint", "id": endpoint["id"], "name": endpoint["name"], "test": True},
        })
        secrets = rules.signing_secrets(endpoint["secret"], endpoint["previous_secret"],
                                        endpoint["previous_secret_until"], now)
        headers = signer.headers(secrets=secrets, timestamp=int(now), body=body, event_id=event_id,
                                 event_type=TEST_EVENT, delivery_key=TEST_EVENT, attempt=1, max_attempts=1)
        started = time.monotonic()
        sent = await post(endpoint["url"], body, headers, resolve=self.resolve, allow_local=self.cfg.allow_local,
                          timeout_seconds=self.cfg.timeout_seconds, log_id=event_id)
        return {"ok": sent.error is None, "event_id": event_id, "status_code": sent.status,
                "response_body_preview": sent.preview, "error": sent.error,
                "duration_ms": int((time.monotonic() - started) * 1000)}


def _found(row: Row | None, endpoint_id: str) -> Row:
    if row is None:
        raise NotFound(f"Webhook endpoint not found: no endpoint with id '{excerpt(endpoint_id)}' in this "
                       "workspace.", code="webhook_endpoint_not_found", param="id")
    return row


def check_batch_endpoint(row: Row | None, endpoint_id: str) -> None:
    """A batch may name only an active endpoint of its own workspace (`webhook_endpoint_id`)."""
    if row is None:
        raise NotFound(f"No webhook endpoint with id '{excerpt(endpoint_id)}' in this workspace.",
                       code="webhook_endpoint_not_found", param="webhook_endpoint_id")
    if row["status"] != "active":
        raise InvalidRequest(f"Webhook endpoint '{endpoint_id}' is {row['status']}; enable it (PATCH "
                             "/v1/webhook-endpoints/{id} with status \"active\") or name another.",
                             code="webhook_endpoint_inactive", param="webhook_endpoint_id")
