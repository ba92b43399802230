"""api_keys.kind (static / generated / created) and a longer api_keys.prefix (up to 32 characters)

Until now the static key (AISTATS_API_KEY) and the generated one were told apart from `keys create` keys
only by their label ("static", "generated"), so that is what the existing rows are classified by; a
key created by hand with the label "static" in the default workspace is taken for a static key (and
revoked at the next start whose AISTATS_API_KEY differs). Stored prefixes stay as they were (12
characters): the secrets are not stored, so they cannot be lengthened; `keys list` names such keys by id.

Revision ID: 0009_key_kind
Revises: 0008_retention
Create Date: 2026-12-02 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_key_kind"
down_revision = "0008_retention"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(16), server_default="created", nullable=False))
        batch_op.alter_column("prefix", existing_type=sa.String(16), type_=sa.String(32), existing_nullable=False)
    keys = sa.table("api_keys", sa.column("kind", sa.String), sa.column("name", sa.String),
                    sa.column("workspace_id", sa.String))
    for kind in ("static", "generated"):
        op.execute(keys.update().where(sa.and_(keys.c.name == kind, keys.c.workspace_id == "ws_default"))
                   .values(kind=kind))


def downgrade() -> None:
    op.execute("UPDATE api_keys SET prefix = substr(prefix, 1, 12)")  # what fits the narrower column
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.alter_column("prefix", existing_type=sa.String(32), type_=sa.String(16), existing_nullable=False)
        batch_op.drop_column("kind")
