#!/usr/bin/env python3
"""Batch throughput benchmark: one large batch through a real gateway process to a real upstream process.

    .venv/bin/python bench/batch_throughput.py --lines 20000 [--concurrency 128] [--also-mock]

Starts, per run, a fresh instant OpenAI-compatible upstream (`aistats_gateway.testing.upstream`) and
a fresh gateway (`aistats_gateway.cli.main serve`) as subprocesses on loopback, each with its own
temporary data directory. Generates a JSONL file of short chat requests (unique custom_ids),
uploads it, creates a batch, polls it every ~50 ms until it is terminal, downloads the output and
error files and checks that every custom_id appears exactly once.

Reports wall-clock phase times, items/s, gateway and upstream CPU time per item (from
/proc/<pid>/stat, children included) and the gateway's peak RSS (VmHWM). With --also-mock the same
batch also runs against the built-in `mock/echo` model (no upstream HTTP) and the two are compared.

This is a benchmark, not a test: it never asserts on time. It exits non-zero only when a run did
not complete or its output was wrong (the `correct` flag), never because it was slow.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from procstats import (  # re-exported: stream_subscribers.py uses them as bt.*
    REPO,
    Proc,
    base_env,
    cpu_seconds,
    cpu_seconds_fast,
    free_port,
    loadavg,
    machine_busy_seconds,
    proc_status_kb,
    self_cpu_seconds,
    thread_cpu_seconds,
    wait_for_quiet_machine,
)

TERMINAL = ("completed", "failed", "cancelled", "expired")
API_KEY = "sk-bench-throughput"



def start_upstream(workdir: Path, latency_ms: float) -> tuple[Proc, int]:
    port = free_port()
    args = [sys.executable, "-m", "aistats_gateway.testing.upstream", "--port", str(port),
            "--latency-ms", str(latency_ms)]
    return Proc("upstream", args, base_env(), workdir / "upstream.log", f"http://127.0.0.1:{port}/_stats"), port


def start_gateway(workdir: Path, upstream_port: int, concurrency: int | None,
                  executor_settings: list[str] | None = None, src_dir: Path | None = None) -> tuple[Proc, str]:
    port = free_port()
    data_dir = workdir / "gateway-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = base_env(src_dir)
    env.update({
        "AISTATS_DATA_DIR": str(data_dir), "AISTATS_PORT": str(port), "AISTATS_API_KEY": API_KEY,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1", "OPENAI_API_KEY": "dummy",
    })
    if concurrency is not None:
        env["AISTATS_CONCURRENCY"] = str(concurrency)
    if executor_settings:  # e.g. commit_interval_seconds=0.01, written as the [executor] table of a TOML file
        config = workdir / "gateway.toml"
        config.write_text("[executor]\n" + "".join(f"{kv.split('=', 1)[0].strip()} = {kv.split('=', 1)[1].strip()}\n"
                                                  for kv in executor_settings))
        env["AISTATS_CONFIG"] = str(config)
    args = [sys.executable, "-m", "aistats_gateway.cli.main", "serve", "--log-level", "warning"]
    base_url = f"http://127.0.0.1:{port}/v1"
    return Proc("gateway", args, env, workdir / "gateway.log", f"{base_url}/health"), base_url


# --------------------------------------------------------------------------- input file
SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a concise assistant. Answer in one sentence.",
    "You are a customer-support agent for an online bookshop.",
    "You translate text faithfully and keep the tone.",
)
TEMPLATES = (
    "Summarize the main idea of {topic} in two sentences.",
    "Explain {topic} to a ten-year-old.",
    "Give me three bullet points about {topic}.",
    "What are the pros and cons of {topic}?",
    "Write a short product description for {thing}.",
    "Translate into French: 'Where is the nearest {place}?'",
    "Classify the sentiment of this review: \"The {thing} arrived late but works {quality}.\"",
    "Suggest a catchy title for a blog post about {topic}.",
    "Extract the city from: 'I flew from {city} last {day} for a conference.'",
    "Correct the grammar: 'me and him goes to the {place} every {day}.'",
    "Write a haiku about {topic}.",
    "In one sentence, how does {topic} work?",
)
TOPICS = ("photosynthesis", "compound interest", "the water cycle", "electric cars", "remote work",
          "vector databases", "the French Revolution", "sourdough baking", "solar panels", "unit testing",
          "black holes", "container shipping", "vaccines", "rate limiting", "coral reefs", "inflation")
THINGS = ("wireless headphones", "standing desk", "coffee grinder", "hiking backpack", "e-reader",
          "mechanical keyboard", "rice cooker", "yoga mat")
PLACES = ("train station", "pharmacy", "museum", "bakery", "library", "beach")
CITIES = ("Lisbon", "Nairobi", "Osaka", "Toronto", "Lyon", "Bogotá", "Melbourne", "Kraków")
DAYS = ("Monday", "Tuesday", "Friday", "weekend", "month")
QUALITIES = ("perfectly", "fine", "badly", "surprisingly well")


def make_jsonl(n: int, model: str, max_tokens: int, seed: int = 1234) -> tuple[bytes, list[str]]:
    rng = random.Random(seed)
    ids: list[str] = []
    out: list[str] = []
    for i in range(n):
        text = rng.choice(TEMPLATES).format(
            topic=rng.choice(TOPICS), thing=rng.choice(THINGS), place=rng.choice(PLACES),
            city=rng.choice(CITIES), day=rng.choice(DAYS), quality=rng.choice(QUALITIES))
        messages = [{"role": "user", "content": text}]
        if rng.random() < 0.25:
            messages.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        custom_id = f"req-{i:07d}"
        ids.append(custom_id)
        out.append(json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                               "body": {"model": model, "messages": messages, "max_tokens": max_tokens}},
                              ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode(), ids


# --------------------------------------------------------------------------- one run
@dataclass
class Sample:
    t: float  # seconds since upload start
    status: str
    settled: int
    gw_cpu: float
    up_cpu: float
    gw_main_cpu: float  # the gateway's main (event-loop) thread alone
    machine: float  # busy CPU seconds of the whole machine
    client_cpu: float  # this benchmark process


@dataclass
class RunResult:
    label: str
    model: str
    lines: int
    concurrency: int | None
    upstream_latency_ms: float
    batch_id: str | None = None
    final_status: str | None = None
    request_counts: dict[str, int] = field(default_factory=dict)
    times: dict[str, float | None] = field(default_factory=dict)
    rates: dict[str, float | None] = field(default_factory=dict)
    cpu: dict[str, float | None] = field(default_factory=dict)
    memory_kb: dict[str, int | None] = field(default_factory=dict)
    correctness: dict[str, Any] = field(default_factory=dict)
    server_timestamps: dict[str, int | None] = field(default_factory=dict)
    upstream_stats: dict[str, Any] = field(default_factory=dict)
    loadavg_before: list[float] = field(default_factory=list)
    loadavg_after: list[float] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)
    quiet_wait: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None
    samples: list[list[Any]] = field(default_factory=list)
    error: str | None = None


def _div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0 or a != a or b != b:
        return None
    return a / b


def _first(samples: list[Sample], pred: Any) -> Sample | None:
    return next((s for s in samples if pred(s)), None)


def _rate_between(samples: list[Sample], total: int, lo: float, hi: float) -> float | None:
    """Items/s between the polls where `lo` and `hi` fractions of the batch were first seen settled."""
    a = _first(samples, lambda s: s.settled >= lo * total)
    b = _first(samples, lambda s: s.settled >= hi * total)
    if a is None or b is None or b.t <= a.t:
        return None
    return (b.settled - a.settled) / (b.t - a.t)


def run_once(label: str, args: argparse.Namespace, model: str, payload: bytes, ids: list[str],
             workdir: Path) -> RunResult:
    res = RunResult(label=label, model=model, lines=len(ids), concurrency=args.concurrency,
                    upstream_latency_ms=args.upstream_latency_ms)
    workdir.mkdir(parents=True, exist_ok=True)
    upstream: Proc | None = None
    gateway: Proc | None = None
    profiler: subprocess.Popen[bytes] | None = None
    try:
        if args.quiet_wait > 0:
            res.quiet_wait = wait_for_quiet_machine(args.quiet_wait, args.quiet_cores)
            if not res.quiet_wait["quiet"]:
                print(f"  [{label}] machine still busy ({res.quiet_wait['busy_cores_last_second']} cores in use by "
                      f"other processes) after {args.quiet_wait}s; running anyway", file=sys.stderr, flush=True)
        upstream, up_port = start_upstream(workdir, args.upstream_latency_ms)
        gateway, base_url = start_gateway(workdir, up_port, args.concurrency, args.executor_setting)
        res.pids = {"gateway": gateway.pid, "upstream": upstream.pid}
        print(f"  [{label}] gateway pid {gateway.pid} ({base_url}), upstream pid {upstream.pid} (:{up_port}); "
              f"logs in {workdir}", file=sys.stderr, flush=True)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=120.0) as client:
            time.sleep(args.settle_seconds)  # let start-up work (migrations, imports) finish before sampling
            if args.py_spy_dir:
                prof_path = Path(args.py_spy_dir) / f"{label}.{'txt' if args.py_spy_format == 'raw' else 'svg'}"
                prof_path.parent.mkdir(parents=True, exist_ok=True)
                profiler = subprocess.Popen(
                    [args.py_spy, "record", "--pid", str(gateway.pid), "--rate", str(args.py_spy_rate),
                     "--format", args.py_spy_format, "-o", str(prof_path),
                     # --nonblocking: sample without pausing the gateway (not possible with --native)
                     *([] if "--native" in args.py_spy_args else ["--nonblocking"]),
                     *shlex.split(args.py_spy_args)],
                    stdout=subprocess.DEVNULL, stderr=(workdir / "py-spy.log").open("wb"))
                res.profile = str(prof_path)
                time.sleep(1.0)
            res.loadavg_before = loadavg()
            rss_before = proc_status_kb(gateway.pid, "VmRSS")
            gw_cpu0 = cpu_seconds(gateway.pid)
            up_cpu0 = cpu_seconds(upstream.pid)
            self_cpu0 = self_cpu_seconds()
            machine0 = machine_busy_seconds()

            # ---- upload + create
            t0 = time.monotonic()
            up = client.post("/files", data={"purpose": "batch"},
                             files={"file": ("bench.jsonl", payload, "application/jsonl")})
            up.raise_for_status()
            t_uploaded = time.monotonic()
            file_id = up.json()["id"]
            t_create = time.monotonic()
            created = client.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                                    "completion_window": "24h"})
            created.raise_for_status()
            t_created = time.monotonic()
            batch = created.json()
            res.batch_id = batch["id"]

            # ---- poll
            samples: list[Sample] = []
            deadline = t0 + args.timeout
            while True:
                batch = client.get(f"/batches/{res.batch_id}").json()
                counts = batch.get("request_counts") or {}
                now = time.monotonic()
                samples.append(Sample(now - t0, batch["status"], int(counts.get("completed", 0)) +
                                      int(counts.get("failed", 0)), cpu_seconds_fast(gateway.pid),
                                      cpu_seconds_fast(upstream.pid), thread_cpu_seconds(gateway.pid, gateway.pid),
                                      machine_busy_seconds(), self_cpu_seconds()))
                if batch["status"] in TERMINAL or now > deadline:
                    break
                time.sleep(max(0.0, args.poll_ms / 1000.0 - (time.monotonic() - now)))
            t_done = time.monotonic()
            gw_cpu1 = cpu_seconds(gateway.pid)
            up_cpu1 = cpu_seconds(upstream.pid)
            self_cpu1 = self_cpu_seconds()
            machine1 = machine_busy_seconds()
            res.loadavg_after = loadavg()
            res.final_status = batch["status"]
            res.request_counts = dict(batch.get("request_counts") or {})
            res.server_timestamps = {k: batch.get(k) for k in
                                     ("created_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at")}
            res.memory_kb = {"gateway_rss_before": rss_before,
                             "gateway_peak_rss": proc_status_kb(gateway.pid, "VmHWM"),
                             "gateway_rss_after": proc_status_kb(gateway.pid, "VmRSS"),
                             "upstream_peak_rss": proc_status_kb(upstream.pid, "VmHWM")}
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    profiler.wait(60)
                profiler = None
            if batch["status"] not in TERMINAL:
                res.error = f"not terminal after --timeout {args.timeout}s (status {batch['status']})"

            # ---- phases (client-observed, resolution = one poll interval)
            total = len(ids)
            c_off = t_create - t0
            s_prog = _first(samples, lambda s: s.status != "validating")
            s_exec_end = _first(samples, lambda s: s.settled >= total or s.status in ("finalizing", *TERMINAL))
            s_first = _first(samples, lambda s: s.settled > 0)
            e2e = t_done - t0 if batch["status"] == "completed" else None
            executing = (s_exec_end.t - s_prog.t) if (s_prog and s_exec_end) else None
            res.times = {
                "upload_s": t_uploaded - t0,
                "create_request_s": t_created - t_create,
                "end_to_end_s": e2e,
                "create_to_completed_s": (t_done - t_create) if e2e is not None else None,
                "validating_s": (s_prog.t - c_off) if s_prog else None,
                "executing_s": executing,
                "finalizing_s": (t_done - t0 - s_exec_end.t) if (s_exec_end and e2e is not None) else None,
                "first_result_after_create_s": (s_first.t - c_off) if s_first else None,
                "poll_interval_s": args.poll_ms / 1000.0,
                "polls": len(samples),
            }
            exec_items = (s_exec_end.settled - s_prog.settled) if (s_prog and s_exec_end) else None
            res.rates = {
                "items_per_s_end_to_end": _div(total, e2e),
                "items_per_s_executing": _div(exec_items, executing) if exec_items else _div(total, executing),
                "items_per_s_steady_10_90": _rate_between(samples, total, 0.10, 0.90),
            }

            # ---- CPU
            gw_cpu = gw_cpu1 - gw_cpu0
            up_cpu = up_cpu1 - up_cpu0
            res.cpu = {
                "gateway_cpu_s": gw_cpu,
                "upstream_cpu_s": up_cpu,
                "bench_client_cpu_s": self_cpu1 - self_cpu0,
                "other_processes_cores": _div(machine1 - machine0 - gw_cpu - up_cpu - (self_cpu1 - self_cpu0),
                                              t_done - t0),
                "gateway_cpu_us_per_item": _div(gw_cpu * 1e6, total),
                "upstream_cpu_us_per_item": _div(up_cpu * 1e6, total),
                "gateway_cores_end_to_end": _div(gw_cpu, t_done - t0),
            }
            if s_prog and s_exec_end:
                i0 = samples.index(s_prog)
                a = samples[i0 - 1] if i0 > 0 else s_prog  # last poll still 'validating'
                b = s_exec_end
                span = b.t - a.t
                gw_exec = b.gw_cpu - a.gw_cpu
                up_exec = b.up_cpu - a.up_cpu
                main_exec = b.gw_main_cpu - a.gw_main_cpu
                res.cpu.update({
                    "gateway_cpu_s_executing": gw_exec,
                    "gateway_cores_executing": _div(gw_exec, span),
                    "gateway_main_thread_cores_executing": _div(main_exec, span),
                    "gateway_other_threads_cores_executing": _div(gw_exec - main_exec, span),
                    "upstream_cores_executing": _div(up_exec, span),
                    "other_processes_cores_executing": _div(
                        (b.machine - a.machine) - gw_exec - up_exec - (b.client_cpu - a.client_cpu), span),
                    "gateway_cpu_s_validating": a.gw_cpu - gw_cpu0,
                    "gateway_cpu_s_finalizing": gw_cpu1 - b.gw_cpu,
                })
            res.samples = [[round(s.t, 3), s.status, s.settled, round(s.gw_cpu - gw_cpu0, 3),
                            round(s.up_cpu - up_cpu0, 3), round(s.gw_main_cpu, 3), round(s.machine - machine0, 3)]
                           for s in samples]
            with contextlib.suppress(httpx.HTTPError, ValueError):
                stats = httpx.get(f"http://127.0.0.1:{up_port}/_stats", timeout=5).json()
                res.upstream_stats = {"requests": 0, **stats}

            # ---- download + check
            t_dl = time.monotonic()
            seen: dict[str, int] = {}
            ok = bad = 0
            bad_examples: list[str] = []
            for key in ("output_file_id", "error_file_id"):
                fid = batch.get(key)
                if not fid:
                    continue
                content = client.get(f"/files/{fid}/content")
                content.raise_for_status()
                for raw in content.content.splitlines():
                    if not raw.strip():
                        continue
                    line = json.loads(raw)
                    cid = line.get("custom_id")
                    seen[cid] = seen.get(cid, 0) + 1
                    resp = line.get("response") or {}
                    if key == "output_file_id" and resp.get("status_code") == 200 and line.get("error") is None:
                        ok += 1
                    else:
                        bad += 1
                        if len(bad_examples) < 3:
                            bad_examples.append(raw.decode(errors="replace")[:300])
            expected = set(ids)
            missing = [c for c in ids if c not in seen]
            dupes = [c for c, n in seen.items() if n > 1]
            unknown = [c for c in seen if c not in expected]
            res.times["download_s"] = time.monotonic() - t_dl
            res.correctness = {
                "correct": not missing and not dupes and not unknown and batch["status"] == "completed",
                "every_custom_id_exactly_once": not missing and not dupes and not unknown,
                "lines_in_output_files": sum(seen.values()), "succeeded_200": ok, "failed_lines": bad,
                "missing": len(missing), "duplicated": len(dupes), "unknown": len(unknown),
                "examples_missing": missing[:5], "examples_duplicated": dupes[:5], "examples_failed": bad_examples,
            }
    except Exception as exc:  # report, do not crash the other runs
        res.error = f"{type(exc).__name__}: {exc}"
        res.correctness.setdefault("correct", False)
    finally:
        if profiler is not None and profiler.poll() is None:
            profiler.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(60)
        for proc in (gateway, upstream):
            if proc is not None:
                proc.stop()
        if gateway is not None and res.error:
            res.correctness["gateway_log_tail"] = gateway.tail(2000)
    return res


# --------------------------------------------------------------------------- reporting
def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
    }
    with contextlib.suppress(OSError):
        models = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")]
        info["cpu_model"] = models[0] if models else None
    with contextlib.suppress(OSError, ValueError):
        info["mem_total_mb"] = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    versions = {}
    for pkg in ("aistats-gateway", "uvicorn", "uvloop", "httptools", "fastapi", "starlette", "aiohttp",
                "sqlalchemy", "aiosqlite", "orjson", "httpx"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[pkg] = version(pkg)
    info["packages"] = versions
    with contextlib.suppress(Exception):
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                            text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout
        info["git_src_dirty"] = bool(dirty.strip())
        info["git_src_dirty_files"] = [ln[3:] for ln in dirty.splitlines()][:50]
    # The code under test, exactly: commits get rewritten and src/ may hold uncommitted work.
    digest = hashlib.sha256()
    for path in sorted((REPO / "src").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    info["src_sha256"] = digest.hexdigest()[:16]
    return info


def _fmt(value: Any, spec: str = ",.0f", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, (int, float)):
        return f"{value:{spec}}{unit}"
    return str(value)


ROWS: list[tuple[str, str, str, str, str]] = [
    # label, section, key, format, unit
    ("status", "", "final_status", "", ""),
    ("correct (completed; each custom_id exactly once)", "correctness", "correct", "", ""),
    ("succeeded / failed lines", "", "_okbad", "", ""),
    ("end-to-end (upload → completed)", "times", "end_to_end_s", ",.2f", " s"),
    ("  upload", "times", "upload_s", ",.2f", " s"),
    ("  create → completed", "times", "create_to_completed_s", ",.2f", " s"),
    ("  validating (create → in_progress)", "times", "validating_s", ",.2f", " s"),
    ("  executing (in_progress → all settled)", "times", "executing_s", ",.2f", " s"),
    ("  finalizing (all settled → completed)", "times", "finalizing_s", ",.2f", " s"),
    ("  first result after create", "times", "first_result_after_create_s", ",.2f", " s"),
    ("download output", "times", "download_s", ",.2f", " s"),
    ("items/s end to end", "rates", "items_per_s_end_to_end", ",.0f", ""),
    ("items/s executing", "rates", "items_per_s_executing", ",.0f", ""),
    ("items/s steady state (10%→90%)", "rates", "items_per_s_steady_10_90", ",.0f", ""),
    ("gateway CPU", "cpu", "gateway_cpu_s", ",.2f", " s"),
    ("gateway CPU-µs / item", "cpu", "gateway_cpu_us_per_item", ",.0f", ""),
    ("gateway cores busy while executing", "cpu", "gateway_cores_executing", ".2f", ""),
    ("  of which event-loop (main) thread", "cpu", "gateway_main_thread_cores_executing", ".2f", ""),
    ("  gateway CPU validating / executing / finalizing", "", "_cpuphases", "", ""),
    ("upstream CPU-µs / item", "cpu", "upstream_cpu_us_per_item", ",.0f", ""),
    ("upstream cores busy while executing", "cpu", "upstream_cores_executing", ".2f", ""),
    ("bench client CPU", "cpu", "bench_client_cpu_s", ",.2f", " s"),
    ("other processes' cores while executing", "cpu", "other_processes_cores_executing", ".2f", ""),
    ("gateway RSS before upload", "memory_kb", "gateway_rss_before", ",.0f", " KiB"),
    ("gateway peak RSS (VmHWM)", "memory_kb", "gateway_peak_rss", ",.0f", " KiB"),
    ("upstream requests seen", "upstream_stats", "requests", ",.0f", ""),
    ("load average before → after", "", "_load", "", ""),
]


def _cell(r: RunResult, section: str, key: str, spec: str, unit: str) -> str:
    if key == "_okbad":
        c = r.correctness
        return f"{_fmt(c.get('succeeded_200'), ',')} / {_fmt(c.get('failed_lines'), ',')}"
    if key == "_cpuphases":
        c = r.cpu
        return " / ".join(_fmt(c.get(k), ".2f") for k in
                          ("gateway_cpu_s_validating", "gateway_cpu_s_executing", "gateway_cpu_s_finalizing")) + " s"
    if key == "_load":
        return f"{_fmt(r.loadavg_before[:1] and r.loadavg_before[0], '.2f')} → " \
               f"{_fmt(r.loadavg_after[:1] and r.loadavg_after[0], '.2f')}"
    value = getattr(r, key) if not section else getattr(r, section).get(key)
    return _fmt(value, spec, unit) if spec else _fmt(value)


def print_table(results: list[RunResult]) -> None:
    headers = [f"{r.label}\n{r.model}" for r in results]
    width0 = max(len(row[0]) for row in ROWS) + 2
    cols = [[_cell(r, *row[1:]) for row in ROWS] for r in results]
    widths = [max(max(len(h) for h in hdr.split("\n")), *(len(c) for c in col)) + 2
              for hdr, col in zip(headers, cols, strict=True)]
    for part in (0, 1):
        print(" " * width0 + "".join(h.split("\n")[part].rjust(w) for h, w in zip(headers, widths, strict=True)))
    print("-" * (width0 + sum(widths)))
    for i, row in enumerate(ROWS):
        print(row[0].ljust(width0) + "".join(col[i].rjust(w) for col, w in zip(cols, widths, strict=True)))
    for r in results:
        other = r.cpu.get("other_processes_cores_executing")
        if other is not None and other > 0.25:
            print(f"[{r.label}] WARNING: other processes used {other:.2f} cores while the batch executed; "
                  "the gateway competed with them for CPU, so these figures understate it")
        if r.error:
            print(f"\n[{r.label}] ERROR: {r.error}")
        if r.correctness.get("examples_failed"):
            print(f"[{r.label}] failed-line examples: {r.correctness['examples_failed']}")
        if r.profile:
            print(f"[{r.label}] py-spy profile: {r.profile}")


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: list[RunResult], mocks: list[RunResult]) -> dict[str, Any]:
    def med(rs: list[RunResult], section: str, key: str) -> float | None:
        return _median([getattr(r, section).get(key) for r in rs])

    keys = [("rates", "items_per_s_end_to_end"), ("rates", "items_per_s_executing"),
            ("rates", "items_per_s_steady_10_90"), ("cpu", "gateway_cpu_us_per_item"),
            ("cpu", "upstream_cpu_us_per_item"), ("times", "end_to_end_s"), ("times", "validating_s"),
            ("times", "executing_s"), ("times", "finalizing_s"), ("memory_kb", "gateway_peak_rss"),
            ("cpu", "gateway_cores_executing"), ("cpu", "other_processes_cores_executing")]
    out: dict[str, Any] = {
        "main": {"model": runs[0].model if runs else None, **{k: med(runs, s, k) for s, k in keys}},
        "all_correct": all(r.correctness.get("correct") for r in [*runs, *mocks]),
    }
    if mocks:
        out["mock"] = {"model": "mock/echo", **{k: med(mocks, s, k) for s, k in keys}}
        up, mk = out["main"], out["mock"]
        out["main_vs_mock"] = {
            "items_per_s_end_to_end_ratio": _div(up["items_per_s_end_to_end"], mk["items_per_s_end_to_end"]),
            "items_per_s_executing_ratio": _div(up["items_per_s_executing"], mk["items_per_s_executing"]),
            "gateway_cpu_per_item_ratio": _div(up["gateway_cpu_us_per_item"], mk["gateway_cpu_us_per_item"]),
            "gateway_cpu_us_per_item_extra_for_http": (
                up["gateway_cpu_us_per_item"] - mk["gateway_cpu_us_per_item"]
                if up["gateway_cpu_us_per_item"] is not None and mk["gateway_cpu_us_per_item"] is not None
                else None),
        }
    return out


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--lines", type=int, default=20_000, help="requests in the batch")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="AISTATS_CONCURRENCY for the gateway (unset: the gateway's default, 64)")
    parser.add_argument("--model", default="gpt-4o-mini", help="model sent to the upstream (via the openai provider)")
    parser.add_argument("--upstream-latency-ms", type=float, default=0.0, help="artificial upstream latency")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant (fresh processes each time)")
    parser.add_argument("--also-mock", action="store_true",
                        help="also run the same batch on the built-in mock/echo model (no upstream HTTP)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--executor-setting", action="append", default=[], metavar="KEY=VALUE",
                        help="extra [executor] setting for the gateway via AISTATS_CONFIG (repeatable), "
                             "e.g. commit_interval_seconds=0.01")
    parser.add_argument("--out", default=None,
                        help="JSON results path (default bench/results/batch_throughput-<UTC time>.json)")
    parser.add_argument("--poll-ms", type=float, default=50.0, help="batch polling interval")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up on a run after this many seconds")
    parser.add_argument("--settle-seconds", type=float, default=1.0, help="idle time after start-up, before sampling")
    parser.add_argument("--quiet-wait", type=float, default=120.0,
                        help="before each run, wait up to this many seconds for the machine to be idle (0: don't)")
    parser.add_argument("--quiet-cores", type=float, default=0.3,
                        help="'idle' means fewer busy cores than this over one second")
    parser.add_argument("--keep-workdir", action="store_true", help="keep data dirs and process logs")
    parser.add_argument("--py-spy-dir", default=None,
                        help="profile the gateway with py-spy during each run, writing <dir>/<label>.svg|txt")
    parser.add_argument("--py-spy-format", default="flamegraph", choices=("flamegraph", "raw", "speedscope"))
    parser.add_argument("--py-spy-rate", type=int, default=100)
    parser.add_argument("--py-spy-args", default="", help="extra py-spy record flags, e.g. '--native --idle'")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"))
    args = parser.parse_args(argv)

    started = dt.datetime.now(dt.UTC)
    out_path = Path(args.out) if args.out else (
        REPO / "bench" / "results" / f"batch_throughput-{started.strftime('%Y%m%dT%H%M%SZ')}.json")
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["batch_throughput.py", *argv])
    info = machine_info()
    print(f"batch_throughput: {args.lines:,} lines, model {args.model}, concurrency "
          f"{args.concurrency or 'default (64)'}, upstream latency {args.upstream_latency_ms} ms, "
          f"repeat {args.repeat}{', also mock/echo' if args.also_mock else ''}; "
          f"{info['nproc']} CPUs, Python {info['python']}", file=sys.stderr, flush=True)

    workroot = Path(tempfile.mkdtemp(prefix="aistats-bench-"))
    runs: list[RunResult] = []
    mocks: list[RunResult] = []
    try:
        payload, ids = make_jsonl(args.lines, args.model, args.max_tokens)
        mock_payload, _ = make_jsonl(args.lines, "mock/echo", args.max_tokens) if args.also_mock else (b"", [])
        for i in range(args.repeat):
            suffix = f"#{i + 1}" if args.repeat > 1 else ""
            main_label = ("mock" if args.model.startswith("mock/") else "upstream") + suffix
            print(f"run {main_label} …", file=sys.stderr, flush=True)
            runs.append(run_once(main_label, args, args.model, payload, ids, workroot / f"up{i}"))
            if args.also_mock:
                print(f"run mock{suffix} …", file=sys.stderr, flush=True)
                mocks.append(run_once(f"mock{suffix}", args, "mock/echo", mock_payload, ids, workroot / f"mock{i}"))
    finally:
        if not args.keep_workdir:
            shutil.rmtree(workroot, ignore_errors=True)
        else:
            print(f"work directory kept: {workroot}", file=sys.stderr)

    results = [*runs, *mocks]
    print()
    print_table(results)
    summary = summarize(runs, mocks)
    if mocks:
        ratio = summary["main_vs_mock"]
        medians = " (medians)" if args.repeat > 1 else ""
        print(f"\n{args.model} ÷ mock/echo{medians}: "
              f"items/s end to end ×{_fmt(ratio['items_per_s_end_to_end_ratio'], '.2f')}, "
              f"items/s executing ×{_fmt(ratio['items_per_s_executing_ratio'], '.2f')}, "
              f"gateway CPU per item ×{_fmt(ratio['gateway_cpu_per_item_ratio'], '.2f')} "
              f"(+{_fmt(ratio['gateway_cpu_us_per_item_extra_for_http'], ',.0f')} µs/item for the upstream HTTP)")

    doc = {
        "benchmark": "batch_throughput",
        "started_utc": started.isoformat(timespec="seconds"),
        "command": command,
        "cwd": os.getcwd(),
        "args": vars(args),
        "machine": info,
        "summary": summary,
        "runs": [r.__dict__ for r in results],
        "notes": {
            "phases": "client-observed at the poll interval: validating = create request sent → first poll not "
                      "'validating'; executing = that poll → first poll with every item settled (or finalizing); "
                      "finalizing = that poll → first poll 'completed'",
            "cpu": "user+sys from /proc/<pid>/stat (utime+stime+cutime+cstime, plus live descendants), sampled "
                   "before the upload and right after completion; includes serving the ~20 polls/s",
            "samples": "[t_s, status, settled, gateway_cpu_s, upstream_cpu_s, gateway_main_thread_cpu_s (absolute), "
                       "machine_busy_cpu_s] per poll; times and CPU relative to upload start",
            "other_processes_cores": "machine-wide busy CPU (/proc/stat) minus gateway, upstream and this client, "
                                     "per second of wall time: anything above ~0.1 means the figures were taken "
                                     "on a shared, busy machine",
        },
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"\nresults: {out_path}")
    print(f"command: {command}")
    return 0 if summary["all_correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
