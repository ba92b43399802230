#!/usr/bin/env python3
"""Summarize a py-spy `--format raw` profile of the gateway: where its CPU goes, in words.

    .venv/bin/python bench/batch_throughput.py --lines 20000 --py-spy-dir /tmp/prof --py-spy-format raw
    .venv/bin/python bench/pyspy_summary.py /tmp/prof/upstream.txt --cpu-seconds 13.5 --items 20000

Prints the share of samples per thread, per gateway component (first matching rule below, so
each sample is counted once), and the top functions by self time. With --cpu-seconds and
--items (from the benchmark's JSON: runs[i].cpu.gateway_cpu_s and lines) it also converts the
shares into approximate CPU-µs per item. Shares are of *sampled* (non-idle) time; py-spy cannot
see inside C code, so time spent in C (uvloop, sqlite3, CPython's GC) lands on the nearest
Python frame. Use `perf record -p <gateway pid>` for the native view.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Callable

# (component, predicate on the whole ';'-joined stack). Order matters: first match wins.
RULES: list[tuple[str, Callable[[str], bool]]] = [
    ("SQLite execution (aiosqlite worker threads)", lambda s: "_connection_worker_thread" in s),
    ("validation / ingest", lambda s: "ingest (" in s or "Executor._ingest" in s),
    ("finalizer (output files)", lambda s: "finalize (" in s or "Executor._finalize" in s),
    ("HTTP API (uvicorn/FastAPI: upload, create, polls)",
     lambda s: "RequestResponseCycle" in s or "httptools_impl" in s or "FastAPI.__call__" in s),
    ("executor scheduler (lease_items)", lambda s: "Executor._scheduler" in s),
    ("executor committer (settle)", lambda s: "Executor._committer" in s or "Executor._flush" in s),
    ("ids.ulid (ids per result line)", lambda s: "ids.py" in s),
    ("provider HTTP client (aiohttp request + response)",
     lambda s: "OpenAICompatibleProvider.send" in s or "aiohttp/" in s),
    ("executor worker bookkeeping (attempt, lane, queue)",
     lambda s: "Executor._worker" in s or "Executor._attempt" in s or "lanes.py" in s),
    ("SQLAlchemy on the event loop (greenlet stacks)", lambda s: "sqlalchemy/" in s),
    ("event loop itself / C code under Runner.run", lambda s: s.split(";")[-1].startswith("Runner.run (")),
]


def _norm(frame: str) -> str:
    frame = re.sub(r":\d+\)$", ")", frame)
    return re.sub(r"\((?:.*/site-packages/|.*/src/|.*/lib/python3\.\d+/)", "(", frame)


def _thread_of(root: str) -> str:
    if root.startswith("thread ("):  # recorded with py-spy --threads
        return root
    if root.startswith("Thread._bootstrap"):
        return "other threads (aiosqlite workers)"
    return "main thread (event loop; includes detached greenlet stacks)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("profile", help="py-spy raw (collapsed stacks) output")
    parser.add_argument("--cpu-seconds", type=float, default=None, help="gateway CPU seconds of the run")
    parser.add_argument("--items", type=int, default=None, help="items in the batch")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)

    threads: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    with open(args.profile) as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            threads[_thread_of(frames[0])] += n
            leaves[_norm(frames[-1])] += n
            parts[next((name for name, rule in RULES if rule(stack)), "other")] += n
    if not total:
        raise SystemExit("no samples")
    per_item = (args.cpu_seconds * 1e6 / args.items) if args.cpu_seconds and args.items else None

    def row(name: str, n: int) -> str:
        extra = f"  ~{n / total * per_item:5.0f} µs/item" if per_item else ""
        return f"{n / total:6.1%}{extra}  {name}"

    print(f"{total} samples" + (f"; {per_item:.0f} gateway CPU-µs per item overall" if per_item else ""))
    if len(threads) > 1:
        print("\nby thread:")
        for name, n in threads.most_common(8):
            print(row(name, n))
    print("\nby component (first matching rule):")
    for name, _ in [*RULES, ("other", None)]:
        print(row(name, parts[name]))
    print(f"\ntop {args.top} functions by self time:")
    for name, n in leaves.most_common(args.top):
        print(row(name, n))


if __name__ == "__main__":
    main()
