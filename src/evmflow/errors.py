"""Exceptions raised by evmflow.

Every fault a user can cause has its own type, and its message says where the fault is (file,
line, key or field), what is wrong and how to fix it::

    EvmflowError
    ├── UserError                 a mistake in the project the user wrote
    │   ├── ConfigError           evmflow.yaml: syntax, unknown key, wrong type, missing file
    │   ├── AbiError              an ABI file or event signature that cannot be used
    │   ├── SchemaError           schema.graphql: syntax or unsupported construct
    │   ├── HandlerError          a handler module that fails to load or registers wrongly
    │   ├── EntityError           a wrong value given to an entity field
    │   ├── DatabaseMismatchError the database was made for another schema or contract set
    │   ├── DatabaseUnavailable   the database cannot be reached or opened
    │   └── IndexBusyError        another evmflow process is indexing into the same database
    ├── HandlerFailed             a handler raised while processing an event
    ├── SourceError               a data source failed for good (after retries)
    └── WriterError               a commit failed; nothing of it was stored
"""

from __future__ import annotations

from pathlib import Path


class EvmflowError(Exception):
    """Base class of every error evmflow raises on purpose."""


class UserError(EvmflowError):
    """A fault in the project the user wrote: the message tells how to fix it."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        where: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.where = where
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        location = ""
        if self.file:
            location = self.file
            if self.line is not None:
                location += f":{self.line}"
        parts = []
        if location:
            parts.append(location)
        if self.where:
            parts.append(self.where)
        text = ": ".join(parts + [self.message]) if parts else self.message
        if self.hint:
            text += f"\n  fix: {self.hint}"
        return text


class ConfigError(UserError):
    """evmflow.yaml cannot be used."""


class AbiError(UserError):
    """An ABI file or event signature cannot be used."""


class SchemaError(UserError):
    """schema.graphql cannot be used."""


class HandlerError(UserError):
    """A handler module fails to load or registers a handler wrongly."""


class EntityError(UserError):
    """A value does not fit an entity field."""


class DatabaseMismatchError(UserError):
    """The database holds an index of another schema or contract set."""


class DatabaseUnavailable(UserError):
    """The database cannot be reached or opened."""


class IndexBusyError(UserError):
    """Another evmflow process is indexing into the same database."""


class HandlerFailed(EvmflowError):
    """A handler raised while processing an event; the batch is not committed."""


class SourceError(EvmflowError):
    """A data source failed for good, after its retries."""


class WriterError(EvmflowError):
    """A commit failed. Nothing of the failed commit was stored."""
