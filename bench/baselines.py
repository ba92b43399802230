#!/usr/bin/env python3
"""The two clients the gateway is compared with, each run as its own process by `workloads.py`.

    .venv/bin/python bench/baselines.py naive --input in.jsonl --base-url http://127.0.0.1:P/v1 --out r.json
    .venv/bin/python bench/baselines.py tokenbucket --input in.jsonl --base-url … --rpm 10000 --tpm 2000000 --out r.json

* `naive`: what most people write first. `openai.AsyncOpenAI(base_url=…)` with the SDK's default
  retries (2, honouring retry-after-ms), `asyncio.Semaphore(64)` around every call and one task
  per line, all created at once. A line that still fails is counted as failed.
* `tokenbucket`: a client in the style of the OpenAI cookbook's parallel request processor,
  written here from its description, not copied: it tracks request and token capacity that
  refill at rpm/60 and tpm/60 per second up to `--burst-seconds` of rate (the cookbook keeps a
  whole minute: 60), estimates each request's tokens itself (characters / 4 of the prompt plus
  max_tokens, as a tiktoken-free stand-in), sends a request only when both capacities cover it,
  keeps failed requests in a retry queue (up to `--max-attempts`, default 5) and, after any 429,
  pauses all sending for `--pause-after-429` seconds (the cookbook: 15). aiohttp, one session,
  at most `--max-in-flight` requests open.

Each writes the answers to an output JSONL (like a batch's output file) and a JSON summary:
lines, ok, failed, failed by a 429, 429s seen, wall time from the first request to the last
answer, its own CPU time and peak/initial RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from procstats import proc_status_kb


class Result:
    def __init__(self) -> None:
        self.ok = self.failed = self.failed_429 = self.throttled = self.errors = 0
        self.out: list[bytes] = []


def _load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in path.read_bytes().splitlines() if raw.strip()]


# --------------------------------------------------------------------------- naive
async def run_naive(lines: list[dict[str, Any]], base_url: str, concurrency: int) -> Result:
    import openai

    res = Result()
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x")  # max_retries: the SDK default (2)
    sem = asyncio.Semaphore(concurrency)

    async def one(line: dict[str, Any]) -> None:
        async with sem:
            try:
                answer = await client.chat.completions.create(**line["body"])
            except openai.APIStatusError as exc:
                res.failed += 1
                res.failed_429 += exc.status_code == 429
                return
            except openai.APIError:
                res.failed += 1
                return
            res.ok += 1
            res.out.append(json.dumps({"custom_id": line["custom_id"], "response": answer.model_dump()}).encode())

    await asyncio.gather(*(one(line) for line in lines))
    await client.close()
    return res


# --------------------------------------------------------------------------- token bucket
class Capacity:
    """Capacity that refills at `per_minute`/60 a second up to `burst_seconds` of it; unlimited if None."""

    def __init__(self, per_minute: int | None, burst_seconds: float) -> None:
        self.rate = per_minute / 60.0 if per_minute else 0.0
        self.max = self.rate * burst_seconds if per_minute else float("inf")
        self.level = self.max
        self.stamp = time.monotonic()

    def refill(self, now: float) -> None:
        if self.rate:
            self.level = min(self.max, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, cost: float) -> float:
        return 0.0 if self.level >= cost else (cost - self.level) / self.rate


def estimate_tokens(body: dict[str, Any]) -> int:
    chars = sum(len(m["content"]) for m in body.get("messages", []) if isinstance(m.get("content"), str))
    return chars // 4 + int(body.get("max_tokens") or 16)


async def run_tokenbucket(lines: list[dict[str, Any]], base_url: str, args: argparse.Namespace) -> Result:
    import aiohttp

    res = Result()
    requests = Capacity(args.rpm, args.burst_seconds)
    tokens = Capacity(args.tpm, args.burst_seconds)
    retry: deque[tuple[dict[str, Any], int]] = deque()
    todo = iter(lines)
    in_flight: set[asyncio.Task[None]] = set()
    last_429 = -1e9
    url = base_url.rstrip("/") + "/chat/completions"

    async def call(session: aiohttp.ClientSession, line: dict[str, Any], attempts_left: int) -> None:
        nonlocal last_429
        status = 0
        try:
            async with session.post(url, json=line["body"], headers={"Authorization": "Bearer x"}) as resp:
                status = resp.status
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            raw = b""
        if status == 200:
            res.ok += 1
            res.out.append(b'{"custom_id":"%s","response":%s}' % (line["custom_id"].encode(), raw))
            return
        if status == 429:
            res.throttled += 1
            last_429 = time.monotonic()
        else:
            res.errors += 1
        if attempts_left > 1:
            retry.append((line, attempts_left - 1))
        else:
            res.failed += 1
            res.failed_429 += status == 429

    connector = aiohttp.TCPConnector(limit=args.max_in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:
        nxt: tuple[dict[str, Any], int] | None = None
        while True:
            if nxt is None:
                if retry:
                    nxt = retry.popleft()
                else:
                    line = next(todo, None)
                    nxt = (line, args.max_attempts) if line is not None else None
            if nxt is None:
                if not in_flight:
                    break
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            now = time.monotonic()
            if now - last_429 < args.pause_after_429:
                await asyncio.sleep(args.pause_after_429 - (now - last_429))
                continue
            requests.refill(now)
            tokens.refill(now)
            cost = estimate_tokens(nxt[0]["body"])
            if len(in_flight) >= args.max_in_flight:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            wait = max(requests.wait(1), tokens.wait(cost))
            if wait > 0:
                await asyncio.sleep(max(wait, 0.001))
                continue
            requests.level -= 1
            tokens.level -= cost
            task = asyncio.create_task(call(session, *nxt))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            nxt = None
    return res


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("runner", choices=("naive", "tokenbucket"))
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--base-url", required=True, help="the upstream's /v1 URL")
    parser.add_argument("--out", required=True, type=Path, help="JSON summary")
    parser.add_argument("--output-jsonl", type=Path, default=None, help="where the answers go (default: discarded)")
    parser.add_argument("--concurrency", type=int, default=64, help="naive: the semaphore")
    parser.add_argument("--rpm", type=int, default=None)
    parser.add_argument("--tpm", type=int, default=None)
    parser.add_argument("--burst-seconds", type=float, default=60.0, help="tokenbucket: capacity in seconds of rate")
    parser.add_argument("--pause-after-429", type=float, default=15.0)
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--max-in-flight", type=int, default=100)
    args = parser.parse_args(argv)
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = None
    rss_start = proc_status_kb(os.getpid(), "VmRSS")
    t0 = time.monotonic()
    lines = _load(args.input)
    t1 = time.monotonic()
    with asyncio.Runner(loop_factory=factory) as runner:
        if args.runner == "naive":
            res = runner.run(run_naive(lines, args.base_url, args.concurrency))
        else:
            res = runner.run(run_tokenbucket(lines, args.base_url, args))
    t2 = time.monotonic()
    if args.output_jsonl is not None:
        args.output_jsonl.write_bytes(b"\n".join(res.out) + b"\n")
    ru = resource.getrusage(resource.RUSAGE_SELF)
    summary = {
        "runner": args.runner, "lines": len(lines), "ok": res.ok, "failed": res.failed,
        "failed_429": res.failed_429, "throttled_seen": res.throttled, "other_errors_seen": res.errors,
        "load_s": t1 - t0, "run_s": t2 - t1, "cpu_s": ru.ru_utime + ru.ru_stime,
        "rss_start_kb": rss_start, "peak_rss_kb": proc_status_kb(os.getpid(), "VmHWM"),
        "settings": {k: v for k, v in vars(args).items() if k not in ("input", "out", "output_jsonl")},
    }
    args.out.write_text(json.dumps(summary, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
