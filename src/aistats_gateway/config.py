"""Settings, parsed once: environment variables plus an optional TOML file.

Nothing else in the gateway reads `os.environ`: `Settings.load()` is called by the CLI (or a test)
and the result is passed down. Precedence: environment > TOML file > defaults.

Environment variables (documented in the README):
    AISTATS_DATA_DIR      where the SQLite database and local blobs live
    AISTATS_HOST          bind address (default 127.0.0.1)
    AISTATS_PORT          port (default 8787)
    AISTATS_API_KEY       static API key of the default workspace
    AISTATS_CONFIG        path of an optional TOML file
    AISTATS_DATABASE_URL  database URL: sqlite:///PATH or postgresql://USER@HOST:PORT/DB (default: SQLite in
                          the data dir); postgresql:// and postgres:// mean the asyncpg driver
    AISTATS_BLOB_URL      where files live: unset = `blobs/` in the data dir; s3://BUCKET[/PREFIX] = S3-compatible
    AISTATS_S3_ENDPOINT_URL, AISTATS_S3_REGION, AISTATS_S3_ACCESS_KEY_ID, AISTATS_S3_SECRET_ACCESS_KEY
                          the S3 endpoint (unset = AWS) and credentials (unset = botocore's usual chain)
    AISTATS_REDIS_URL     redis://HOST:PORT/DB: shared rate limits, cross-process events, cancel signals
    AISTATS_REDIS_PREFIX  prefix of every Redis key and channel (default "aistats:")
    AISTATS_LEASE_SECONDS how long an item lease lasts without a heartbeat (executor.lease_seconds)
    AISTATS_PUBLIC_URL    base URL used in polling/cancel/websocket URLs (default: from the request)
    AISTATS_CONCURRENCY   executor concurrency (default 64)
    AISTATS_METRICS_TOKEN bearer token `GET /metrics` requires (metrics.token; unset: unauthenticated)
    AISTATS_NODE_ID       this process's lease-owner prefix (default "local")
    AISTATS_FAILPOINTS    crash points for durability tests (never in production)
    OPENAI_API_KEY, OPENAI_BASE_URL   enable the `openai` provider (any OpenAI-compatible upstream)
    ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL   enable the `anthropic` provider (`claude-*` models)

Execution mode of a batch (managed or native, issue #7): `[[providers]] batch_api = true` says a provider
(kind `openai` or `anthropic`) offers its own batch API (OpenAI's Batch API, Anthropic's Message Batches) at
the providers' batch price. A batch's `execution` (create body: "auto" | "managed" | "native", default
"auto") then chooses: `managed` runs every line through our own executor; `native` hands the lines to the
provider's batch API (400 at create when a line's provider has no `batch_api`); `auto` is native exactly when
every line's provider has `batch_api = true` AND the batch's completion_window is at least 24h (the providers'
own window), else managed. `[native]` tunes the provider-batch poller (poll interval, timeouts, how long an
ambiguous create is reconciled before it may be sent again).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aistats_gateway import config_file
from aistats_gateway.metrics import DEFAULT_MODEL_LABELS


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting and why."""


