"""batches.cancelled_lines / expired_lines (issue 18, item 1)

OpenAI's `failed` count includes lines that never ran because the batch was cancelled or expired first; the
batch object now tells them apart (`request_counts.cancelled` / `expired`), from these counters, kept with the
others in the settle and fail-unfinished transactions. Existing batches are backfilled from their item rows
(which carry `batch_cancelled` / `batch_expired` error codes); batches whose rows retention already removed
keep 0.

Revision ID: 0013_not_run_lines
Revises: 0012_webhook_endpoints
Create Date: 2026-12-04 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_not_run_lines"
down_revision = "0012_webhook_endpoints"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch_op:
        batch_op.add_column(sa.Column("cancelled_lines", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("expired_lines", sa.Integer(), server_default="0", nullable=False))
    for column, code in (("cancelled_lines", "batch_cancelled"), ("expired_lines", "batch_expired")):
        op.execute(sa.text(
            f"UPDATE batches SET {column} = (SELECT COUNT(*) FROM items WHERE items.batch_id = batches.id "
            f"AND items.error_code = '{code}') WHERE status IN ('cancelled', 'expired', 'cancelling')"))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch_op:
        batch_op.drop_column("expired_lines")
        batch_op.drop_column("cancelled_lines")
