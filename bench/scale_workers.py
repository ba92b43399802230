#!/usr/bin/env python3
"""Scale-out benchmark: one batch through 1, 2 and 4 `aistats worker` processes on PostgreSQL + Redis + S3.

    .venv/bin/python bench/scale_workers.py [--lines 6000] [--workers 1,2,4] [--latency-ms 50] [--concurrency 16]

Per run a fresh cluster (tests/scale/cluster.py): a new PostgreSQL database, a Redis key prefix, an
S3-compatible server (moto), the test upstream answering after `--latency-ms`, one API process
(`serve --no-worker`) and N workers with `executor.concurrency` each. The workload is latency-bound: a
worker can have at most `concurrency` requests on the wire, so one worker's ceiling is
concurrency / latency, and adding workers should add throughput until the CPU (2 cores here, shared by
every process including PostgreSQL) runs out.

Reports per run: items/s while executing, and CPU-µs per item of the workers, the API process,
PostgreSQL (all its server processes), Redis, moto and the upstream, read from /proc; then an estimate,
from the measured per-item costs, of what 1 million lines per hour needs. A benchmark, not a test: it
never asserts on time; it exits non-zero only when a batch did not complete correctly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import backends  # noqa: E402
from tests.harness import jsonl  # noqa: E402
from tests.scale.cluster import Cluster  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> float:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2:].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def pids_named(name: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def lines(n: int) -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hello {i}"}],
                      "max_tokens": 16}} for i in range(n)]


def run(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    config = f"[executor]\nconcurrency = {args.concurrency}\nexpiry_check_seconds = 1\n"
    with tempfile.TemporaryDirectory(prefix="aistats-scale-") as tmp:
        cluster = Cluster(Path(tmp), workers=workers, latency_ms=args.latency_ms, config=config)
        try:
            api = cluster.client()
            groups = {"workers": [w.proc.pid for w in cluster.workers], "api": [a.proc.pid for a in cluster.apis],
                      "postgres": pids_named("postgres"), "redis": pids_named("redis-server"),
                      "s3 (moto)": [cluster.s3.proc.pid] if cluster.s3 else [],
                      "upstream": [cluster.upstream.proc.pid] if cluster.upstream else []}
            file_id = api.post("/files", files={"file": ("b.jsonl", jsonl(lines(args.lines)))},
                               data={"purpose": "batch"}).json()["id"]
            time.sleep(1.0)
            before = {g: sum(cpu(p) for p in pids) for g, pids in groups.items()}
            created = time.monotonic()
            batch = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                               "completion_window": "24h"}).json()
            started = None
            while True:
                batch = api.get(f"/batches/{batch['id']}").json()
                now = time.monotonic()
                if started is None and batch["status"] == "in_progress":
                    started = now
                if batch["status"] in ("completed", "failed", "cancelled", "expired"):
                    break
                time.sleep(0.05)
            ended = time.monotonic()
            after = {g: sum(cpu(p) for p in pids) for g, pids in groups.items()}
            counts = batch["request_counts"]
            ok = batch["status"] == "completed" and counts["completed"] == args.lines
            executing = ended - (started or created)
            return {"workers": workers, "correct": ok, "status": batch["status"], "seconds_total": ended - created,
                    "seconds_executing": executing, "items_per_s": args.lines / executing,
                    "cpu_us_per_item": {g: 1e6 * (after[g] - before[g]) / args.lines for g in groups},
                    }
        finally:
            cluster.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=6000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16, help="executor.concurrency of each worker")
    parser.add_argument("--target-per-hour", type=int, default=1_000_000)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if not (backends.pg_available() and backends.redis_available()):
        print(f"needs PostgreSQL and Redis: {backends.PG_SKIP}; {backends.REDIS_SKIP}", file=sys.stderr)
        return 2
    results = []
    for n in (int(w) for w in args.workers.split(",")):
        print(f"run: {n} worker(s), {args.lines} lines, upstream {args.latency_ms:.0f} ms, "
              f"concurrency {args.concurrency} per worker …", flush=True)
        results.append(run(n, args))
    base = results[0]["items_per_s"]
    ceiling = 1000.0 * args.concurrency / args.latency_ms
    print(f"\n{'workers':>8} {'items/s':>9} {'× 1 worker':>11} {'ceiling':>8}  CPU-µs per item by process group")
    for r in results:
        per = ", ".join(f"{g} {v:.0f}" for g, v in r["cpu_us_per_item"].items())
        print(f"{r['workers']:>8} {r['items_per_s']:>9.0f} {r['items_per_s'] / base:>10.2f}× "
              f"{ceiling * r['workers']:>8.0f}  {per}{'' if r['correct'] else '  (INCORRECT: ' + r['status'] + ')'}")
    # The estimate: per-item CPU from the largest run, rates from the target.
    last = results[-1]
    rate = args.target_per_hour / 3600.0
    cost = last["cpu_us_per_item"]
    gateway_cores = rate * (cost["workers"] + cost["api"]) / 1e6
    pg_cores = rate * cost["postgres"] / 1e6
    redis_cores = rate * cost["redis"] / 1e6
    per_worker = min(ceiling, max(r["items_per_s"] / r["workers"] for r in results))
    print(f"\nestimate for {args.target_per_hour:,} lines/hour = {rate:.0f} lines/s "
          f"(per-item CPU from the {last['workers']}-worker run):")
    print(f"  CPU: gateway workers + API {gateway_cores:.2f} cores, PostgreSQL {pg_cores:.2f} cores, "
          f"Redis {redis_cores:.3f} cores")
    for latency in (args.latency_ms / 1000.0, 2.0, 10.0):
        in_flight = rate * latency
        print(f"  upstream latency {latency:>5.2f} s: {in_flight:>6.0f} requests on the wire → executor.concurrency "
              f"summed over workers >= {in_flight:.0f} (e.g. {math.ceil(in_flight / 256)} worker(s) at 256)")
    print(f"  measured here: {per_worker:.0f} lines/s per worker at concurrency {args.concurrency}; one core of worker "
          f"CPU carries ~{1e6 / max(1.0, cost['workers']):.0f} lines/s")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0 if all(r["correct"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
