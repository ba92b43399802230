"""batches.cached_tokens and batches.reasoning_tokens: the usage details the batch object reports

Summed from the lines' upstream `usage` as they settle (cache reads: `*_tokens_details.cached_tokens` or
Anthropic's `cache_read_input_tokens`; `*_tokens_details.reasoning_tokens`), so `usage.input_tokens_details` and
`usage.output_tokens_details` carry real figures instead of zeros. Existing batches start at 0: their lines'
answers are in the output files, not re-read here.

Revision ID: 0010_usage_details
Revises: 0009_key_kind
Create Date: 2026-12-03 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_usage_details"
down_revision = "0009_key_kind"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch_op:
        batch_op.add_column(sa.Column("cached_tokens", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("reasoning_tokens", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch_op:
        batch_op.drop_column("reasoning_tokens")
        batch_op.drop_column("cached_tokens")
