"""webhook_endpoints, and request_log rows findable by (batch, line)

Registered webhook endpoints (`/v1/webhook-endpoints`): URL, events, status (active, disabled, deleted: a soft
delete) and the signing secret, with the previous secret and until when it still signs after a rotation. The
request-log index on (batch_id, line) serves a page of `GET /v1/batches/{id}/requests` rows their attempts.

Revision ID: 0012_webhook_endpoints
Revises: 0011_recover
Create Date: 2026-12-04 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_webhook_endpoints"
down_revision = "0011_recover"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("previous_secret", sa.String(length=128), nullable=True),
        sa.Column("previous_secret_until", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("webhook_endpoints") as batch_op:
        batch_op.create_index("ix_webhook_endpoints_workspace", ["workspace_id", "id"], unique=False)
    with op.batch_alter_table("request_log") as batch_op:
        batch_op.create_index("ix_request_log_batch_line", ["batch_id", "line"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("request_log") as batch_op:
        batch_op.drop_index("ix_request_log_batch_line")
    with op.batch_alter_table("webhook_endpoints") as batch_op:
        batch_op.drop_index("ix_webhook_endpoints_workspace")
    op.drop_table("webhook_endpoints")
