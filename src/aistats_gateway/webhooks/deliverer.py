"""The deliverer: sends queued webhook events, signed, to SSRF-checked addresses, with retries.

One background loop claims due events (a lease on each, so no attempt is sent twice) when a delivery
slot is free for them (fair shares per workspace and target: fairness.py; a target that keeps timing
out rests), sends each with a bounded timeout and no redirects, and records the attempt: delivered on
2xx; otherwise the next attempt per the retry schedule (with jitter) or `failed_permanently` after the
last one. Every attempt re-resolves and re-checks the target and connects only to an address that
passed. A local target's attempt (loopback, allowed only by `[webhooks] allow_local`) records only
whether it was delivered: no status, no body preview, one error message for every failure, so a
workspace cannot read or port-scan services on the gateway's host; the real error goes to the log.
An event of a batch that names a registered endpoint is sent to the endpoint's URL as it is now, signed with
its current secrets (both, during a rotation's overlap); a disabled or deleted endpoint's event fails for good
without being sent. After a restart, overdue events are spread over a few seconds instead of sent in one burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult

from aistats_gateway.clock import Clock
from aistats_gateway.config import WebhookConfig
from aistats_gateway.domain.events import status_change
from aistats_gateway.domain.urlguard import Target, UnsafeTarget, resolve_checked, target_key
from aistats_gateway.domain.webhook_endpoints import signing_secrets
from aistats_gateway.failpoints import NONE as NO_FAILPOINTS
from aistats_gateway.failpoints import Failpoints
from aistats_gateway.metrics import Metrics
from aistats_gateway.storage.outbox import Event, Outbox
from aistats_gateway.storage.records import BatchRecord
from aistats_gateway.storage.webhook_endpoints import WebhookEndpoints
from aistats_gateway.tasks import cancel_and_wait
from aistats_gateway.webhooks import signer
from aistats_gateway.webhooks.fairness import Candidate, Load, Rests, pick

log = logging.getLogger(__name__)
PREVIEW_CHARS = 500
LOCAL_FAILURE = "the local target did not accept the delivery (details are in the gateway's log)"


class _PinnedResolver(AbstractResolver):
    """Answers only with the addresses the guard already checked: no second, unchecked lookup."""

    def __init__(self, host: str, addresses: list[str]) -> None:
        self.host = host
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        if host.rstrip(".") != self.host.rstrip("."):
            raise OSError(f"unexpected host {host}")
        return [
            {"hostname": host, "host": a, "port": port,
             "family": socket.AF_INET6 if ":" in a else socket.AF_INET, "proto": 0,
             "flags": socket.AI_NUMERICHOST}
            for a in self.addresses
        ]

    async def close(self) -> None:
        return None


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class Deliverer:
    def __init__(self, cfg: WebhookConfig, outbox: Outbox, clock: Clock, render: Any, *, allow_local: bool,
                 resolve: Any = system_resolve, failpoints: Failpoints = NO_FAILPOINTS,
                 metrics: Metrics | None = None, node_prefix: str = "local:", owner: str = "local:deliverer",
                 endpoints: WebhookEndpoints | None = None) -> None:
        self.endpoints = endpoints  # registered endpoints, read at each attempt of an event naming one
        self.node_prefix = node_prefix
        self.owner = owner
        self.failpoints = failpoints
        self.metrics = metrics
        self.cfg = cfg
        self.outbox = outbox
        self.clock = clock
        self.render = render  # async BatchRecord -> dict (the public batch object)
        self.allow_local = allow_local
        self.resolve = resolve
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._load = Load()
        self._rests = Rests(cfg.target_rest_seconds)
        self._rng = random.Random()

    def notify(self, _record: BatchRecord, queued: bool) -> None:
        if queued:
            self._wake.set()

    async def start(self) -> None:
        now = self.clock.now()
        spread = await self.outbox.spread_overdue(
            now, self.cfg.restart_spread_seconds, [self._rng.random() for _ in range(64)], self.node_prefix,
            self.owner)
        if spread:
            log.info("spreading %d overdue webhook events over %.0fs", spread, self.cfg.restart_spread_seconds)
        self._task = asyncio.create_task(self._loop(), name="webhook-deliverer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._inflight:  # let deliveries on the wire finish (bounded by their own timeout)
            await asyncio.wait(list(self._inflight), timeout=self.cfg.timeout_seconds)
        await cancel_and_wait([self._task, *self._inflight])

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook delivery round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.poll_interval_seconds)

    async def _round(self) -> None:
        free = self.cfg.max_concurrent_deliveries - self._load.total
        if free <= 0:
            return  # a finishing delivery wakes the loop
        now = self.clock.now()
        per_workspace = self.cfg.max_deliveries_per_workspace
        rows = await self.outbox.due_candidates(
            now, per_url=self.cfg.max_deliveries_per_target, per_workspace=2 * per_workspace, limit=200)
        candidates = [Candidate(event_id, ws, target_key(url)) for event_id, ws, url in rows]
        resting = self._rests.resting(now)
        start, rest = pick(candidates, self._load, slots=self.cfg.max_concurrent_deliveries,
                           per_workspace=per_workspace, per_target=self.cfg.max_deliveries_per_target,
                           resting=set(resting))
        postponed: dict[float, list[str]] = {}
        for c in rest:
            postponed.setdefault(resting[c.key], []).append(c.id)
        for until, event_ids in postponed.items():
            await self.outbox.postpone(event_ids, now, until)
        if postponed:
            self._wake.set()  # a resting target's backlog leaves the due set a sample at a time: go on at once
        for c in start:
            lease = now + self.cfg.timeout_seconds * 3 + 30
            event = await self.outbox.claim(c.id, now, lease, self.owner)
            if event is None:
                continue  # another process took it
            self.failpoints.hit("after_event_claimed")
            self._load.add(c)
            task = asyncio.create_task(self._deliver(event, c))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _deliver(self, event: Event, slot: Candidate) -> None:
        try:
            timed_out = await self._attempt(event)
            self._rests.record(slot.key, timed_out=timed_out, now=self.clock.now())
        finally:
            self._load.remove(slot)
            self._wake.set()

    async def _attempt(self, event: Event) -> bool:
        """One attempt, recorded; True if it timed out (the target then rests)."""
        webhook = event.snapshot.webhook or {}
        url, secrets, refused = str(webhook.get("url", "")), [webhook["secret"]] if webhook.get("secret") else [], None
        now = self.clock.now()
        if webhook.get("endpoint_id"):  # a registered endpoint: its URL and secrets as they are now
            endpoint = await self.endpoints.for_delivery(str(webhook["endpoint_id"])) if self.endpoints else None
            if endpoint is None or endpoint["status"] != "active":
                refused = (f"the webhook endpoint {webhook['endpoint_id']} is "
                           f"{endpoint['status'] if endpoint else 'gone'}: nothing more is sent to it")
            else:
                url = endpoint["url"]
                secrets = signing_secrets(endpoint["secret"], endpoint["previous_secret"],
                                          endpoint["previous_secret_until"], now)
        payload: dict[str, Any] = {
            "id": event.id, "type": event.type, "created_at": event.created_at,
            "delivery": {"key": event.delivery_key, "attempt": event.attempts, "max_attempts": event.max_attempts},
            "data": await self.render(event.snapshot),
        }
        change = status_change(event.type, event.delivery_key)
        if change is not None:
            payload["status_change"] = change
        started = time.monotonic()
        if refused is not None:
            sent = Sent(None, None, refused, False, False)
        else:
            body = orjson.dumps(payload)
            headers = signer.headers(
                secrets=secrets, timestamp=int(now), body=body, event_id=event.id, event_type=event.type,
                delivery_key=event.delivery_key, attempt=event.attempts, max_attempts=event.max_attempts)
            sent = await post(url, body, headers, resolve=self.resolve, allow_local=self.allow_local,
                              timeout_seconds=self.cfg.timeout_seconds, log_id=event.id,
                              log_extra={"batch_id": event.batch_id})
        delivered = sent.error is None
        now = self.clock.now()
        next_at: float | None = None
        if not delivered and refused is None and event.attempts < event.max_attempts:
            base = self.cfg.retry_schedule_seconds[event.attempts - 1]
            next_at = now + base * (1 + self.cfg.jitter_fraction * (2 * self._rng.random() - 1))
        outcome = await self.outbox.record_attempt(
            event, now=now, delivered=delivered, next_attempt_at=next_at, response_status=sent.status,
            body_preview=sent.preview, error=sent.error, duration_ms=int((time.monotonic() - started) * 1000))
        if self.metrics is not None:
            self.metrics.webhooks.labels(outcome).inc()
        if not delivered:
            log.info("webhook %s (%s) attempt %d: %s -> %s", event.id, event.type, event.attempts, sent.error,
                     outcome, extra={"batch_id": event.batch_id})
        return sent.timed_out


@dataclass(frozen=True)
class Sent:
    """How one POST went: `error` None when delivered (2xx). A local target's shows no status nor preview."""

    status: int | None
    preview: str | None
    error: str | None
    timed_out: bool
    local: bool


