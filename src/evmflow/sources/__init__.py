"""Data sources: where logs and block headers come from."""

from .base import BlockHeader, Log, LogFilter, Page, Source

__all__ = ["BlockHeader", "Log", "LogFilter", "Page", "Source"]
