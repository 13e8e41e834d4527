"""What the engine needs from a database, and the table layout both backends share.

Tables, all in one database (or PostgreSQL schema):

- one per entity, named as the entity, one column per stored field, ``id`` the primary key;
- ``_evmflow_meta`` (key, value): format version, schema and config fingerprints and the JSON
  texts they hash (see ``Mismatch``), the last checkpoint id handed out, the entity tables this
  index owns, each chain's start block;
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
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import DatabaseMismatchError
from ..schema import EntitySpec, FieldSpec, SchemaSpec

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"
META_TABLE = "_evmflow_meta"
CHAINS_TABLE = "_evmflow_chains"
CHECKPOINTS_TABLE = "_evmflow_checkpoints"
REGISTRATIONS_TABLE = "_evmflow_addresses"
HISTORY_PREFIX = "_evmflow_history_"


def history_table(entity: str) -> str:
    return quote(HISTORY_PREFIX + entity)


# Operators accepted by ``get_where``: keyword suffix -> SQL operator.
OPERATORS = {"eq": "=", "in": "IN", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def quote(name: str) -> str:
    """Quote an SQL identifier: entity and field names like ``from`` or ``user`` stay usable."""
    return '"' + name.replace('"', '""') + '"'


def schema_identity(schema: SchemaSpec) -> str:
    """What decides the tables, as JSON text: per entity its stored fields (name, kind, type,
    required, list), and the enums."""
    shape = {
        name: [(f.name, f.kind, f.type_name, f.required, f.is_list) for f in e.stored_fields]
        for name, e in sorted(schema.entities.items())
    }
    enums = {k: list(v) for k, v in sorted(schema.enums.items())}
    return json.dumps([shape, enums], sort_keys=True)


def schema_fingerprint(schema: SchemaSpec) -> str:
    """A hash of what decides the tables: entities, fields, types."""
    return hashlib.sha256(schema_identity(schema).encode()).hexdigest()[:16]


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


# Differences listed in a mismatch message; the rest are counted.
MAX_CHANGES = 5

# A readable form of an identity text: "entity Account" -> {"field balance": "BigInt!"}. A
# member whose value is None is a plain set member ("address 0x..."), shown without a value.
Described = dict[str, dict[str, Any]]


@dataclass
class Mismatch:
    """A stored index made for another schema or config.

    Meta keeps, beside each fingerprint, the JSON text it hashes (its identity), so a mismatch
    can say what changed. An identity is used only when it hashes to the fingerprint stored
    with it: databases written before identities were stored, or by code that left a stale one,
    get the fingerprints alone.
    """

    what: str  # "schema", "set of chains and contracts"
    stored: str  # fingerprints
    current: str
    changes: list[str]  # empty when the stored identity is missing

    def listed(self) -> str:
        """The changes, the first MAX_CHANGES of them named."""
        text = "; ".join(self.changes[:MAX_CHANGES])
        if len(self.changes) > MAX_CHANGES:
            text += f"; and {len(self.changes) - MAX_CHANGES} more"
        return text

    def error(self, where: str) -> DatabaseMismatchError:
        if self.changes:
            detail = f"changed since: {self.listed()}"
        else:
            detail = f"stored {self.stored}, this project {self.current}"
        return DatabaseMismatchError(
            f"the database at {where} holds an index made for another {self.what} ({detail})",
            hint="start over with 'evmflow run --reset' (drops the indexed data), "
            "or point --db at another database",
        )


def identifies(identity: str | None, fingerprint: str | None) -> bool:
    """Whether ``identity`` is the text whose SHA-256 is ``fingerprint`` (the schema's
    fingerprint keeps the first 16 hex digits, the config's all 64)."""
    if not identity or not fingerprint:
        return False
    return hashlib.sha256(identity.encode()).hexdigest().startswith(fingerprint)


def changes_between(stored: Described, current: Described) -> list[str]:
    """What ``current`` adds, removes and changes against ``stored``, one line each."""
    changes = []
    for thing in [*stored, *(t for t in current if t not in stored)]:
        if thing not in current:
            changes.append(f"{thing} removed")
        elif thing not in stored:
            changes.append(f"{thing} added")
        else:
            before, after = stored[thing], current[thing]
            for member in [*before, *(m for m in after if m not in before)]:
                if member not in after:
                    changes.append(f"{thing}: {_member(member, before[member])} removed")
                elif member not in before:
                    changes.append(f"{thing}: {_member(member, after[member])} added")
                elif before[member] != after[member]:
                    changes.append(
                        f"{thing}: {member} changed from {_value(before[member])} "
                        f"to {_value(after[member])}"
                    )
    return changes


def _member(name: str, value: Any) -> str:
    return name if value is None else f"{name} ({_value(value)})"


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def describe_schema(identity: str) -> Described:
    """A ``schema_identity`` text as entities with their fields' types, and enums."""
    shape, enums = json.loads(identity)
    described: Described = {}
    for entity, fields in shape.items():
        described[f"entity {entity}"] = {
            f"field {name}": ("[" + type_name + "]" if is_list else type_name)
            + ("!" if required else "")
            for name, _kind, type_name, required, is_list in fields
        }
    for enum, values in enums.items():
        described[f"enum {enum}"] = {f"value {v}": None for v in values}
    return described


def describe_config(identity: str) -> Described:
    """The text ``ProjectConfig.fingerprint`` hashes, as chains, contracts and block
    handlers with what the index depends on."""
    config = json.loads(identity)
    described: Described = {}
    for chain_id, start in config["chains"]:
        described[f"chain {chain_id}"] = {"start block": start}
    for contract in config["contracts"]:
        members: dict[str, Any] = {f"address {a}": None for a in contract["addresses"]}
        members |= {f"event {e}": None for e in contract["events"]}
        members |= {f"chain {c}": None for c in contract["chains"]}
        members["start block"] = contract["start_block"]
        members["registered"] = contract["registered"]
        for signature, start, topics in contract["options"]:
            members[f"event {signature} start block"] = start
            members[f"event {signature} where"] = json.dumps(topics)
        described[f"contract {contract['name']}"] = members
    for name, every, chains, start, end in config["blocks"]:
        members = {"every": every, "start block": start, "end block": end}
        members |= {f"chain {c}": None for c in chains}
        described[f"block handler {name}"] = members
    return described


def _changes(
    describe: Callable[[str], Described],
    stored_identity: str | None,
    stored: str,
    current_identity: str | None,
) -> list[str]:
    if stored_identity is None or current_identity is None:
        return []
    if not identifies(stored_identity, stored):
        return []
    try:
        return changes_between(describe(stored_identity), describe(current_identity))
    except (ValueError, KeyError, TypeError):
        return []  # an identity of a layout this code does not know: fingerprints only


def tables_of_work(meta: dict[str, str]) -> list[str]:
    """The tables (unquoted names) that hold rows once anything was committed."""
    entities = json.loads(meta.get("tables", "[]"))
    history = [HISTORY_PREFIX + e for e in entities]
    return [*entities, *history, CHECKPOINTS_TABLE, REGISTRATIONS_TABLE]


def holds_work(
    meta: dict[str, str],
    chain_starts: dict[int, int],
    progress: dict[int, ChainProgress],
    holds_rows: bool,
) -> bool:
    """Whether an index holds anything committed: a checkpoint handed out, a row in any of its
    tables, or a chain past the block before its start (``chain_starts`` stands in for the
    start blocks of databases that did not store theirs)."""
    if holds_rows or int(meta.get("last_checkpoint", "0")) != 0:
        return True
    starts = {int(k): v for k, v in json.loads(meta.get("chain_starts", "{}")).items()}
    for chain_id, p in progress.items():
        start = starts.get(chain_id, chain_starts.get(chain_id))
        if start is None or p.events != 0 or p.block != start - 1:
            return True
    return False


class Storage(ABC):
    """A database that holds an index. One writer connection, one reader connection."""

    url_for_humans: str = ""

    def __init__(self, schema: SchemaSpec) -> None:
        self.schema = schema
        self.layouts = {name: EntityLayout.of(spec) for name, spec in schema.entities.items()}

    def _mismatch(
        self, meta: dict[str, str], config_fingerprint: str, config_identity: str | None
    ) -> Mismatch | None:
        """How the stored index differs from this project, None when it fits. Raises for an
        index of another storage format, which no code of this version can read."""
        if not meta:
            return None
        if meta.get("version") != FORMAT_VERSION:
            raise Mismatch("evmflow version", str(meta.get("version")), FORMAT_VERSION, []).error(
                self.url_for_humans
            )
        stored, current = meta.get("schema", ""), schema_fingerprint(self.schema)
        if stored != current:
            identity = schema_identity(self.schema)
            changes = _changes(describe_schema, meta.get("schema_identity"), stored, identity)
            return Mismatch("schema", stored, current, changes)
        stored = meta.get("config", "")
        if stored != config_fingerprint:
            if not identifies(config_identity, config_fingerprint):
                config_identity = None
            changes = _changes(
                describe_config, meta.get("config_identity"), stored, config_identity
            )
            return Mismatch("set of chains and contracts", stored, config_fingerprint, changes)
        return None

    def _meta_values(
        self,
        meta: dict[str, str],
        config_fingerprint: str,
        config_identity: str | None,
        chain_starts: dict[int, int],
    ) -> dict[str, str]:
        """What prepare() writes to meta; ``chain_starts`` are the chains it just added."""
        starts = json.loads(meta.get("chain_starts", "{}"))
        starts.update({str(k): v for k, v in chain_starts.items()})
        values = {
            "version": FORMAT_VERSION,
            "schema": schema_fingerprint(self.schema),
            "schema_identity": schema_identity(self.schema),
            "config": config_fingerprint,
            "tables": json.dumps(sorted(self.layouts)),
            "chain_starts": json.dumps(starts, sort_keys=True),
            "last_checkpoint": meta.get("last_checkpoint", "0"),
        }
        if identifies(config_identity, config_fingerprint):
            assert config_identity is not None
            values["config_identity"] = config_identity
        return values

    def _log_remade(self, mismatch: Mismatch) -> None:
        changes = mismatch.listed()
        log.info(
            "the database at %s was made for another %s%s but holds nothing indexed yet: "
            "made its tables again",
            self.url_for_humans,
            mismatch.what,
            f" ({changes})" if changes else "",
        )

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def lock(self) -> None:
        """Claim the index for this process until close(); IndexBusyError if another has it."""

    @abstractmethod
    async def prepare(
        self,
        config_fingerprint: str,
        chain_starts: dict[int, int],
        reset: bool = False,
        config_identity: str | None = None,
    ) -> IndexState:
        """Create or check the tables, and return the committed state.

        ``config_identity``, when given, is the text ``config_fingerprint`` hashes: stored, it
        lets a later mismatch say what changed. A mismatch refuses a database that holds
        committed work; one that holds none has its tables made again."""

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
