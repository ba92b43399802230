"""A webhook receiver for trying deliveries locally, runnable as its own process.

    python -m aistats_gateway.testing.receiver --port 9200 [--secret S] [--status 200] [--fail-first N] [--hang]

It records every POST (path, headers, body, whether the signature verified with `--secret`) and
answers `--status` (after failing the first N with 503); with `--hang` it never answers at all (a
black hole, to see the gateway's timeouts and fair delivery slots). `GET /_received` returns the records;
`POST /_reset` clears them. The gateway delivers to it only with `[webhooks] allow_local = true`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from aistats_gateway.webhooks.signer import verify


class Receiver:
    def __init__(self, secret: str | None, status: int, fail_first: int, hang: bool = False) -> None:
        self.hang = hang
        self.secret = secret
        self.status = status
        self.fail_first = fail_first
        self.received: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = None
        if self.secret is not None and "x-ai-stats-signature" in headers:
            verified = verify(self.secret, int(headers.get("x-ai-stats-timestamp", "0")), body,
                              headers.get("x-ai-stats-signatures") or headers["x-ai-stats-signature"], now=time.time())
        self.received.append({"path": request.path, "headers": headers, "body": body.decode("utf-8", "replace"),
                              "verified": verified, "at": time.time()})
        if self.hang:
            await asyncio.Event().wait()  # until the caller gives up or the process ends
        if len(self.received) <= self.fail_first:
            return web.Response(status=503, text="receiver warming up")
        return web.Response(status=self.status, text="ok")

    async def list_received(self, _request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.received), content_type="application/json")

    async def reset(self, _request: web.Request) -> web.Response:
        self.received.clear()
        return web.Response(text="ok")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/_received", self.list_received)
        app.router.add_post("/_reset", self.reset)
        app.router.add_post("/{tail:.*}", self.handle)
        return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="webhook receiver for local testing")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--secret")
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--hang", action="store_true", help="never answer (a black hole)")
    args = parser.parse_args(argv)
    web.run_app(Receiver(args.secret, args.status, args.fail_first, args.hang).app(), host=args.host, port=args.port,
                access_log=None, shutdown_timeout=1.0, print=lambda *_: None)


if __name__ == "__main__":
    main()
