"""What the engine needs from a database, and the table layout both backends share.

Tables, all in one database (or PostgreSQL schema):

- one per entity, named as the entity, one column per stored field, ``id`` the primary key;
- ``_evmflow_meta`` (key, value): format version, schema and config fingerprints, the last
  checkpoint id handed out, the entity tables this index owns;
- ``_evmflow_chains``: per chain, the highest block whose events are all committed and the
  number of events handled;
- ``_evmflow_addresses``: child contract addresses added by registration handlers;
- inside each chain's reorg window only: ``_evmflow_checkpoints`` (id, chain, block, block hash,
  events before the block) and per entity ``_evmflow_history_<Entity>``: the entity's version
  after each checkpoint that changed it (``deleted`` marks a delete), plus one baseline row at
  checkpoint 0 holding the version from before its first change in the window.

A commit writes entity upserts and deletes, chain progress and the checkpoint counter in one
transaction, so a reader or a restarted indexer sees every batch whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from ..errors import DatabaseMismatchError
from ..schema import EntitySpec, FieldSpec, SchemaSpec

FORMAT_VERSION = "1"
META_TABLE = "_evmflow_meta"
CHAINS_TABLE = "_evmflow_chains"
CHECKPOINTS_TABLE = "_evmflow_checkpoints"
REGISTRATIONS_TABLE = "_evmflow_addresses"


def history_table(entity: str) -> str:
    return quote("_evmflow_history_" + entity)


# Operators accepted by ``get_where``: keyword suffix -> SQL operator.
OPERATORS = {"eq": "=", "in": "IN", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def quote(name: str) -> str:
    """Quote an SQL identifier: entity and field names like ``from`` or ``user`` stay usable."""
    return '"' + name.replace('"', '""') + '"'


def schema_fingerprint(schema: SchemaSpec) -> str:
    """A hash of what decides the tables: entities, fields, types."""
    shape = {
        name: [(f.name, f.kind, f.type_name, f.required, f.is_list) for f in e.stored_fields]
        for name, e in sorted(schema.entities.items())
    }
    enums = {k: list(v) for k, v in sorted(schema.enums.items())}
    text = json.dumps([shape, enums], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(slots=True)
class ChainProgress:
    """A chain's committed position: every event of blocks <= ``block`` is applied."""

    block: int
    events: int = 0


@dataclass(slots=True, frozen=True)
class Checkpoint:
    """A (chain, block) inside the reorg window, with the hash it had when indexed."""

    id: int
    chain_id: int
    block: int
    block_hash: str
    events_before: int  # the chain's event count before this block


@dataclass(slots=True, frozen=True)
class Registration:
    """A child contract address added by a registration handler, from (block, log_index) on."""

    chain_id: int
    contract: str
    address: str
    block: int
    log_index: int
    checkpoint: int


@dataclass(slots=True)
class IndexState:
    """What a database holds when the indexer starts."""

    chains: dict[int, ChainProgress]
    last_checkpoint: int
    checkpoints: list[Checkpoint] = field(default_factory=list)
    registrations: list[Registration] = field(default_factory=list)


@dataclass(slots=True)
class RollbackResult:
    restored: int = 0  # entities given back an earlier version
    removed: int = 0  # entities that did not exist at the target


@dataclass(slots=True)
class Commit:
    """One transaction's worth of changes: the merge of one or more batches.

    ``changes[entity][id]`` is the row to store, or None to delete the entity.
    """

    changes: dict[str, dict[str, tuple | None]] = field(default_factory=dict)
    chains: dict[int, ChainProgress] = field(default_factory=dict)
    last_checkpoint: int = 0
    description: str = ""
    # Inside the reorg window: every version by (id, checkpoint), the checkpoints' blocks,
    # and per chain the block at and below which history is no longer needed.
    history: dict[str, dict[tuple[str, int], tuple | None]] = field(default_factory=dict)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    window_floor: dict[int, int] = field(default_factory=dict)
    registrations: list[Registration] = field(default_factory=list)

    @property
    def in_window(self) -> bool:
        return bool(self.checkpoints)

    def merge(self, later: Commit) -> None:
        for entity, versions in later.history.items():
            self.history.setdefault(entity, {}).update(versions)
        self.checkpoints += later.checkpoints
        self.window_floor.update(later.window_floor)
        self.registrations += later.registrations
        for entity, rows in later.changes.items():
            mine = self.changes.get(entity)
            if mine is None:
                self.changes[entity] = dict(rows)
            else:
                mine.update(rows)
        self.chains.update(later.chains)
        self.last_checkpoint = max(self.last_checkpoint, later.last_checkpoint)
        self.description = _join_descriptions(self.description, later.description)

    @property
    def row_count(self) -> int:
        return sum(len(rows) for rows in self.changes.values())


