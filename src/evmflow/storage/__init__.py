"""Storage backends: SQLite (embedded default) and PostgreSQL."""

from .base import ChainProgress, Commit, IndexState, Storage, open_storage

__all__ = ["ChainProgress", "Commit", "IndexState", "Storage", "open_storage"]
