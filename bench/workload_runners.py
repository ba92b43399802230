"""The runners of `workloads.py`: one workload through the gateway, or through a baseline client.

Each returns a flat dict (one row of the report). Both sides talk to the same mock upstream
process, whose /_stats and /_ledger are read after the run (and reset before it) so that the
429 count, the busiest second and duplicate accepts are the mock's own view, not the client's.

Gateway: a fresh `aistats serve` process with its own data directory, configured by a TOML file
(`AISTATS_CONFIG`) whose `[[providers]]` entry `openai` points at the mock with the workload's
rpm/tpm, and whose `[limits]` admit W1's 100k lines and W4's 200 MB. Timed: upload (POST
/v1/files), create → first poll no longer `validating` (validation), create → terminal status
(the gateway's time). CPU is the gateway process's utime+stime delta from before the upload to
the terminal poll (/proc/<pid>/stat); memory is VmHWM at the end against VmRSS before the upload.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from procstats import Proc, base_env, cpu_seconds, free_port, machine_busy_seconds, proc_status_kb, self_cpu_seconds
from workload_data import InputFile, Workload, ideal_seconds

API_KEY = "sk-bench-workloads"
TERMINAL = ("completed", "failed", "cancelled", "expired")
BENCH = Path(__file__).resolve().parent


class Mock:
    """The mock upstream process of one workload (shared by its runners; reset between them)."""

    def __init__(self, w: Workload, workdir: Path, latency_dist: str = "fixed") -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        args = [sys.executable, "-m", "aistats_gateway.testing.mock_upstream", "--port", str(self.port),
                "--latency-ms", str(w.latency_ms), "--latency-dist", latency_dist,
                "--rpm", str(w.rpm or 0), "--tpm", str(w.tpm or 0)]
        self.proc = Proc("mock", args, base_env(), workdir / "mock.log", f"http://127.0.0.1:{self.port}/_stats")
        self.pid = self.proc.pid

    def get(self, what: str) -> dict[str, Any]:
        return dict(httpx.get(f"http://127.0.0.1:{self.port}/{what}", timeout=60).json())

    def reset(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/_reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        self.proc.stop()


def _mock_figures(mock: Mock, cpu_s: float) -> dict[str, Any]:
    stats = mock.get("_stats")
    ledger = mock.get("_ledger")
    requests = int(stats["requests"])
    return {
        "mock_requests": requests, "mock_accepted": stats["accepted"], "throttled_429": stats["throttled"],
        "throttled_pct": 100.0 * stats["throttled"] / requests if requests else 0.0,
        "max_accepted_in_1s": stats["max_accepted_in_1s"], "max_tokens_in_1s": stats["max_tokens_in_1s"],
        "dup_accepted_lines": sum(1 for n in ledger["accepted"].values() if n > 1),
        "mock_cpu_us_per_request": cpu_s * 1e6 / requests if requests else None,
    }


def _config(w: Workload, mock: Mock, concurrency: int | None) -> str:
    provider = ['name = "openai"', 'kind = "openai"', f'base_url = "{mock.base_url}"', 'api_key = "x"',
                'models = ["*"]']
    if w.rpm:
        provider.append(f"rpm = {w.rpm}")
    if w.tpm:
        provider.append(f"tpm = {w.tpm}")
    executor = f"[executor]\nconcurrency = {concurrency}\n\n" if concurrency else ""
    return (executor + "[limits]\nmax_file_bytes = 268435456\nmax_batch_lines = 500000\n\n[[providers]]\n"
            + "\n".join(provider) + "\n")


def run_gateway(w: Workload, data: InputFile, mock: Mock, args: Any, workdir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"runner": "gateway", "lines": data.lines}
    port = free_port()
    (workdir / "gateway-data").mkdir(parents=True, exist_ok=True)
    (workdir / "gateway.toml").write_text(_config(w, mock, args.concurrency))
    env = base_env()
    env.update({"AISTATS_DATA_DIR": str(workdir / "gateway-data"), "AISTATS_PORT": str(port),
                "AISTATS_API_KEY": API_KEY, "AISTATS_CONFIG": str(workdir / "gateway.toml")})
    base = f"http://127.0.0.1:{port}/v1"
    gw = Proc("gateway", [sys.executable, "-m", "aistats_gateway.cli.main", "serve", "--log-level", "warning"], env,
              workdir / "gateway.log", f"{base}/health")
    profiler: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(args.settle_seconds)
        if args.pyspy:
            profiler = _start_pyspy(args, gw.pid, workdir, row, w.name)
        mock.reset()
        rss0, cpu0, mcpu0 = proc_status_kb(gw.pid, "VmRSS"), cpu_seconds(gw.pid), cpu_seconds(mock.pid)
        machine0, self0 = machine_busy_seconds(), self_cpu_seconds()
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=600)
        t0 = time.monotonic()
        with data.path.open("rb") as fh:
            up = client.post("/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", fh, "application/jsonl")})
        up.raise_for_status()
        t_create = time.monotonic()
        created = client.post("/batches", json={"input_file_id": up.json()["id"], "endpoint": "/v1/chat/completions",
                                                "completion_window": "24h"})
        created.raise_for_status()
        batch_id = created.json()["id"]
        t_valid = t_cancel = None
        while True:
            batch = client.get(f"/batches/{batch_id}").json()
            now = time.monotonic()
            if t_valid is None and batch["status"] != "validating":
                t_valid = now
            if batch["status"] in TERMINAL or now - t_create > args.timeout:
                break
            if w.kind == "big" and not args.w4_complete and t_valid is not None and t_cancel is None:
                client.post(f"/batches/{batch_id}/cancel").raise_for_status()
                t_cancel = now
            time.sleep(args.poll_ms / 1000.0)
        t_done = time.monotonic()
        cpu = cpu_seconds(gw.pid) - cpu0
        mcpu = cpu_seconds(mock.pid) - mcpu0
        other = machine_busy_seconds() - machine0 - cpu - mcpu - (self_cpu_seconds() - self0)
        hwm = proc_status_kb(gw.pid, "VmHWM")
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(60)
        elapsed = t_done - t_create
        counts = batch.get("request_counts") or {}
        row.update({
            "status": batch["status"] + (" (cancelled after validation)" if t_cancel else ""),
            "upload_s": t_create - t0, "time_s": elapsed,
            "validation_s": (t_valid - t_create) if t_valid else None,
            "validation_mb_per_s": data.bytes / 1e6 / (t_valid - t_create) if t_valid else None,
            "items_per_s": data.lines / elapsed if not t_cancel else None,
            "gateway_cpu_s": cpu, "gateway_cpu_us_per_item": cpu * 1e6 / data.lines,
            "peak_rss_kb": hwm, "rss_before_kb": rss0, "rss_growth_kb": (hwm - rss0) if hwm and rss0 else None,
            "other_processes_cores": other / (t_done - t0),
            "completed": counts.get("completed"), "failed": counts.get("failed"),
        })
        row.update(_mock_figures(mock, mcpu))
        if not t_cancel:
            row.update(_check_output(client, batch, data.ids))
        row["efficiency"] = _efficiency(w, data, row.get("ok"), elapsed)
        client.close()
    except Exception as exc:  # one runner's failure is reported, the others still run
        row["error"] = f"{type(exc).__name__}: {exc}\n{gw.tail(1500)}"
    finally:
        if profiler is not None and profiler.poll() is None:
            profiler.kill()
        gw.stop()
    return row


def _check_output(client: httpx.Client, batch: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """Every custom_id exactly once across the output and error files; failures and those by a 429."""
    seen: dict[str, int] = {}
    ok = failed = failed_429 = 0
    for key in ("output_file_id", "error_file_id"):
        if not batch.get(key):
            continue
        content = client.get(f"/files/{batch[key]}/content")
        content.raise_for_status()
        for raw in content.content.splitlines():
            if not raw.strip():
                continue
            line = json.loads(raw)
            seen[line["custom_id"]] = seen.get(line["custom_id"], 0) + 1
            status = (line.get("response") or {}).get("status_code")
            if key == "output_file_id" and status == 200 and line.get("error") is None:
                ok += 1
            else:
                failed += 1
                failed_429 += status == 429
    expected = set(ids)
    exact = len(seen) == len(expected) and all(n == 1 for n in seen.values()) and set(seen) == expected
    return {"ok": ok, "failed": failed, "failed_429": failed_429, "each_custom_id_once": exact}


def _start_pyspy(args: Any, pid: int, workdir: Path, row: dict[str, Any], name: str) -> subprocess.Popen[bytes] | None:
    import shutil

    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("  --pyspy: py-spy not found (pip install py-spy into the venv); not profiling", file=sys.stderr)
        return None
    out = Path(args.pyspy) / f"{name}-gateway.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    row["profile"] = str(out)
    proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--nonblocking",
                             "-o", str(out)], stdout=subprocess.DEVNULL, stderr=(workdir / "py-spy.log").open("wb"))
    time.sleep(1.0)
    return proc


def run_baseline(kind: str, w: Workload, data: InputFile, mock: Mock, args: Any, workdir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"runner": {"naive": "naive SDK + Semaphore(64)", "tokenbucket": "token-bucket client"}[kind],
                           "lines": data.lines}
    out = workdir / f"{kind}.json"
    cmd = [sys.executable, str(BENCH / "baselines.py"), kind, "--input", str(data.path), "--base-url", mock.base_url,
           "--out", str(out)]
    if kind == "tokenbucket":
        cmd += ["--burst-seconds", str(args.tb_burst_seconds), "--pause-after-429", str(args.tb_pause_after_429)]
        cmd += [*(["--rpm", str(w.rpm)] if w.rpm else []), *(["--tpm", str(w.tpm)] if w.tpm else [])]
    row["command"] = shlex.join(cmd)
    mock.reset()
    mcpu0, machine0 = cpu_seconds(mock.pid), machine_busy_seconds()
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=BENCH, env=base_env(), capture_output=True, text=True, timeout=args.timeout)
    wall = time.monotonic() - t0
    mcpu = cpu_seconds(mock.pid) - mcpu0
    if done.returncode != 0 or not out.exists():
        row["error"] = f"exit {done.returncode}: {done.stderr[-1500:]}"
        return row
    res = json.loads(out.read_text())
    elapsed = res["run_s"]
    row.update({
        "status": "done", "time_s": elapsed, "upload_s": None, "items_per_s": data.lines / elapsed,
        "client_cpu_s": res["cpu_s"], "client_cpu_us_per_item": res["cpu_s"] * 1e6 / data.lines,
        "peak_rss_kb": res["peak_rss_kb"], "rss_before_kb": res["rss_start_kb"],
        "rss_growth_kb": res["peak_rss_kb"] - res["rss_start_kb"],
        "ok": res["ok"], "failed": res["failed"], "failed_429": res["failed_429"],
        "other_processes_cores": (machine_busy_seconds() - machine0 - mcpu - res["cpu_s"]) / wall,
        "settings": res["settings"],
    })
    row.update(_mock_figures(mock, mcpu))
    row["efficiency"] = _efficiency(w, data, res["ok"], elapsed)
    return row


def _efficiency(w: Workload, data: InputFile, ok: int | None, elapsed: float) -> float | None:
    """Ideal time (from the limits) of the lines that succeeded ÷ the time taken. With no failed line
    this is the issue's definition; counting only successes keeps a runner that gives up on lines
    from looking efficient."""
    ideal = ideal_seconds(w, data)
    if ideal is None or ok is None or elapsed <= 0:
        return None
    return ideal * ok / data.lines / elapsed