class Section(BaseModel):
    """Base of every settings model. Frozen: settings are values once loaded, nothing changes them behind the
    reader's back. `extra="forbid"`: a misspelt key (`concurency = 12`) stops the gateway at start instead of
    being silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LaneLimits(Section):
    """Pacing limits of one lane; None means "unknown": learned from the upstream's headers, and
    concurrency found by additive increase / multiplicative decrease."""

    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    max_concurrency: int | None = Field(None, ge=1)


class ProviderConfig(Section):
    """One upstream. `models` are patterns: exact names, `prefix*`, or `*` for anything.

    `rpm`/`tpm`/`max_concurrency` apply to each (provider, model) lane; `limits` overrides them per
    model (TOML: `[providers.limits."gpt-4o-mini"] rpm = 500`).
    """

    name: str
    kind: Literal["openai", "anthropic", "mock"]
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    models: list[str] = Field(default_factory=lambda: ["*"])
    max_concurrency: int | None = Field(None, ge=1)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    limits: dict[str, LaneLimits] = Field(default_factory=dict)
    timeout_seconds: float | None = None
    # The provider has a batch API we may use (kind openai: /v1/files + /v1/batches; kind anthropic:
    # /v1/messages/batches): `auto` batches whose lines all go to such providers run natively.
    batch_api: bool = False

    def lane_limits(self, model: str) -> LaneLimits:
        """This provider's limits for `model`: the per-model override where set, else the provider's."""
        override = self.limits.get(model)
        return LaneLimits(
            rpm=override.rpm if override and override.rpm else self.rpm,
            tpm=override.tpm if override and override.tpm else self.tpm,
            max_concurrency=override.max_concurrency if override and override.max_concurrency
            else self.max_concurrency,
        )


class ExecutorConfig(Section):
    concurrency: int = Field(64, ge=1, le=10_000)
    max_attempts: int = Field(5, ge=1, le=50)
    backoff_base_seconds: float = Field(0.5, gt=0)
    backoff_max_seconds: float = Field(30.0, gt=0)
    request_timeout_seconds: float = Field(600.0, gt=0)
    connect_timeout_seconds: float = Field(10.0, gt=0)
    max_response_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    commit_interval_seconds: float = Field(0.05, gt=0)
    commit_max_items: int = Field(512, ge=1)
    lease_seconds: float = Field(600.0, gt=0)
    poll_interval_seconds: float = Field(1.0, gt=0)
    expiry_check_seconds: float = Field(5.0, gt=0)
    # Pacing under known RPM/TPM limits: this fraction of the limit, bursts of at most this many seconds of rate.
    pacing_headroom: float = Field(0.985, gt=0, le=1)
    pacing_burst_seconds: float = Field(0.5, ge=0, le=1)
    circuit_cooldown_seconds: float = Field(30.0, gt=0)  # a provider's circuit stays open this long
    # A lane with a known rate limit keeps rate x latency requests in flight (Little's law), up to this;
    # it is also the size of each provider's connection pool.
    max_lane_concurrency: int = Field(1024, ge=1, le=100_000)
    # Batches validated at once by this process; the others wait their turn, taken across workspaces in turn.
    validation_concurrency: int = Field(4, ge=1, le=256)
    # A lane (provider, upstream model) with nothing queued or in flight for this long is retired: any model name
    # may come through a provider with models = ["*"], and each lane holds memory and a task until it goes.
    lane_idle_seconds: float = Field(60.0, gt=0)


class S3Config(Section):
    """The S3-compatible endpoint behind `blob_url = "s3://bucket/prefix"`; unset credentials mean botocore's
    usual chain (AWS_* variables, ~/.aws, instance roles)."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    part_size_bytes: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)  # multipart part size (S3's minimum: 5 MiB)
    addressing_style: Literal["auto", "path", "virtual"] = "path"


class RedisConfig(Section):
    key_prefix: str = "aistats:"
    limiter_ttl_seconds: int = Field(3600, ge=60)  # idle rate-limit state expires after this long


class LimitsConfig(Section):
    max_file_bytes: int = Field(200 * 1024 * 1024, ge=1)
    max_batch_lines: int = Field(50_000, ge=1)
    max_validation_errors: int = Field(100, ge=1)
    # What one connection may cost before it is refused (http_guard.py, api/limits.py): a request line plus
    # headers at most this big (431), delivered within this long of the connection or request starting (408);
    # a request body that sends nothing for body_timeout_seconds is abandoned (408, a partial upload removed).
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    header_timeout_seconds: float = Field(20.0, gt=0)
    body_timeout_seconds: float = Field(60.0, gt=0)
    # Uploads (POST /v1/files) streaming at once in this process; more answer 503 with Retry-After.
    max_concurrent_uploads: int = Field(16, ge=1)


