#!/usr/bin/env python3
"""How many requests a second the mock upstream serves, and at what CPU cost per request.

    .venv/bin/python bench/mock_loadgen.py [--procs 3] [--conns 32] [--seconds 5] [--rpm 0]

Starts `python -m aistats_gateway.testing.mock_upstream` on a free port, then `--procs` client
processes (uvloop, raw asyncio streams, no HTTP library) each holding `--conns` keep-alive
connections that send the same small chat request (custom_id in `user`) back to back for
`--seconds`. Reports requests/s (from the clients' counts and from the mock's /_stats), the
mock's CPU-µs per request (/proc/<pid>/stat) and the clients' CPU. On a 2-core machine the
clients compete with the mock for CPU, so req/s is a floor; CPU-µs per request is the figure
that says whether the mock can be a benchmark's bottleneck. A benchmark, not a test: no
assertion on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from procstats import Proc, base_env, cpu_seconds, free_port, proc_status_kb

BODY = json.dumps({"model": "gpt-4o-mini", "user": "req-0000001", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Summarize the main idea of rate limiting."}]}).encode()


def _request(port: int) -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(BODY)}\r\n\r\n").encode() + BODY


async def _conn(port: int, stop_at: float, counts: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    req = _request(port)
    while time.monotonic() < stop_at:
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        counts[status] = counts.get(status, 0) + 1
    writer.close()


def _client(port: int, conns: int, seconds: float, start_at: float, out: Any) -> None:
    import uvloop

    async def run() -> dict[int, int]:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        counts: dict[int, int] = {}
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*(_conn(port, stop_at, counts) for _ in range(conns)))
        return counts

    counts = uvloop.run(run())
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.put({"counts": counts, "cpu_s": ru.ru_utime + ru.ru_stime})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--procs", type=int, default=3, help="client processes")
    parser.add_argument("--conns", type=int, default=32, help="keep-alive connections per client process")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rpm", type=int, default=0, help="run the mock with this RPM limit (0: none)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    port = free_port()
    mock_args = [sys.executable, "-m", "aistats_gateway.testing.mock_upstream", "--port", str(port),
                 "--rpm", str(args.rpm)]
    log = Path(f"/tmp/mock_loadgen-{port}.log")
    mock = Proc("mock", mock_args, base_env(), log, f"http://127.0.0.1:{port}/_stats")
    try:
        time.sleep(0.5)
        cpu0 = cpu_seconds(mock.pid)
        ctx = mp.get_context("spawn")
        queue: Any = ctx.Queue()
        start_at = time.time() + 1.5  # after the spawned clients have imported
        clients = [ctx.Process(target=_client, args=(port, args.conns, args.seconds, start_at, queue))
                   for _ in range(args.procs)]
        for c in clients:
            c.start()
        results = [queue.get(timeout=args.seconds + 60) for _ in clients]
        for c in clients:
            c.join(10)
        cpu1 = cpu_seconds(mock.pid)
        stats = httpx.get(f"http://127.0.0.1:{port}/_stats").json()
    finally:
        mock.stop()
    total = sum(sum(r["counts"].values()) for r in results)
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["counts"].items():
            statuses[str(k)] = statuses.get(str(k), 0) + v
    mock_cpu = cpu1 - cpu0
    figures = {
        "procs": args.procs, "conns_per_proc": args.conns, "seconds": args.seconds, "rpm": args.rpm,
        "requests": total, "statuses": statuses, "requests_per_s": total / args.seconds,
        "mock_requests_seen": stats["requests"], "mock_cpu_s": mock_cpu,
        "mock_cores": mock_cpu / args.seconds,
        "mock_cpu_us_per_request": mock_cpu * 1e6 / max(1, stats["requests"]),
        "mock_peak_rss_kb": proc_status_kb(mock.pid, "VmHWM"),
        "clients_cpu_s": sum(r["cpu_s"] for r in results),
    }
    print(f"mock upstream under {args.procs} client processes x {args.conns} connections for {args.seconds:.0f} s:")
    print(f"  {total:,} requests ({statuses}) = {figures['requests_per_s']:,.0f} req/s")
    print(f"  mock CPU {mock_cpu:.2f} s = {figures['mock_cores']:.2f} cores, "
          f"{figures['mock_cpu_us_per_request']:.1f} CPU-µs per request; clients {figures['clients_cpu_s']:.2f} s CPU")
    print(f"  => at 1 core the mock alone would serve ~{1e6 / figures['mock_cpu_us_per_request']:,.0f} req/s")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
