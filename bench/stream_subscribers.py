#!/usr/bin/env python3
"""Stream subscribers benchmark: do live WebSocket subscribers slow the batch executor?

    .venv/bin/python bench/stream_subscribers.py [--subscribers 0,200,500] [--lines 20000]

For each subscriber count N it starts a fresh gateway (`aistats_gateway.cli.main serve`, its own
temporary data directory, no upstream: every line uses the built-in `mock/echo` model), uploads a
JSONL batch, creates the batch and, right after the create answer, opens N WebSocket subscribers
on `/v1/async/batch/{id}/ws?interval_ms=…` from a separate subscriber process (so that their CPU is
neither the gateway's nor the poller's). Meanwhile this process polls `GET /v1/batches/{id}` every
50 ms, exactly as `batch_throughput.py` does, for the phase times, items/s and gateway CPU.
The gateway code is copied once at start (`--code`, default the git HEAD) so that every run of
one invocation measures the same code even while src/ is being edited.

Per N it reports the executing time and items/s, gateway CPU-µs per item, the frames each
subscriber received, whether every subscriber got the terminal update and the close code 1000,
and the lag from the batch's completion to each subscriber's receipt of the terminal frame; then
the ratios against N=0.

This is a benchmark, not a test: it never asserts on time. It exits non-zero only when a batch did
not complete correctly or a subscriber missed its terminal update or clean close.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import batch_throughput as bt

MODEL = "mock/echo"
CHILD_FLAG = "--subscriber-child"


# --------------------------------------------------------------------------- subscriber process
async def _subscriber(i: int, url: str, headers: dict[str, str], compression: str | None,
                      open_timeout: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    rec: dict[str, Any] = {"i": i, "t_start": time.monotonic(), "t_open": None, "frames": [], "close_code": None,
                           "close_reason": None, "t_closed": None, "error": None}
    try:
        async with connect(url, additional_headers=headers, compression=compression, proxy=None,
                           open_timeout=open_timeout, ping_interval=None, max_size=None) as ws:
            rec["t_open"] = time.monotonic()
            try:
                async for message in ws:
                    now = time.monotonic()
                    frame = json.loads(message)
                    data = frame.get("data") or {}
                    counts = data.get("request_counts") or {}
                    rec["frames"].append([now, frame.get("type"), data.get("status"),
                                          int(counts.get("completed") or 0) + int(counts.get("failed") or 0)])
            except ConnectionClosed as exc:  # closed with an error code (not 1000/1001)
                rec["error"] = f"{type(exc).__name__}: {exc}"
            rec["t_closed"] = time.monotonic()
            rec["close_code"] = ws.close_code
            rec["close_reason"] = ws.close_reason
    except asyncio.CancelledError:
        rec["error"] = "still open when the benchmark stopped waiting"
    except Exception as exc:  # handshake refused, timeout, reset…
        rec["error"] = f"{type(exc).__name__}: {exc}"
    return rec


async def _child_main(req: dict[str, Any], stop: asyncio.Event) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {req['api_key']}"}
    compression = None if req["compression"] == "none" else req["compression"]
    t0 = time.monotonic()
    tasks = [asyncio.create_task(_subscriber(i, req["url"], headers, compression, req["open_timeout"]))
             for i in range(req["n"])]
    stopper = asyncio.create_task(stop.wait())
    pending: set[asyncio.Task[Any]] = set(tasks)
    while pending and not stop.is_set():
        _done, pending = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
        pending.discard(stopper)
    for task in pending:
        task.cancel()
    results = await asyncio.gather(*tasks)
    stopper.cancel()
    return {"t_launch": t0, "subscribers": results}


def subscriber_child() -> int:
    """Runs N subscribers; protocol on stdin/stdout (one JSON request line in, `ready`/`done` out)."""
    import resource

    with contextlib.suppress(Exception):
        import uvloop

        uvloop.install()
    import websockets.asyncio.client  # noqa: F401  (import before 'ready': the parent times the connects)

    print("ready", flush=True)
    req = json.loads(sys.stdin.readline())
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def watch_stdin() -> None:  # any further line (or EOF) means: stop waiting for the rest
        sys.stdin.readline()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        out = loop.run_until_complete(_child_main(req, stop))
    finally:
        loop.close()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = ru.ru_utime + ru.ru_stime
    out["peak_rss_kb"] = ru.ru_maxrss
    Path(req["out"]).write_text(json.dumps(out))
    print("done", flush=True)
    return 0


class SubscriberProc:
    """The subscriber process, started (and its imports done) before the batch is created."""

    def __init__(self, workdir: Path) -> None:
        self.out = workdir / "subscribers.json"
        self._err = (workdir / "subscribers.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), CHILD_FLAG],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                     env=bt.base_env(), cwd=bt.REPO, text=True)
        self.pid = self.proc.pid
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"subscriber process did not start: {line!r}")

    def start(self, url: str, n: int, compression: str, open_timeout: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"url": url, "n": n, "api_key": bt.API_KEY, "compression": compression,
                                          "open_timeout": open_timeout, "out": str(self.out)}) + "\n")
        self.proc.stdin.flush()

    def finish(self, wait: float) -> dict[str, Any]:
        """Wait up to `wait` s for every subscriber to close by itself, then stop the rest."""
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.write("stop\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._err.close()
        if not self.out.exists():
            raise RuntimeError(f"subscriber process exited with {self.proc.returncode} and no results")
        return dict(json.loads(self.out.read_text()))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._err.close()


# --------------------------------------------------------------------------- one run
@dataclass
class StreamRun:
    label: str
    subscribers: int
    lines: int
    batch_id: str | None = None
    final_status: str | None = None
    times: dict[str, float | None] = field(default_factory=dict)
    rates: dict[str, float | None] = field(default_factory=dict)
    cpu: dict[str, float | None] = field(default_factory=dict)
    memory_kb: dict[str, int | None] = field(default_factory=dict)
    correctness: dict[str, Any] = field(default_factory=dict)
    stream: dict[str, Any] = field(default_factory=dict)
    quiet_wait: dict[str, Any] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    samples: list[list[Any]] = field(default_factory=list)
    discarded_attempts: list[dict[str, Any]] = field(default_factory=list)
    profile: str | None = None
    subscriber_records: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def _pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def _dist(values: list[float]) -> dict[str, float | None]:
    return {"min": min(values) if values else None, "median": statistics.median(values) if values else None,
            "p95": _pct(values, 95), "max": max(values) if values else None}


def check_output(client: httpx.Client, batch: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """Every custom_id exactly once across the output and error files; how many were 200s."""
    seen: dict[str, int] = {}
    ok = bad = 0
    for key in ("output_file_id", "error_file_id"):
        if not batch.get(key):
            continue
        content = client.get(f"/files/{batch[key]}/content")
        content.raise_for_status()
        for raw in content.content.splitlines():
            if raw.strip():
                line = json.loads(raw)
                seen[line.get("custom_id")] = seen.get(line.get("custom_id"), 0) + 1
                good = key == "output_file_id" and (line.get("response") or {}).get("status_code") == 200
                ok, bad = (ok + 1, bad) if good else (ok, bad + 1)
    expected = set(ids)
    missing = sum(1 for c in ids if c not in seen)
    dupes = sum(1 for n in seen.values() if n > 1)
    unknown = sum(1 for c in seen if c not in expected)
    return {"correct": not missing and not dupes and not unknown and batch["status"] == "completed",
            "succeeded_200": ok, "failed_lines": bad, "missing": missing, "duplicated": dupes, "unknown": unknown}


def analyze_stream(res: StreamRun, child: dict[str, Any], t_create_sent: float, t_created: float,
                   s_prog: bt.Sample | None, t_completed_poll: float | None, t_before_completed_poll: float | None,
                   t0: float, interval_s: float) -> None:
    subs = child["subscribers"]
    res.subscriber_records = [
        {"i": s["i"], "open_s": None if s["t_open"] is None else round(s["t_open"] - t0, 4),
         "closed_s": None if s["t_closed"] is None else round(s["t_closed"] - t0, 4),
         "close_code": s["close_code"], "error": s["error"],
         "frames": [[round(f[0] - t0, 4), f[1], f[2], f[3]] for f in s["frames"]]} for s in subs]
    opened = [s for s in subs if s["t_open"] is not None]
    got_terminal = [s for s in subs if any(f[2] in bt.TERMINAL for f in s["frames"])]
    closed_1000 = [s for s in subs if s["close_code"] == 1000]
    snap_validating = [s for s in subs if s["frames"] and s["frames"][0][1] == "job.snapshot"
                       and s["frames"][0][2] == "validating"]
    frames = [len(s["frames"]) for s in subs]
    updated = [sum(1 for f in s["frames"] if f[1] == "job.updated") for s in subs]
    lags: list[float] = []
    excess: list[float] = []
    for s in got_terminal:
        k = next(j for j, f in enumerate(s["frames"]) if f[2] in bt.TERMINAL)
        t_term = s["frames"][k][0]
        if t_completed_poll is not None:
            lags.append(t_term - t_completed_poll)
            # what the coalescing interval alone explains: not before completion, nor before
            # `interval` after this subscriber's previous frame
            due = max(t_completed_poll, s["frames"][k - 1][0] + interval_s) if k > 0 else t_completed_poll
            excess.append(t_term - due)
    errors: dict[str, int] = {}
    for s in subs:
        if s["error"]:
            key = s["error"][:120]
            errors[key] = errors.get(key, 0) + 1
    opens = [s["t_open"] for s in opened]
    handshakes = [s["t_open"] - s["t_start"] for s in opened]
    res.stream = {
        "subscribers": len(subs),
        "opened": len(opened),
        "got_terminal_update": len(got_terminal),
        "closed_1000": len(closed_1000),
        "all_terminal_and_1000": len(got_terminal) == len(subs) and len(closed_1000) == len(subs),
        "snapshot_while_validating": len(snap_validating),
        "opened_before_in_progress_poll": sum(1 for t in opens if s_prog is not None and t <= s_prog.t + t0),
        "frames_per_subscriber": _dist([float(x) for x in frames]),
        "updates_per_subscriber": _dist([float(x) for x in updated]),
        "frames_total": sum(frames),
        "last_open_after_create_s": (max(opens) - t_created) if opens else None,
        "handshake_s": _dist(handshakes),
        "terminal_lag_s": _dist(lags),
        "terminal_lag_beyond_interval_s": _dist(excess),
        "completion_poll_window_s": (t_completed_poll - t_before_completed_poll)
        if t_completed_poll is not None and t_before_completed_poll is not None else None,
        "last_close_after_completion_s": (max(s["t_closed"] for s in subs if s["t_closed"] is not None)
                                          - t_completed_poll)
        if t_completed_poll is not None and any(s["t_closed"] is not None for s in subs) else None,
        "errors": errors,
        "subscriber_process_cpu_s": child.get("cpu_s"),
        "subscriber_process_peak_rss_kb": child.get("peak_rss_kb"),
    }


def run_once(label: str, n: int, args: argparse.Namespace, payload: bytes, ids: list[str],
             workdir: Path) -> StreamRun:
    res = StreamRun(label=label, subscribers=n, lines=len(ids))
    workdir.mkdir(parents=True, exist_ok=True)
    gateway: bt.Proc | None = None
    subs: SubscriberProc | None = None
    profiler: subprocess.Popen[bytes] | None = None
    try:
        if args.quiet_wait > 0:
            res.quiet_wait = bt.wait_for_quiet_machine(args.quiet_wait, args.quiet_cores)
            if not res.quiet_wait["quiet"]:
                print(f"  [{label}] machine still busy ({res.quiet_wait['busy_cores_last_second']} cores) after "
                      f"{args.quiet_wait}s; running anyway", file=sys.stderr, flush=True)
        # mock/echo answers in-process: the OpenAI base URL points at a port nobody listens on
        gateway, base_url = bt.start_gateway(workdir, bt.free_port(), args.concurrency, args.executor_setting,
                                             src_dir=args.src_dir)
        res.pids = {"gateway": gateway.pid}
        if n > 0:
            subs = SubscriberProc(workdir)
            res.pids["subscribers"] = subs.pid
        print(f"  [{label}] gateway pid {gateway.pid} ({base_url}); logs in {workdir}", file=sys.stderr, flush=True)
        ws_base = "ws://" + base_url.removeprefix("http://")
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {bt.API_KEY}"},
                          timeout=120.0) as client:
            time.sleep(args.settle_seconds)
            if args.py_spy_dir:
                prof_path = Path(args.py_spy_dir) / f"{label.replace('=', '').replace('#', '-')}.txt"
                prof_path.parent.mkdir(parents=True, exist_ok=True)
                profiler = subprocess.Popen(
                    [args.py_spy, "record", "--pid", str(gateway.pid), "--rate", "100", "--format", "raw",
                     "--nonblocking", "-o", str(prof_path)],
                    stdout=subprocess.DEVNULL, stderr=(workdir / "py-spy.log").open("wb"))
                res.profile = str(prof_path)
                time.sleep(1.0)
            rss_before = bt.proc_status_kb(gateway.pid, "VmRSS")
            gw_cpu0 = bt.cpu_seconds(gateway.pid)
            sub_cpu0 = bt.cpu_seconds(subs.pid) if subs else 0.0
            self_cpu0 = bt.self_cpu_seconds()
            machine0 = bt.machine_busy_seconds()

            t0 = time.monotonic()
            up = client.post("/files", data={"purpose": "batch"},
                             files={"file": ("bench.jsonl", payload, "application/jsonl")})
            up.raise_for_status()
            t_create = time.monotonic()
            created = client.post("/batches", json={"input_file_id": up.json()["id"],
                                                    "endpoint": "/v1/chat/completions", "completion_window": "24h"})
            created.raise_for_status()
            t_created = time.monotonic()
            batch = created.json()
            res.batch_id = batch["id"]
            if subs:
                subs.start(f"{ws_base}/async/batch/{res.batch_id}/ws?interval_ms={args.interval_ms}", n,
                           args.compression, args.open_timeout)

            samples: list[bt.Sample] = []
            sent_at: list[float] = []
            deadline = t0 + args.timeout
            while True:
                sent_at.append(time.monotonic())
                batch = client.get(f"/batches/{res.batch_id}").json()
                counts = batch.get("request_counts") or {}
                now = time.monotonic()
                sub_cpu = bt.cpu_seconds_fast(subs.pid) if subs else 0.0
                samples.append(bt.Sample(now - t0, batch["status"], int(counts.get("completed", 0)) +
                                         int(counts.get("failed", 0)), bt.cpu_seconds_fast(gateway.pid),
                                         sub_cpu, bt.thread_cpu_seconds(gateway.pid, gateway.pid),
                                         bt.machine_busy_seconds(), bt.self_cpu_seconds()))
                if batch["status"] in bt.TERMINAL or now > deadline:
                    break
                time.sleep(max(0.0, args.poll_ms / 1000.0 - (time.monotonic() - now)))
            t_done = time.monotonic()
            gw_cpu1 = bt.cpu_seconds(gateway.pid)
            sub_cpu1 = bt.cpu_seconds(subs.pid) if subs else 0.0
            self_cpu1 = bt.self_cpu_seconds()
            machine1 = bt.machine_busy_seconds()
            res.final_status = batch["status"]
            if batch["status"] not in bt.TERMINAL:
                res.error = f"not terminal after --timeout {args.timeout}s (status {batch['status']})"

            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    profiler.wait(60)
                profiler = None
            child: dict[str, Any] | None = None
            if subs:
                child = subs.finish(args.close_wait)
                subs = None
            gw_cpu_closed = bt.cpu_seconds(gateway.pid)
            res.memory_kb = {"gateway_rss_before": rss_before,
                             "gateway_peak_rss": bt.proc_status_kb(gateway.pid, "VmHWM")}

            # ---- phases, as batch_throughput.py defines them (resolution: one poll interval)
            total = len(ids)
            c_off = t_create - t0
            s_prog = bt._first(samples, lambda s: s.status != "validating")
            s_exec_end = bt._first(samples, lambda s: s.settled >= total or s.status in ("finalizing", *bt.TERMINAL))
            completed = batch["status"] == "completed"
            executing = (s_exec_end.t - s_prog.t) if (s_prog and s_exec_end) else None
            res.times = {
                "end_to_end_s": (t_done - t0) if completed else None,
                "create_to_completed_s": (t_done - t_create) if completed else None,
                "validating_s": (s_prog.t - c_off) if s_prog else None,
                "executing_s": executing,
                "finalizing_s": (t_done - t0 - s_exec_end.t) if (s_exec_end and completed) else None,
                "polls": len(samples),
            }
            exec_items = (s_exec_end.settled - s_prog.settled) if (s_prog and s_exec_end) else None
            res.rates = {
                "items_per_s_end_to_end": bt._div(total, res.times["end_to_end_s"]),
                "items_per_s_executing": bt._div(exec_items, executing) if exec_items else bt._div(total, executing),
                "items_per_s_steady_10_90": bt._rate_between(samples, total, 0.10, 0.90),
            }
            gw_cpu = gw_cpu1 - gw_cpu0
            sub_cpu = sub_cpu1 - sub_cpu0
            res.cpu = {
                "gateway_cpu_s": gw_cpu,
                "gateway_cpu_us_per_item": bt._div(gw_cpu * 1e6, total),
                "gateway_cpu_s_until_last_close": gw_cpu_closed - gw_cpu0,
                "subscriber_process_cpu_s": sub_cpu,
                "bench_client_cpu_s": self_cpu1 - self_cpu0,
                "other_processes_cores": bt._div(machine1 - machine0 - gw_cpu - sub_cpu - (self_cpu1 - self_cpu0),
                                                 t_done - t0),
            }
            if s_prog and s_exec_end:
                i0 = samples.index(s_prog)
                a = samples[i0 - 1] if i0 > 0 else s_prog
                b = s_exec_end
                span = b.t - a.t
                gw_exec = b.gw_cpu - a.gw_cpu
                res.cpu.update({
                    "gateway_cpu_s_validating": a.gw_cpu - gw_cpu0,
                    "gateway_cpu_s_executing": gw_exec,
                    "gateway_cpu_s_finalizing": gw_cpu1 - b.gw_cpu,
                    "gateway_cores_executing": bt._div(gw_exec, span),
                    "gateway_main_thread_cores_executing": bt._div(b.gw_main_cpu - a.gw_main_cpu, span),
                    "subscriber_process_cores_executing": bt._div(b.up_cpu - a.up_cpu, span),
                    "other_processes_cores_executing": bt._div(
                        (b.machine - a.machine) - gw_exec - (b.up_cpu - a.up_cpu) - (b.client_cpu - a.client_cpu),
                        span),
                })
            res.samples = [[round(s.t, 3), s.status, s.settled, round(s.gw_cpu - gw_cpu0, 3),
                            round(s.up_cpu - sub_cpu0, 3), round(s.gw_main_cpu, 3), round(s.machine - machine0, 3)]
                           for s in samples]
            if child is not None:
                t_completed_poll = (samples[-1].t + t0) if completed else None
                analyze_stream(res, child, t_create, t_created, s_prog, t_completed_poll,
                               sent_at[-2] if len(sent_at) > 1 else None, t0, args.interval_ms / 1000.0)
            res.correctness = check_output(client, batch, ids)
    except Exception as exc:  # report, do not crash the other runs
        res.error = f"{type(exc).__name__}: {exc}"
        res.correctness.setdefault("correct", False)
    finally:
        if profiler is not None and profiler.poll() is None:
            profiler.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(60)
        if subs is not None:
            subs.kill()
        if gateway is not None:
            gateway.stop()
            if res.error:
                res.correctness["gateway_log_tail"] = gateway.tail(2000)
    return res


# --------------------------------------------------------------------------- report
def _get(r: StreamRun, path: str) -> Any:
    value: Any = r
    for part in path.split("."):
        value = getattr(value, part) if not isinstance(value, dict) else value.get(part)
        if value is None:
            return None
    return value


ROWS: list[tuple[str, str, str, str]] = [
    # label, path, format, unit
    ("batch status", "final_status", "", ""),
    ("correct (each custom_id exactly once, 200)", "correctness.correct", "", ""),
    ("validating (create → in_progress)", "times.validating_s", ",.2f", " s"),
    ("executing (in_progress → all settled)", "times.executing_s", ",.2f", " s"),
    ("finalizing", "times.finalizing_s", ",.2f", " s"),
    ("create → completed", "times.create_to_completed_s", ",.2f", " s"),
    ("items/s executing", "rates.items_per_s_executing", ",.0f", ""),
    ("items/s steady state (10%→90%)", "rates.items_per_s_steady_10_90", ",.0f", ""),
    ("items/s end to end (upload → completed)", "rates.items_per_s_end_to_end", ",.0f", ""),
    ("gateway CPU-µs / item (upload → completed)", "cpu.gateway_cpu_us_per_item", ",.0f", ""),
    ("gateway CPU validating / executing / finalizing", "_cpuphases", "", ""),
    ("gateway cores busy while executing", "cpu.gateway_cores_executing", ".2f", ""),
    ("  of which event-loop (main) thread", "cpu.gateway_main_thread_cores_executing", ".2f", ""),
    ("subscriber process cores while executing", "cpu.subscriber_process_cores_executing", ".2f", ""),
    ("other processes' cores while executing", "cpu.other_processes_cores_executing", ".2f", ""),
    ("gateway peak RSS (VmHWM)", "memory_kb.gateway_peak_rss", ",.0f", " KiB"),
    ("subscribers opened", "stream.opened", ",.0f", ""),
    ("  snapshot still 'validating'", "stream.snapshot_while_validating", ",.0f", ""),
    ("  last open, after create", "stream.last_open_after_create_s", ",.2f", " s"),
    ("  handshake median / max", "_handshake", "", ""),
    ("got the terminal update", "stream.got_terminal_update", ",.0f", ""),
    ("closed with 1000", "stream.closed_1000", ",.0f", ""),
    ("frames / subscriber min / median / max", "_frames", "", ""),
    ("terminal lag median / p95 / max", "_lag", "", ""),
    ("  beyond the interval: median / p95 / max", "_excess", "", ""),
    ("last close after completion", "stream.last_close_after_completion_s", ",.2f", " s"),
    ("subscriber process CPU", "stream.subscriber_process_cpu_s", ",.2f", " s"),
]


def _triple(d: dict[str, Any] | None, keys: tuple[str, ...], spec: str, unit: str = "") -> str:
    if not d:
        return "—"
    return " / ".join(bt._fmt(d.get(k), spec) for k in keys) + unit


def _cell(r: StreamRun, path: str, spec: str, unit: str) -> str:
    if path == "_cpuphases":
        return _triple(r.cpu, ("gateway_cpu_s_validating", "gateway_cpu_s_executing", "gateway_cpu_s_finalizing"),
                       ".2f", " s")
    if path == "_handshake":
        return _triple(r.stream.get("handshake_s"), ("median", "max"), ".3f", " s")
    if path == "_frames":
        return _triple(r.stream.get("frames_per_subscriber"), ("min", "median", "max"), ",.0f")
    if path == "_lag":
        return _triple(r.stream.get("terminal_lag_s"), ("median", "p95", "max"), ".3f", " s")
    if path == "_excess":
        return _triple(r.stream.get("terminal_lag_beyond_interval_s"), ("median", "p95", "max"), ".3f", " s")
    value = _get(r, path)
    return bt._fmt(value, spec, unit) if spec else bt._fmt(value)


def print_table(results: list[StreamRun]) -> None:
    headers = [f"N={r.subscribers}" + (f" {r.label.split('#')[1]}" if "#" in r.label else "") for r in results]
    width0 = max(len(row[0]) for row in ROWS) + 2
    cols = [[_cell(r, *row[1:]) for row in ROWS] for r in results]
    widths = [max(len(h), *(len(c) for c in col)) + 2 for h, col in zip(headers, cols, strict=True)]
    print(" " * width0 + "".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    print("-" * (width0 + sum(widths)))
    for i, row in enumerate(ROWS):
        print(row[0].ljust(width0) + "".join(col[i].rjust(w) for col, w in zip(cols, widths, strict=True)))
    for r in results:
        other = r.cpu.get("other_processes_cores_executing")
        if other is not None and other > 0.25:
            print(f"[{r.label}] WARNING: other processes used {other:.2f} cores while the batch executed")
        if r.discarded_attempts:
            print(f"[{r.label}] kept the quietest of {len(r.discarded_attempts) + 1} attempts; other load in the "
                  "discarded ones: " + ", ".join(bt._fmt(a["other_processes_cores_executing"], ".2f")
                                                 for a in r.discarded_attempts) + " cores")
        if r.error:
            print(f"[{r.label}] ERROR: {r.error}")
        if r.profile:
            print(f"[{r.label}] py-spy profile: {r.profile}")
        if r.stream.get("errors"):
            print(f"[{r.label}] subscriber errors: {r.stream['errors']}")


KEYS = ("times.validating_s", "times.executing_s", "times.create_to_completed_s", "rates.items_per_s_executing",
        "rates.items_per_s_steady_10_90", "rates.items_per_s_end_to_end", "cpu.gateway_cpu_us_per_item",
        "cpu.gateway_cores_executing", "cpu.gateway_main_thread_cores_executing",
        "cpu.other_processes_cores_executing", "stream.terminal_lag_s.median", "stream.terminal_lag_s.p95",
        "stream.terminal_lag_s.max", "stream.frames_per_subscriber.median")
RATIOS = ("times.validating_s", "times.executing_s", "rates.items_per_s_executing", "rates.items_per_s_steady_10_90",
          "rates.items_per_s_end_to_end", "cpu.gateway_cpu_us_per_item")


def summarize(results: list[StreamRun], counts: list[int]) -> dict[str, Any]:
    per_n: dict[str, Any] = {}
    for n in counts:
        runs = [r for r in results if r.subscribers == n]
        per_n[str(n)] = {k: bt._median([_get(r, k) for r in runs]) for k in KEYS}
        per_n[str(n)]["all_correct"] = all(r.correctness.get("correct") for r in runs)
        per_n[str(n)]["all_subscribers_terminal_and_1000"] = all(
            r.stream.get("all_terminal_and_1000", n == 0) for r in runs)
    base = per_n.get("0")
    ratios = {n: {k: bt._div(v[k], base[k]) for k in RATIOS} for n, v in per_n.items() if n != "0"} if base else {}
    return {"per_subscribers": per_n, "ratios_vs_0": ratios,
            "ok": all(v["all_correct"] and v["all_subscribers_terminal_and_1000"] for v in per_n.values())}


# --------------------------------------------------------------------------- code under test
def snapshot_code(code: str, dest: Path) -> dict[str, Any]:
    """Copy the gateway's src/ once, so that every run of this invocation measures the same code.

    `worktree`: the working tree as it is now (uncommitted changes included); anything else is a git
    ref (default HEAD), exported with `git archive`. Other people may be editing src/ meanwhile.
    """
    import hashlib
    import io
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"source": code}
    if code == "worktree":
        shutil.copytree(bt.REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        commit = subprocess.run(["git", "rev-parse", "--verify", f"{code}^{{commit}}"], cwd=bt.REPO,
                                capture_output=True, text=True, check=True).stdout.strip()
        tar = subprocess.run(["git", "archive", "--format=tar", commit, "src"], cwd=bt.REPO, capture_output=True,
                             check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            archive.extractall(dest, filter="data")
        info["commit"] = commit
    digest = hashlib.sha256()  # the same digest as batch_throughput.py's src_sha256
    for path in sorted((dest / "src").rglob("*.py")):
        digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes() + b"\0")
    info["src_sha256"] = digest.hexdigest()[:16]
    return info


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--subscribers", default="0,200,500", help="comma-separated subscriber counts; 0 is the "
                        "baseline the ratios are taken against")
    parser.add_argument("--lines", type=int, default=20_000, help="requests in the batch (all mock/echo)")
    parser.add_argument("--interval-ms", type=int, default=1000, help="interval_ms of every subscriber's stream "
                        "(the gateway clamps it to 1000..10000)")
    parser.add_argument("--compression", default="deflate", choices=("deflate", "none"),
                        help="permessage-deflate offer of the subscribers (deflate is what websockets and browsers "
                             "offer by default)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all subscriber counts (fresh gateway "
                        "each run); medians in the summary")
    parser.add_argument("--concurrency", type=int, default=None, help="AISTATS_CONCURRENCY (unset: gateway default)")
    parser.add_argument("--executor-setting", action="append", default=[], metavar="KEY=VALUE",
                        help="extra [executor] setting for the gateway via AISTATS_CONFIG (repeatable)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--poll-ms", type=float, default=50.0, help="batch polling interval")
    parser.add_argument("--open-timeout", type=float, default=60.0, help="WebSocket handshake timeout per subscriber")
    parser.add_argument("--close-wait", type=float, default=30.0,
                        help="after completion, wait this long for every subscriber to be closed by the gateway")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up on a run after this many seconds")
    parser.add_argument("--settle-seconds", type=float, default=1.0, help="idle time after start-up")
    parser.add_argument("--quiet-wait", type=float, default=120.0,
                        help="before each run, wait up to this many seconds for the machine to be idle (0: don't)")
    parser.add_argument("--quiet-cores", type=float, default=0.3, help="'idle' means fewer busy cores than this")
    parser.add_argument("--busy-cores", type=float, default=0.25,
                        help="a run during which other processes used more cores than this while it executed …")
    parser.add_argument("--busy-retries", type=int, default=2,
                        help="… is run again up to this many times; the attempt with the least other load is kept")
    parser.add_argument("--py-spy-dir", default=None,
                        help="profile the gateway with py-spy (raw format) during each run, into <dir>/N<n>-….txt")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"))
    parser.add_argument("--code", default="HEAD",
                        help="the gateway code to measure, copied once at start: a git ref (exported with git archive) "
                             "or 'worktree' for src/ as it is now, uncommitted changes included")
    parser.add_argument("--keep-workdir", action="store_true", help="keep data dirs and process logs")
    parser.add_argument("--out", default=None,
                        help="JSON results path (default bench/results/stream_subscribers-<UTC time>.json)")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.subscribers.split(",") if x.strip()]

    started = dt.datetime.now(dt.UTC)
    out_path = Path(args.out) if args.out else (
        bt.REPO / "bench" / "results" / f"stream_subscribers-{started.strftime('%Y%m%dT%H%M%SZ')}.json")
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["stream_subscribers.py", *argv])
    info = bt.machine_info()
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        info["packages"]["websockets"] = version("websockets")
    print(f"stream_subscribers: {args.lines:,} {MODEL} lines, subscribers {counts}, interval {args.interval_ms} ms, "
          f"compression {args.compression}, repeat {args.repeat}; {info['nproc']} CPUs, Python {info['python']}",
          file=sys.stderr, flush=True)

    workroot = Path(tempfile.mkdtemp(prefix="aistats-bench-ws-"))
    results: list[StreamRun] = []
    try:
        info["code_under_test"] = snapshot_code(args.code, workroot / "code")
        args.src_dir = workroot / "code" / "src"
        print(f"code under test: {args.code} {info['code_under_test'].get('commit', '')[:12]} src_sha256 "
              f"{info['code_under_test']['src_sha256']}", file=sys.stderr, flush=True)
        payload, ids = bt.make_jsonl(args.lines, MODEL, args.max_tokens)
        for i in range(args.repeat):
            for n in counts:
                label = f"N={n}" + (f"#{i + 1}" if args.repeat > 1 else "")
                attempts: list[StreamRun] = []
                retries = 0 if args.py_spy_dir else max(0, args.busy_retries)  # py-spy itself is "other" load
                for attempt in range(1 + retries):
                    print(f"run {label} …" if not attempt else f"run {label} again (attempt {attempt + 1}) …",
                          file=sys.stderr, flush=True)
                    attempts.append(run_once(label, n, args, payload, ids, workroot / f"n{n}-{i}-{attempt}"))
                    other = attempts[-1].cpu.get("other_processes_cores_executing")
                    if attempts[-1].error or other is None or other <= args.busy_cores:
                        break
                    print(f"  [{label}] other processes used {other:.2f} cores while it executed", file=sys.stderr,
                          flush=True)
                # keep the attempt that had the machine most to itself; the others are summarized
                best = min(attempts, key=lambda r: r.cpu.get("other_processes_cores_executing") or 0.0)
                best.discarded_attempts = [
                    {"other_processes_cores_executing": r.cpu.get("other_processes_cores_executing"),
                     "items_per_s_executing": r.rates.get("items_per_s_executing"),
                     "gateway_cpu_us_per_item": r.cpu.get("gateway_cpu_us_per_item"), "error": r.error}
                    for r in attempts if r is not best]
                results.append(best)
    finally:
        if not args.keep_workdir:
            shutil.rmtree(workroot, ignore_errors=True)
        else:
            print(f"work directory kept: {workroot}", file=sys.stderr)

    print()
    print_table(results)
    summary = summarize(results, counts)
    medians = " (medians)" if args.repeat > 1 else ""
    for n, ratio in summary["ratios_vs_0"].items():
        print(f"N={n} ÷ N=0{medians}: items/s executing ×{bt._fmt(ratio['rates.items_per_s_executing'], '.2f')}, "
              f"steady ×{bt._fmt(ratio['rates.items_per_s_steady_10_90'], '.2f')}, "
              f"executing time ×{bt._fmt(ratio['times.executing_s'], '.2f')}, "
              f"validating time ×{bt._fmt(ratio['times.validating_s'], '.2f')}, "
              f"gateway CPU per item ×{bt._fmt(ratio['cpu.gateway_cpu_us_per_item'], '.2f')}")

    doc = {
        "benchmark": "stream_subscribers",
        "started_utc": started.isoformat(timespec="seconds"),
        "command": command,
        "cwd": os.getcwd(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": info,
        "summary": summary,
        "runs": [r.__dict__ for r in results],
        "notes": {
            "phases": "as in batch_throughput.py: client-observed at the poll interval",
            "terminal_lag": "subscriber's receipt of the first frame with a terminal status minus the receipt of the "
                            "first poll that saw 'completed' (completion happened within completion_poll_window_s "
                            "before that poll, so the true lag is up to that much larger; a negative lag means the "
                            "subscriber heard of it before the poll did)",
            "terminal_lag_beyond_interval": "the same lag minus what interval_ms explains: measured from "
                                            "max(completion poll, previous frame + interval) instead",
            "samples": "[t_s, status, settled, gateway_cpu_s, subscriber_process_cpu_s, "
                       "gateway_main_thread_cpu_s (absolute), machine_busy_cpu_s] per poll",
            "subscriber_records": "per subscriber: open/closed times (s since upload start), close code, error, "
                                  "frames [t_s, type, status, settled]",
        },
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"\nresults: {out_path}")
    print(f"command: {command}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FLAG:
        sys.exit(subscriber_child())
    sys.exit(main())
