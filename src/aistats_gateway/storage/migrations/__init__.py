"""Alembic migrations; run at start by `aistats_gateway.storage.migrate`."""
