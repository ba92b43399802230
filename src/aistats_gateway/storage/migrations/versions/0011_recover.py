"""Recover (issue 17): retry chains, the error summary, idempotency keys

* batches.parent_batch_id / root_batch_id: a retry batch re-runs lines of its parent; the chain is read by root.
* batch_errors: per batch, failed lines counted by (code, upstream status) as they settle, with one example.
  Batches that ended before this revision have no rows (their error files still hold every line).
* idempotency_keys: one row per (workspace, Idempotency-Key), written with the object it created.

Revision ID: 0011_recover
Revises: 0010_usage_details
Create Date: 2026-12-04 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_recover"
down_revision = "0010_usage_details"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch_op:
        batch_op.add_column(sa.Column("parent_batch_id", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("root_batch_id", sa.String(64), nullable=True))
        batch_op.create_index("ix_batches_parent", ["parent_batch_id"])
        batch_op.create_index("ix_batches_root", ["root_batch_id"])
    op.create_table(
        "batch_errors",
        sa.Column("batch_id", sa.String(64), sa.ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("code", sa.String(64), primary_key=True),
        sa.Column("status_code", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("example_custom_id", sa.String(512), nullable=False),
        sa.Column("example_message", sa.Text(), nullable=False),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("object_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_table("batch_errors")
    with op.batch_alter_table("batches") as batch_op:
        batch_op.drop_index("ix_batches_root")
        batch_op.drop_index("ix_batches_parent")
        batch_op.drop_column("root_batch_id")
        batch_op.drop_column("parent_batch_id")