class WebhookConfig(Section):
    retry_schedule_seconds: list[float] = Field(default_factory=lambda: [60.0, 300.0, 900.0])
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    jitter_fraction: float = Field(0.1, ge=0, le=1)
    # Webhooks to localhost/127.0.0.1/[::1] (plain http allowed), for local development only: off by default,
    # also on a loopback bind, since any workspace could otherwise reach services on the gateway's host.
    allow_local: bool = False
    max_concurrent_deliveries: int = Field(8, ge=1, le=256)
    # Fair shares of those slots (webhooks/fairness.py): attempts in flight per workspace, and per workspace
    # and target host:port; a target whose attempt timed out rests this long (doubling, at most 10 minutes).
    max_deliveries_per_workspace: int = Field(4, ge=1, le=256)
    max_deliveries_per_target: int = Field(2, ge=1, le=256)
    target_rest_seconds: float = Field(30.0, ge=0)
    restart_spread_seconds: float = Field(10.0, ge=0)
    poll_interval_seconds: float = Field(1.0, gt=0)

    @property
    def max_attempts(self) -> int:
        return 1 + len(self.retry_schedule_seconds)


class NativeConfig(Section):
    """The provider-batch poller (executor/native.py)."""

    poll_interval_seconds: float = Field(30.0, gt=0)  # how often a running provider batch is polled
    request_timeout_seconds: float = Field(120.0, gt=0)  # one call to the provider's batch/file API
    # After an ambiguous create (timeout, 5xx, crash), the provider's batches are listed for ours; only when
    # none is found this long after the last attempt may the create be sent again (with the same key).
    reconcile_grace_seconds: float = Field(60.0, ge=0)
    refresh_on_get_seconds: float = Field(5.0, ge=0)  # GET polls the provider when the last poll is older
    list_pages: int = Field(5, ge=1, le=100)  # pages of the provider's batch list searched when reconciling
    # Once a provider batch's results are stored here, delete the provider's copies (OpenAI: the uploaded input
    # file and the output/error files; Anthropic: the ended Message Batch).
    delete_provider_files: bool = True
    # The providers' per-batch limits; a larger part of a batch runs as several provider batches. OpenAI: 50,000
    # requests and a 200 MB input file; Anthropic: 100,000 requests or 256 MB. Byte limits keep 5 % headroom.
    openai_max_lines: int = Field(50_000, ge=1)
    openai_max_bytes: int = Field(190_000_000, ge=1024)
    anthropic_max_lines: int = Field(100_000, ge=1)
    anthropic_max_bytes: int = Field(243_000_000, ge=1024)


class RetentionConfig(Section):
    """How long files live when their uploader or batch creator did not say (`expires_after`,
    `output_expires_after`), and how often expired ones are removed. Unset: kept until deleted."""

    input_files_seconds: int | None = Field(None, ge=3600)  # uploads of purpose "batch"
    output_files_seconds: int | None = Field(None, ge=3600)  # a batch's output and error files
    # How long an ended batch keeps its per-line rows (results and request log) in the database. The batch
    # object, counts, billing, pricing lines, webhook history and output/error files stay; `/results` and
    # `/requests` of the batch answer that its rows were purged, and usage stops counting its lines.
    batch_rows_seconds: int | None = Field(None, ge=3600)
    sweep_seconds: float = Field(60.0, gt=0)


class MetricsConfig(Section):
    """`GET /metrics`: the label bound (see metrics.py) and an optional bearer token (AISTATS_METRICS_TOKEN)."""

    max_model_labels: int = Field(DEFAULT_MODEL_LABELS, ge=1, le=100_000)  # models (and lanes) labelled as themselves
    token: str | None = Field(None, min_length=16)  # set: scrapes must send `Authorization: Bearer <token>`


class MockConfig(Section):
    slow_latency_ms: int = Field(250, ge=0)


