"""items point into the input file: items.body_offset / body_length, items.body nullable; files.status index

An item row either carries its request body (rows written before this revision, and rows a test or a
tool inserts with one) or the byte range of its raw line in the batch's input file, which the executor
reads back when it leases the item (storage/bodies.py). Existing rows keep their bodies unchanged.
`ix_files_status` finds input files whose deletion waits for their last unfinished batch.

On SQLite, making `body` nullable rebuilds the items table (Alembic's batch mode copies it once).

Revision ID: 0007_body_refs
Revises: 0006_native
Create Date: 2026-11-29 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_body_refs"
down_revision = "0006_native"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch_op:
        batch_op.add_column(sa.Column("body_offset", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("body_length", sa.Integer(), nullable=True))
        batch_op.alter_column("body", existing_type=sa.LargeBinary(), nullable=True)
    op.create_index("ix_files_status", "files", ["status"], unique=False)


def downgrade() -> None:
    # Rows that point into their input file have no body to restore: refuse rather than lose requests.
    pointing = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM items WHERE body IS NULL")).scalar()
    if pointing:
        raise RuntimeError(f"{pointing} item(s) keep their request in the input file (no body column value); "
                           "let their batches finish (or delete them) before downgrading below 0007")
    op.drop_index("ix_files_status", table_name="files")
    with op.batch_alter_table("items") as batch_op:
        batch_op.alter_column("body", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.drop_column("body_length")
        batch_op.drop_column("body_offset")
