"""The relational schema, as SQLAlchemy Core tables; Alembic migrations create exactly these.

Portable types only (no SQLite-isms): the same tables run on PostgreSQL. Times are Unix seconds;
batch/file timestamps are integers as on the wire, lease expiry a float.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

KEY_STATIC = "static"
KEY_GENERATED = "generated"
KEY_CREATED = "created"

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id"), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(32), nullable=False),  # shown to tell keys apart; never enough to use one
    Column("name", String(200), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    # KEY_STATIC (AISTATS_API_KEY: revoked at start once the setting names another), KEY_GENERATED (printed
    # at a first start without one) or KEY_CREATED (`aistats keys create`: only ever revoked by hand)
    Column("kind", String(16), nullable=False, server_default="created"),
)

files = Table(
    "files",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id"), nullable=False),
    Column("filename", String(1024), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    # "processed"; or FILE_DELETED: deleted by its owner (invisible to the API) while an unfinished batch still
    # reads it — the row and its blob go when the last such batch is terminal (Files.purgeable).
    Column("status", String(32), nullable=False),
    Column("blob_key", String(1024), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Index("ix_files_workspace_id", "workspace_id", "id"),
    Index("ix_files_expires_at", "expires_at"),  # the retention sweep (0008)
    Index("ix_files_status", "status"),
)
FILE_DELETED = "deleted"

batches = Table(
    "batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id"), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("endpoint_input", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("input_file_id", String(64), nullable=False),
    Column("output_file_id", String(64), nullable=True),
    Column("error_file_id", String(64), nullable=True),
    Column("completion_window", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("in_progress_at", BigInteger, nullable=True),
    Column("finalizing_at", BigInteger, nullable=True),
    Column("completed_at", BigInteger, nullable=True),
    Column("failed_at", BigInteger, nullable=True),
    Column("expired_at", BigInteger, nullable=True),
    Column("cancelling_at", BigInteger, nullable=True),
    Column("cancelled_at", BigInteger, nullable=True),
    Column("total", Integer, nullable=False, default=0),
    Column("completed", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("cached_tokens", BigInteger, nullable=False, default=0, server_default="0"),  # cache reads (0010)
    Column("reasoning_tokens", BigInteger, nullable=False, default=0, server_default="0"),
    # Of `failed`: lines settled unsent because the batch was cancelled / expired (0013), kept with the counters
    Column("cancelled_lines", Integer, nullable=False, default=0, server_default="0"),
    Column("expired_lines", Integer, nullable=False, default=0, server_default="0"),
    Column("metadata", JSON, nullable=True),
    Column("session_id", String(256), nullable=True),
    Column("webhook", JSON, nullable=True),
    Column("provider_prefs", JSON, nullable=True),
    Column("model", String(256), nullable=True),
    Column("provider", String(128), nullable=True),
    Column("errors", JSON, nullable=True),
    Column("status_reason", Text, nullable=True),
    Column("updated_at", Float, nullable=False),
    # Grows by one per settled item (never decreases): the source of items.seq, the results cursor.
    Column("settled_seq", BigInteger, nullable=False, server_default="0"),
    # Billing: the estimate and hold taken at create, the settlement written with the terminal status.
    Column("estimated_nanos", BigInteger, nullable=False, server_default="0"),
    Column("reserved_nanos", BigInteger, nullable=False, server_default="0"),
    Column("reservation_id", String(64), nullable=True),
    Column("reservation_status", String(16), nullable=True),
    Column("cost_nanos", BigInteger, nullable=True),
    Column("billing_reason", String(64), nullable=True),
    Column("billed_at", BigInteger, nullable=True),
    # Execution mode (0006, issue #7): "managed" | "native", or "auto" until validation resolves it; NULL on
    # batches created before it existed (managed). `native_batch_id`: the (first) provider batch of a native one.
    Column("execution", String(16), nullable=True),
    Column("native_batch_id", String(128), nullable=True),
    # OpenAI's `output_expires_after` (0008): seconds the output and error files live after they are written.
    Column("output_expires_after", Integer, nullable=True),
    # When the retention sweep deleted its per-line rows (items, request log) (0008); NULL: still there.
    Column("rows_purged_at", BigInteger, nullable=True),
    # Retries (0011, issue 17): the batch this one re-runs lines of, and the first batch of that chain (NULL on
    # a batch that is no retry): a chain is read by root_batch_id, a batch's `retries` by parent_batch_id.
    Column("parent_batch_id", String(64), nullable=True),
    Column("root_batch_id", String(64), nullable=True),
    Index("ix_batches_workspace_id", "workspace_id", "id"),
    Index("ix_batches_status", "status"),
    Index("ix_batches_parent", "parent_batch_id"),
    Index("ix_batches_root", "root_batch_id"),
)

# Item status values (small ints keep the hot index narrow).
ITEM_PENDING = 0
ITEM_LEASED = 1
ITEM_SUCCEEDED = 2
ITEM_FAILED = 3

items = Table(
    "items",
    metadata,
    Column("batch_id", String(64), ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True),
    Column("line", Integer, primary_key=True, autoincrement=False),
    Column("custom_id", String(512), nullable=False),
    Column("model", String(256), nullable=False),
    Column("provider", String(128), nullable=False),
    # The request body: stored in the row (rows from before 0007), or NULL with the byte range of the item's raw
    # line in the batch's input file (body_offset, body_length), read back at lease time (storage/bodies.py).
    Column("body", LargeBinary, nullable=True),
    Column("status", SmallInteger, nullable=False, default=ITEM_PENDING),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("result", LargeBinary, nullable=True),
    # A failed line's code (domain.failures: batch_cancelled / batch_expired never sent, upstream_<kind> without an
    # answer, the answer's own error code otherwise); set at settle since 0013, by fail_unfinished before
    Column("error_code", String(64), nullable=True),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("settled_at", Float, nullable=True),
    Column("seq", BigInteger, nullable=True),  # settle order within the batch, for GET .../results
    Column("body_offset", BigInteger, nullable=True),
    Column("body_length", Integer, nullable=True),
    Index("ix_items_batch_status", "batch_id", "status", "line"),
    Index("ix_items_batch_seq", "batch_id", "seq"),
    Index("ix_items_batch_custom_id", "batch_id", "custom_id"),
)
# What leasing returns, in records.ItemRecord's field order (item_record reads them by position).
LEASED_COLUMNS = (items.c.batch_id, items.c.line, items.c.custom_id, items.c.model, items.c.provider, items.c.body,
                  items.c.attempts, items.c.body_offset, items.c.body_length)

# The durable webhook outbox: one row per (batch, delivery key), written in the same transaction as the
# change that causes it; and one row per delivery attempt (the batch object shows the last ten).
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("batch_id", String(64), ForeignKey("batches.id", ondelete="CASCADE"), nullable=False),
    Column("workspace_id", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("delivery_key", String(128), nullable=False),
    Column("snapshot", JSON, nullable=False),
    Column("status", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("delivered_at", BigInteger, nullable=True),
    Column("last_response_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("claimed_by", String(128), nullable=True),  # the process sending it now (its lease owner id)
    UniqueConstraint("batch_id", "delivery_key", name="uq_webhook_events_batch_key"),
    Index("ix_webhook_events_due", "status", "next_attempt_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("event_id", String(64), ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False),
    Column("batch_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", String(32), nullable=False),
    Column("tried_at", BigInteger, nullable=False),
    Column("next_retry_at", BigInteger, nullable=True),
    Column("response_status", Integer, nullable=True),
    Column("response_body_preview", Text, nullable=True),
    Column("error_message", Text, nullable=True),
    Column("duration_ms", Integer, nullable=True),
    Index("ix_webhook_attempts_batch", "batch_id", "id"),
)

# Registered webhook endpoints (0012): a batch may name one (`webhook_endpoint_id`) instead of an inline URL and
# secret; deliveries read its URL, status and secrets when they are sent. After a rotation the previous secret
# still signs deliveries until `previous_secret_until`, so receivers can roll over.
WEBHOOK_ENDPOINT_DELETED = "deleted"
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id"), nullable=False),
    Column("name", String(120), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("status", String(16), nullable=False),  # active | disabled | deleted
    Column("events", JSON, nullable=False),
    Column("secret", String(128), nullable=False),
    Column("previous_secret", String(128), nullable=True),
    Column("previous_secret_until", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("deleted_at", BigInteger, nullable=True),
    Index("ix_webhook_endpoints_workspace", "workspace_id", "id"),
)

# One row per upstream attempt (the request log): what was sent where, how it went, what it cost.
request_log = Table(
    "request_log",
    metadata,
    Column("id", String(64), primary_key=True),  # the gateway request id (G-…) of the attempt
    Column("workspace_id", String(64), nullable=False),
    Column("batch_id", String(64), nullable=False),
    Column("session_id", String(256), nullable=True),
    Column("custom_id", String(512), nullable=False),
    Column("line", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("provider", String(128), nullable=False),
    Column("model", String(256), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error_code", String(64), nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("cost_nanos", BigInteger, nullable=True),
    Column("created_at", Float, nullable=False),
    Index("ix_request_log_batch", "batch_id", "id"),  # lookups by id use the primary key, then check workspace
    Index("ix_request_log_batch_line", "batch_id", "line"),  # a page of rows: their attempts (0012)
)

# Workspace credit: NULL balance means unlimited. `held_nanos` is the sum of open batch reservations.
credits = Table(
    "credits",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("balance_nanos", BigInteger, nullable=True),
    Column("held_nanos", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", Float, nullable=False),
)

# The audit trail of every credit movement (grant, hold, release, charge).
credit_entries = Table(
    "credit_entries",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("batch_id", String(64), nullable=True),
    Column("kind", String(16), nullable=False),
    Column("amount_nanos", BigInteger, nullable=False),
    Column("note", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Index("ix_credit_entries_workspace", "workspace_id", "id"),
)

# Aggregated usage per pricing line of a batch, kept up to date in each settle transaction.
batch_pricing = Table(
    "batch_pricing",
    metadata,
    Column("batch_id", String(64), ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True),
    Column("provider", String(128), primary_key=True),
    Column("model", String(256), primary_key=True),
    Column("plan", String(32), primary_key=True),
    Column("meter", String(64), primary_key=True),
    Column("unit_price_nanos", BigInteger, primary_key=True, autoincrement=False),
    Column("unit_size", BigInteger, nullable=False),
    Column("quantity", BigInteger, nullable=False),
)

# Native execution (issue #7): one provider batch per (batch, provider[, model]) — the job row is written (with
# its idempotency key) BEFORE the provider is called, and the provider's batch id right after it answers, so a
# crash at any point leaves enough to reattach (by native_batch_id) or reconcile (by listing the provider).
native_jobs = Table(
    "native_jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("batch_id", String(64), ForeignKey("batches.id", ondelete="CASCADE"), nullable=False),
    Column("provider", String(128), nullable=False),
    Column("model", String(256), nullable=False),  # OpenAI batches take one model each; "*": any model
    Column("kind", String(16), nullable=False),  # openai | anthropic
    Column("state", String(16), nullable=False),  # creating | running | collecting | done
    Column("idempotency_key", String(64), nullable=False),
    Column("id_scheme", String(16), nullable=False),  # verbatim | job | line: the custom_ids sent (native_settle.py)
    Column("lines", Integer, nullable=False),
    Column("input_key", String(1024), nullable=True),  # the provider input, built once into our blob store
    Column("provider_file_id", String(128), nullable=True),
    Column("native_batch_id", String(128), nullable=True),
    Column("provider_status", String(32), nullable=True),
    Column("request_counts", JSON, nullable=True),
    Column("result_keys", JSON, nullable=True),  # downloaded result files in our blob store
    Column("create_attempts", Integer, nullable=False, server_default="0"),
    Column("create_attempted_at", Float, nullable=True),
    Column("cancel_sent_at", Float, nullable=True),
    Column("last_polled_at", Float, nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # A group too big for one provider batch is cut into parts 0, 1, … (0008).
    Column("part", Integer, nullable=False, server_default="0"),
    UniqueConstraint("batch_id", "provider", "model", "part", name="uq_native_jobs_part"),
    Index("ix_native_jobs_batch", "batch_id"),
)

# The error summary of a batch (0011): one row per (code, upstream status) among its failed lines, counted in
# the settle transaction that fails them (storage/error_summary.py), so the batch object shows it without
# reading the error file. status_code 0: the line failed without an upstream answer (cancelled, expired, …).
batch_errors = Table(
    "batch_errors",
    metadata,
    Column("batch_id", String(64), ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True),
    Column("code", String(64), primary_key=True),
    Column("status_code", Integer, primary_key=True, autoincrement=False),
    Column("count", BigInteger, nullable=False),
    Column("example_custom_id", String(512), nullable=False),
    Column("example_message", Text, nullable=False),
)

# Idempotency keys (0011): the first create with a key inserts this row in the SAME transaction as the object
# it creates, so racing requests with one key make one object (the loser's insert conflicts, and it answers
# the winner's object). `fingerprint`: the route and body the key was first used with (domain/idempotency.py).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # batch | file
    Column("object_id", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_idempotency_keys_created_at", "created_at"),
)
