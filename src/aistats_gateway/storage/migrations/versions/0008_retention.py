"""file retention (batches.output_expires_after, an index on files.expires_at for the expiry sweep) and
native jobs cut into parts (native_jobs.part, unique per batch/provider/model/part)

Revision ID: 0008_retention
Revises: 0007_body_refs
Create Date: 2026-11-29 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_retention"
down_revision = "0007_body_refs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch_op:
        batch_op.add_column(sa.Column("output_expires_after", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rows_purged_at", sa.BigInteger(), nullable=True))
    op.create_index("ix_files_expires_at", "files", ["expires_at"])
    with op.batch_alter_table("native_jobs") as batch_op:
        batch_op.add_column(sa.Column("part", sa.Integer(), server_default="0", nullable=False))
        batch_op.drop_constraint("uq_native_jobs_group", type_="unique")
        batch_op.create_unique_constraint("uq_native_jobs_part", ["batch_id", "provider", "model", "part"])


def downgrade() -> None:
    with op.batch_alter_table("native_jobs") as batch_op:
        batch_op.drop_constraint("uq_native_jobs_part", type_="unique")
        batch_op.create_unique_constraint("uq_native_jobs_group", ["batch_id", "provider", "model"])
        batch_op.drop_column("part")
    op.drop_index("ix_files_expires_at", table_name="files")
    with op.batch_alter_table("batches") as batch_op:
        batch_op.drop_column("rows_purged_at")
        batch_op.drop_column("output_expires_after")