class Settings(Section):
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)
    api_key: str | None = None
    database_url: str | None = None
    public_url: str | None = None
    config_file: Path | None = None
    run_worker: bool = True  # False: `aistats serve --no-worker` (API only)
    blob_url: str | None = None  # None: local files under data_dir/blobs; "s3://bucket/prefix": S3-compatible
    redis_url: str | None = None  # shared rate limits, cross-process lifecycle events and cancel signals
    s3: S3Config = Field(default_factory=S3Config)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    node_id: str = "local"  # leases are owned by "<node_id>:<boot id>"; give each worker process its own
    shutdown_grace_seconds: float = Field(60.0, ge=0)  # SIGTERM: let in-flight requests finish this long
    failpoints: str | None = None  # AISTATS_FAILPOINTS, for durability tests only (see failpoints.py)
    sqlite_busy_timeout_ms: int = Field(30_000, ge=0)  # how long a writer waits for another process's lock
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    mock: MockConfig = Field(default_factory=MockConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    native: NativeConfig = Field(default_factory=NativeConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    webhooks: WebhookConfig = Field(default_factory=WebhookConfig)
    providers: list[ProviderConfig] = Field(default_factory=list)
    prices: list[dict[str, Any]] = Field(default_factory=list)  # [[prices]] entries override the shipped catalog

    @field_validator("data_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return database_url_for_sqlalchemy(self.database_url)
        return f"sqlite+aiosqlite:///{self.data_dir / 'gateway.db'}"

    @property
    def is_postgresql(self) -> bool:
        return self.sqlalchemy_url.startswith("postgresql")

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `environ` (default: the process environment) and the TOML file.

        Precedence, lowest first: the file, the environment, `overrides`; then the providers every gateway
        gets (mock, and those the provider variables imply) and the keys named by `api_key_env`.
        """
        env = dict(os.environ if environ is None else environ)
        raw: dict[str, Any] = {}
        config_path = env.get("AISTATS_CONFIG")
        if config_path:
            path = Path(config_path).expanduser()
            raw.update(_read_config_file(path, cls))
            raw["config_file"] = path
        _apply_env(raw, env)
        raw.update(overrides)
        raw["providers"] = _providers_with_env(raw.get("providers", []), env)
        try:
            settings = cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, cls, raw.get("config_file"))) from exc
        _check_urls(settings)
        names = [p.name for p in settings.providers]
        if len(names) != len(set(names)):
            raise ConfigError(f"provider names must be unique, got {names}")
        return settings


# Environment variables that set a top-level setting, and those that set a key of a section.
_ENV_SETTINGS = (
    ("AISTATS_DATA_DIR", "data_dir"),
    ("AISTATS_HOST", "host"),
    ("AISTATS_PORT", "port"),
    ("AISTATS_API_KEY", "api_key"),
    ("AISTATS_DATABASE_URL", "database_url"),
    ("AISTATS_PUBLIC_URL", "public_url"),
    ("AISTATS_NODE_ID", "node_id"),
    ("AISTATS_FAILPOINTS", "failpoints"),
    ("AISTATS_BLOB_URL", "blob_url"),
    ("AISTATS_REDIS_URL", "redis_url"),
)
_ENV_SECTION_SETTINGS = (
    ("AISTATS_CONCURRENCY", "executor", "concurrency"),
    ("AISTATS_LEASE_SECONDS", "executor", "lease_seconds"),
    ("AISTATS_S3_ENDPOINT_URL", "s3", "endpoint_url"),
    ("AISTATS_S3_REGION", "s3", "region"),
    ("AISTATS_S3_ACCESS_KEY_ID", "s3", "access_key_id"),
    ("AISTATS_S3_SECRET_ACCESS_KEY", "s3", "secret_access_key"),
    ("AISTATS_REDIS_PREFIX", "redis", "key_prefix"),
    ("AISTATS_METRICS_TOKEN", "metrics", "token"),
)


def _read_config_file(path: Path, model: type[BaseModel]) -> dict[str, Any]:
    """The raw settings of the TOML file at `path`, every way it can be wrong told as a ConfigError."""
    try:
        with path.open("rb") as fh:
            toml = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"AISTATS_CONFIG points at {path}, which does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    try:
        return config_file.from_toml(toml, model, str(path))
    except config_file.UnknownSetting as exc:
        raise ConfigError(str(exc)) from exc


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """Lay the AISTATS_* variables (set and non-empty) over the file's settings, and default data_dir to
    $XDG_DATA_HOME/aistats (~/.local/share/aistats) when neither names one."""
    for var, key in _ENV_SETTINGS:
        if env.get(var):
            raw[key] = env[var]
    for var, section, key in _ENV_SECTION_SETTINGS:
        if env.get(var):
            raw.setdefault(section, {})[key] = env[var]
    if "data_dir" not in raw:
        xdg = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "share")
        raw["data_dir"] = str(Path(xdg) / "aistats")


def _providers_with_env(configured: list[Any], env: Mapping[str, str]) -> list[dict[str, Any]]:
    """The configured providers as plain dicts, plus the ones the environment implies, each key named by its
    variable (`api_key_env`) read here, once, before validation."""
    providers = [p.model_dump(exclude_unset=True) if isinstance(p, BaseModel) else dict(p) for p in configured]
    _add_env_providers(providers, env)
    for entry in providers:
        if entry.get("api_key") is None and entry.get("api_key_env"):
            entry["api_key"] = env.get(str(entry["api_key_env"]))
    return providers


def _explain(exc: ValidationError, model: type[BaseModel], path: Path | None) -> str:
    """The first validation error as one sentence naming the key, its place in the file, and a close match."""
    first = exc.errors()[0]
    loc = [p for p in first["loc"] if isinstance(p, (int, str))]
    where = config_file.place(loc)
    source = f" in {path}" if path is not None else ""
    key = str(loc[-1]) if loc else "?"
    if first["type"] == "extra_forbidden":
        return (f"unknown setting '{key}' in {where}{source}"
                f"{config_file.hint(key, config_file.known_keys(model, loc))}")
    return f"invalid setting '{'.'.join(str(p) for p in loc)}' ({where}{source}): {first['msg']}"


def database_url_for_sqlalchemy(url: str) -> str:
    """`sqlite:///PATH` → aiosqlite; `postgresql://…` / `postgres://…` → asyncpg; explicit drivers kept."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///"):]
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+asyncpg://" + url[len(plain):]
    return url


def _check_urls(settings: Settings) -> None:
    """Refuse URLs the gateway cannot use, naming the setting (at start, not at the first request)."""
    if settings.database_url is not None:
        url = settings.sqlalchemy_url
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ConfigError(f"database_url (AISTATS_DATABASE_URL) must be sqlite:///PATH or "
                              f"postgresql://USER@HOST:PORT/DB, got {settings.database_url!r}")
    if settings.blob_url is not None:
        if not settings.blob_url.startswith("s3://") or not settings.blob_url[5:].split("/", 1)[0]:
            raise ConfigError(f"blob_url (AISTATS_BLOB_URL) must be s3://BUCKET[/PREFIX] (unset for local files), "
                              f"got {settings.blob_url!r}")
    if settings.redis_url is not None and not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"redis_url (AISTATS_REDIS_URL) must be redis://HOST:PORT[/DB], rediss://… or unix://PATH, "
                          f"got {settings.redis_url!r}")


def _add_env_providers(providers: list[Any], env: Mapping[str, str]) -> None:
    """The built-in `mock` provider always; `anthropic` (`claude-*`) when ANTHROPIC_API_KEY or
    ANTHROPIC_BASE_URL is set; `openai` (`*`, so after anthropic) when OPENAI_API_KEY or OPENAI_BASE_URL is."""
    names = {p.get("name") if isinstance(p, dict) else p.name for p in providers}
    if "mock" not in names:
        providers.append({"name": "mock", "kind": "mock", "models": ["mock/*"]})
    if "anthropic" not in names and (env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_BASE_URL")):
        providers.append(
            {
                "name": "anthropic",
                "kind": "anthropic",
                "base_url": env.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com",
                "api_key": env.get("ANTHROPIC_API_KEY"),
                "models": ["claude-*"],
            }
        )
    if "openai" not in names and (env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL")):
        providers.append(
            {
                "name": "openai",
                "kind": "openai",
                "base_url": env.get("OPENAI_BASE_URL"),  # none: the kind's default (providers/kinds.py)
                "api_key": env.get("OPENAI_API_KEY"),
                "models": ["*"],
            }
        )
