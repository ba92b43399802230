"""native provider batches: batches.execution / native_batch_id and the native_jobs table

Revision ID: 0006_native
Revises: 0005
Create Date: 2026-11-30 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_native"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch_op:
        batch_op.add_column(sa.Column("execution", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("native_batch_id", sa.String(length=128), nullable=True))
    op.create_table(
        "native_jobs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("id_scheme", sa.String(length=16), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("input_key", sa.String(length=1024), nullable=True),
        sa.Column("provider_file_id", sa.String(length=128), nullable=True),
        sa.Column("native_batch_id", sa.String(length=128), nullable=True),
        sa.Column("provider_status", sa.String(length=32), nullable=True),
        sa.Column("request_counts", sa.JSON(), nullable=True),
        sa.Column("result_keys", sa.JSON(), nullable=True),
        sa.Column("create_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("create_attempted_at", sa.Float(), nullable=True),
        sa.Column("cancel_sent_at", sa.Float(), nullable=True),
        sa.Column("last_polled_at", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_id", "provider", "model", name="uq_native_jobs_group"),
    )
    op.create_index("ix_native_jobs_batch", "native_jobs", ["batch_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_native_jobs_batch", table_name="native_jobs")
    op.drop_table("native_jobs")
    with op.batch_alter_table("batches") as batch_op:
        batch_op.drop_column("native_batch_id")
        batch_op.drop_column("execution")