async def post(url: str, body: bytes, headers: dict[str, str], *, resolve: Any, allow_local: bool,
               timeout_seconds: float, log_id: str, log_extra: dict[str, Any] | None = None) -> Sent:
    """One signed POST to an SSRF-checked address, no redirects, bounded in time; never raises. Used for every
    outbox attempt and for an endpoint's test delivery (services/webhook_endpoints.py), so both obey one rule."""
    target: Target | None = None
    status: int | None = None
    preview: str | None = None
    error: str | None = None
    timed_out = False
    try:
        target = await resolve_checked(url, resolve, allow_local=allow_local)
        connector = aiohttp.TCPConnector(resolver=_PinnedResolver(target.host, target.addresses),
                                         use_dns_cache=False, force_close=True)
        timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        async with (aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                    session.post(target.request_url(url), data=body, headers=headers,
                                 allow_redirects=False) as resp):
            status = resp.status
            if not target.local:  # a local service's answer is never shown to the workspace
                raw = await resp.content.read(PREVIEW_CHARS)
                preview = raw.decode("utf-8", "replace")
        if not 200 <= status < 300:
            error = f"receiver answered HTTP {status}"
    except UnsafeTarget as exc:
        error = f"refused target: {exc}"
        if exc.__cause__ is not None:
            log.info("webhook %s refused: %s", log_id, exc.__cause__, extra=log_extra)
    except TimeoutError:
        error = f"no answer within {timeout_seconds:g}s"
        timed_out = True
    except (aiohttp.ClientError, OSError, ValueError) as exc:  # ValueError: e.g. a host IDNA cannot encode
        error = f"delivery failed: {exc.__class__.__name__}: {exc}"
    except Exception as exc:  # a bug must not leave the event claimed with no attempt recorded, forever
        log.exception("webhook %s delivery hit an unexpected error", log_id, extra=log_extra)
        error = f"delivery failed: {exc.__class__.__name__}: {exc}"
    local = target is not None and target.local
    if local:
        if error is not None:
            log.info("webhook %s to a local target: %s", log_id, error, extra=log_extra)
            error = LOCAL_FAILURE
        status = None
    return Sent(status, preview, error, timed_out, local)