def _join_descriptions(first: str, second: str) -> str:
    if not first:
        return second
    if not second:
        return first
    return f"{first}; {second}"


@dataclass
class EntityLayout:
    """How an entity's rows map to its table."""

    spec: EntitySpec
    table: str
    columns: list[str]
    fields: list[FieldSpec]

    @classmethod
    def of(cls, spec: EntitySpec) -> EntityLayout:
        stored = spec.stored_fields
        return cls(spec, quote(spec.name), [quote(f.name) for f in stored], stored)

    def index_of(self, field_name: str) -> int:
        for i, f in enumerate(self.fields):
            if f.name == field_name:
                return i
        raise KeyError(field_name)


def mismatch_error(what: str, stored: str, current: str, where: str) -> DatabaseMismatchError:
    return DatabaseMismatchError(
        f"the database at {where} holds an index made for another {what} "
        f"(stored {stored}, this project {current})",
        hint="start over with 'evmflow run --reset' (drops the indexed data), "
        "or point --db at another database",
    )


class Storage(ABC):
    """A database that holds an index. One writer connection, one reader connection."""

    url_for_humans: str = ""

    def __init__(self, schema: SchemaSpec) -> None:
        self.schema = schema
        self.layouts = {name: EntityLayout.of(spec) for name, spec in schema.entities.items()}

    def _check_meta(self, meta: dict[str, str], config_fingerprint: str) -> None:
        if not meta:
            return
        if meta.get("version") != FORMAT_VERSION:
            raise mismatch_error(
                "evmflow version", str(meta.get("version")), FORMAT_VERSION, self.url_for_humans
            )
        current = schema_fingerprint(self.schema)
        if meta.get("schema") != current:
            raise mismatch_error("schema", str(meta.get("schema")), current, self.url_for_humans)
        if meta.get("config") != config_fingerprint:
            raise mismatch_error(
                "set of chains and contracts",
                str(meta.get("config")),
                config_fingerprint,
                self.url_for_humans,
            )
        # Raises when the stored index was made for another schema or contract set.

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def lock(self) -> None:
        """Claim the index for this process until close(); IndexBusyError if another has it."""

    @abstractmethod
    async def prepare(
        self, config_fingerprint: str, chain_starts: dict[int, int], reset: bool = False
    ) -> IndexState:
        """Create or check the tables, and return the committed state."""

    @abstractmethod
    async def load_by_ids(self, entity: str, ids: list[str]) -> list[tuple]:
        """Rows of ``entity`` whose id is in ``ids`` (missing ids are simply absent)."""

    @abstractmethod
    async def load_where(self, entity: str, field_name: str, op: str, value: Any) -> list[tuple]:
        """Rows where ``field op value``; for ``in``, ``value`` is a list."""

    @abstractmethod
    async def commit(self, commit: Commit) -> None:
        """Write one commit in one transaction."""

    @abstractmethod
    async def rollback(
        self, target_checkpoint: int, chains: dict[int, ChainProgress]
    ) -> RollbackResult:
        """Undo every change after ``target_checkpoint`` and set chain progress, in one
        transaction."""

    @abstractmethod
    async def count_history(self) -> int:
        """History rows stored, over every entity (for tests and benchmarks)."""

    @abstractmethod
    async def read_table(self, entity: str) -> list[tuple]:
        """Every row of an entity's table, ordered by id (for tests and tools)."""

    @abstractmethod
    async def read_progress(self) -> dict[int, ChainProgress]:
        """The committed progress of every chain, read fresh from the database."""


def open_storage(url: str, schema: SchemaSpec) -> Storage:
    """A storage for ``sqlite:///path`` or ``postgresql://...``."""
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStorage

        return PostgresStorage(url, schema)
    if url.startswith("sqlite://"):
        from .sqlite import SqliteStorage

        # sqlite:///relative.db and sqlite:////absolute/path.db, as SQLAlchemy spells them.
        return SqliteStorage(url.removeprefix("sqlite:///") or ":memory:", schema)
    from ..errors import ConfigError

    raise ConfigError(
        f"unsupported database URL {url!r}",
        hint="use sqlite:///path/to/file.db or postgresql://user@host:port/dbname",
    )
