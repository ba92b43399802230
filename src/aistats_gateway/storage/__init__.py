"""Durable state (Store over SQLAlchemy Core) and file bytes (BlobStore)."""
