"""Real processes for end-to-end tests: the gateway (uvicorn via `aistats serve`) and the
fault-injecting upstream, each on a free loopback port with its own temporary data directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProcessExited(RuntimeError):
    """The process ended before it was ready (e.g. a failpoint fired during recovery)."""

    def __init__(self, returncode: int, log: str) -> None:
        super().__init__(f"process exited with {returncode}:\n{log}")
        self.returncode = returncode


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ProcessExited(proc.returncode, log.read_text()[-4000:])
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up in {timeout}s:\n{log.read_text()[-4000:]}")


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path, ready_url: str) -> None:
        self.log = log
        self._fh = log.open("ab")
        self.proc = subprocess.Popen(args, env=env, stdout=self._fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        _wait_http(ready_url, self.proc, log)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._fh.close()
        return self.proc.returncode


class Gateway(Proc):
    """`aistats serve` as a subprocess; `.client()` gives an authenticated httpx client."""

    def __init__(self, data_dir: Path, *, api_key: str = "sk-test-default", env: dict[str, str] | None = None,
                 config: str | None = None, log_level: str | None = None, port: int | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()  # a fixed port lets a test restart a gateway other processes point at
        self.data_dir = data_dir
        self.api_key = api_key
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AISTATS_", "OPENAI_"))}
        full_env.update({"AISTATS_DATA_DIR": str(data_dir), "AISTATS_PORT": str(self.port),
                         "AISTATS_API_KEY": api_key})
        if config is not None:
            path = data_dir.parent / f"{data_dir.name}.toml"
            path.write_text(config)
            full_env["AISTATS_CONFIG"] = str(path)
        full_env.update(env or {})
        self.env = full_env
        data_dir.mkdir(parents=True, exist_ok=True)
        level = log_level or os.environ.get("AISTATS_TEST_LOG_LEVEL", "warning")
        super().__init__([sys.executable, "-m", "aistats_gateway.cli.main", "serve", "--log-level", level,
                          "--log-format", "json", *args],
                         full_env, data_dir.parent / f"{data_dir.name}.log", f"{self.base_url}/health")

    def client(self, api_key: str | None = None, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout,
                            headers={"Authorization": f"Bearer {api_key or self.api_key}"})

    def new_key(self, workspace: str) -> str:
        out = subprocess.run([sys.executable, "-m", "aistats_gateway.cli.main", "keys", "create",
                              "--workspace", workspace], env=self.env, check=True, capture_output=True, text=True)
        return out.stdout.strip().splitlines()[-1]


class Upstream(Proc):
    def __init__(self, log: Path, *, latency_ms: float = 0, rpm: int = 0, models: tuple[str, ...] | None = None
                 ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        listed = ["--models", ",".join(models)] if models is not None else []
        super().__init__([sys.executable, "-m", "aistats_gateway.testing.upstream", "--port", str(self.port),
                          "--latency-ms", str(latency_ms), "--rpm", str(rpm), *listed],
                         dict(os.environ), log, f"http://127.0.0.1:{self.port}/_stats")

    def ledger(self) -> dict[str, int]:
        return dict(httpx.get(f"http://127.0.0.1:{self.port}/_ledger").json())

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"http://127.0.0.1:{self.port}/_stats").json())

    def bodies(self) -> dict[str, str]:
        """The raw request body last received per key (x_fault.key), as text."""
        return dict(httpx.get(f"http://127.0.0.1:{self.port}/_bodies").json())


def wait_for_batch(client: httpx.Client, batch_id: str, timeout: float = 60.0,
                   until: tuple[str, ...] = ("completed", "failed", "cancelled", "expired"),
                   every: float = 0.05) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = client.get(f"/batches/{batch_id}").json()
        if batch["status"] in until:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} still {batch['status']} after {timeout}s: {batch}")
        time.sleep(every)


def chat_line(custom_id: str, text: str, model: str = "mock/echo", **extra: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}], **extra}}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    import json

    return "".join(json.dumps(line) + "\n" for line in lines).encode()


class InProcessGateway:
    """The real app under uvicorn on a loopback port, in a thread of this process, with a clock the
    test controls (for expiry and other time-driven behaviour that a subprocess cannot fast-forward)."""

    def __init__(self, data_dir: Path, clock: Any, **overrides: Any) -> None:
        import asyncio
        import threading

        import uvicorn

        from aistats_gateway.app import build_app
        from aistats_gateway.config import Settings

        self.port = free_port()
        self.api_key = "sk-test-inproc"
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        settings = Settings.load({"AISTATS_DATA_DIR": str(data_dir), "AISTATS_API_KEY": self.api_key}, **overrides)
        self.settings = settings
        config = uvicorn.Config(build_app(settings, clock), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("in-process gateway did not start")
            time.sleep(0.02)

    def client(self, api_key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30,
                            headers={"Authorization": f"Bearer {api_key or self.api_key}"})

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


class Receiver(Proc):
    """The webhook receiver process (`aistats_gateway.testing.receiver`)."""

    def __init__(self, log: Path, *, port: int | None = None, secret: str | None = None, status: int = 200,
                 fail_first: int = 0, hang: bool = False) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/batch"
        args = [sys.executable, "-m", "aistats_gateway.testing.receiver", "--port", str(self.port),
                "--status", str(status), "--fail-first", str(fail_first)]
        if secret:
            args += ["--secret", secret]
        if hang:
            args.append("--hang")
        super().__init__(args, dict(os.environ), log, f"http://127.0.0.1:{self.port}/_received")

    def received(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"http://127.0.0.1:{self.port}/_received").json())


# mock/echo with prices (USD per 1M tokens), for tests that need spend, estimates and credit holds.
MOCK_PRICES = """
[[prices]]
provider = "mock"
model = "mock/echo"
default_max_output_tokens = 4096
[prices.plans.standard]
input_text_tokens = "3"
output_text_tokens = "7"
requests = "0"
"""
