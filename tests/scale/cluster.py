"""A scaled-out gateway as real processes: API processes (`serve --no-worker`) and `aistats worker`s
sharing a fresh PostgreSQL database, an S3-compatible server (moto) and a Redis key prefix, in front of
the rate-limited test upstream. Used by the multi-process tests and bench/scale_workers.py.

Everything is created per cluster and removed at `close()`: the database is dropped, the Redis keys
deleted, the processes stopped.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests import backends
from tests.harness import Proc, Upstream, _wait_http, free_port

API_KEY = "sk-test-scale"
CLI = [sys.executable, "-m", "aistats_gateway.cli.main"]


class Role(Proc):
    """A gateway process started without waiting (a cluster starts them all, then waits for each)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, ready: str, port: int) -> None:
        self.env = env
        self.log = log
        self.ready = ready
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._fh = log.open("ab")
        self.proc = subprocess.Popen(args, env=env, stdout=self._fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self) -> Role:
        _wait_http(self.ready, self.proc, self.log, timeout=60.0)
        return self

    def metric(self, name: str) -> float:
        """The sum of a Prometheus counter's samples on this process's /metrics."""
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and not line.startswith("#"))


class Cluster:
    def __init__(self, tmp: Path, *, workers: int, rpm: int = 0, latency_ms: float = 0.0, config: str = "",
                 apis: int = 1, redis: bool = True, log_level: str = "warning") -> None:
        self.tmp = tmp
        self.log_level = log_level
        self.db_url = backends.create_database()
        self.prefix = backends.redis_prefix()
        self.procs: list[Role] = []
        self.s3: backends.S3Server | None = None
        self.upstream: Upstream | None = None
        try:
            self.s3 = backends.S3Server(tmp / "moto.log")
            bucket = f"aistats-{secrets.token_hex(4)}"
            import boto3

            boto3.client("s3", endpoint_url=self.s3.endpoint_url, region_name="us-east-1",
                         aws_access_key_id=self.s3.ACCESS_KEY,
                         aws_secret_access_key=self.s3.SECRET_KEY).create_bucket(Bucket=bucket)
            self.upstream = Upstream(tmp / "upstream.log", latency_ms=latency_ms, rpm=rpm)
            config_path = tmp / "cluster.toml"
            config_path.write_text(config.replace("{upstream}", self.upstream.base_url))  # where providers go
            base = {k: v for k, v in os.environ.items() if not k.startswith(("AISTATS_", "OPENAI_", "AWS_"))}
            self.env = {**base, **self.s3.env(bucket, "gw"), "AISTATS_DATABASE_URL": self.db_url,
                        "AISTATS_API_KEY": API_KEY, "AISTATS_CONFIG": str(config_path),
                        "OPENAI_BASE_URL": self.upstream.base_url, "OPENAI_API_KEY": "sk-up"}
            if redis:
                self.env |= {"AISTATS_REDIS_URL": backends.REDIS_URL, "AISTATS_REDIS_PREFIX": self.prefix}
            subprocess.run([*CLI, "migrate"], env={**self.env, "AISTATS_DATA_DIR": str(tmp / "migrate")},
                           check=True, capture_output=True, timeout=60)
            self.apis = [self.start_api(i) for i in range(apis)]
            self.workers = [self.start_worker(i) for i in range(workers)]
            for proc in self.procs:
                proc.wait_ready()
        except BaseException:
            self.close()
            raise

    def _env(self, name: str, **extra: str) -> dict[str, str]:
        data = self.tmp / name
        data.mkdir(parents=True, exist_ok=True)
        return {**self.env, "AISTATS_DATA_DIR": str(data), "AISTATS_NODE_ID": name, **extra}

    def start_api(self, i: int) -> Role:
        port = free_port()
        proc = Role([*CLI, "serve", "--no-worker", "--log-level", self.log_level, "--log-format", "json"],
                    self._env(f"api{i}", AISTATS_PORT=str(port)), self.tmp / f"api{i}.log",
                    f"http://127.0.0.1:{port}/v1/health", port)
        self.procs.append(proc)
        return proc

    def start_worker(self, i: int) -> Role:
        port = free_port()
        proc = Role([*CLI, "worker", "--port", str(port), "--log-level", self.log_level, "--log-format", "json"],
                    self._env(f"w{i}"), self.tmp / f"w{i}.log", f"http://127.0.0.1:{port}/v1/health", port)
        self.procs.append(proc)
        return proc

    def client(self, api: int = 0, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.apis[api].base_url, timeout=timeout,
                            headers={"Authorization": f"Bearer {API_KEY}"})

    def new_key(self, workspace: str) -> str:
        """A key of `workspace` (created if new), minted by the CLI against the cluster's database."""
        out = subprocess.run([*CLI, "keys", "create", "--workspace", workspace], check=True, capture_output=True,
                             text=True, env={**self.env, "AISTATS_DATA_DIR": str(self.tmp / "keys")}, timeout=60)
        return out.stdout.strip().splitlines()[-1]

    def accepts(self) -> dict[str, Any]:
        assert self.upstream is not None
        return dict(httpx.get(f"http://127.0.0.1:{self.upstream.port}/_accepts", timeout=30).json())

    def sql(self, query: str, *args: Any) -> list[Any]:
        import asyncio

        import asyncpg

        async def run() -> list[Any]:
            conn = await asyncpg.connect(self.db_url)
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    def kill(self, proc: Role) -> None:
        proc.stop(signal.SIGKILL)

    def close(self) -> None:
        """Stop every process (each on its own: one that fails to stop must not leave the others running),
        then drop the database and the Redis keys."""
        errors: list[BaseException] = []
        for proc in [*reversed(self.procs), self.upstream, self.s3]:
            if proc is None:
                continue
            try:
                proc.stop(timeout=20)
            except BaseException as exc:
                errors.append(exc)
                with contextlib.suppress(OSError):
                    os.killpg(proc.proc.pid, signal.SIGKILL)
        backends.drop_database(self.db_url)
        if backends.redis_available():
            backends.drop_redis_keys(self.prefix)
        if errors:
            raise errors[0]
