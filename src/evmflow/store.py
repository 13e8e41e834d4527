"""The in-memory store: every entity change not yet committed, and a cache of committed rows.

The problem: commits run in the background, so when batch N+1 is handled the database may not
hold batch N yet, or may hold part of what was queued. Handlers must still read the latest state.

The choice: every change goes to ``entries[id] = (checkpoint, row)``, where a checkpoint above
the committed frontier marks an uncommitted change and ``row`` None means deleted (or, with
checkpoint 0, known to be absent from the database). Reads look here first, so they see their
own batch, then earlier uncommitted batches, and only then the database. Each batch also keeps
its own final value per id: that is what its commit writes, even after a later batch changed
the same id again.

The frontier moves only at batch boundaries (``advance``), never while a handler runs: a
field query that started against the database and an uncommitted change it overlays always
agree on which changes are in flight. For the same reason, committed entries are evicted only
at boundaries, and only once the database holds them.

An entry is uncommitted exactly when its checkpoint is above the frontier, so no separate set
of dirty ids is kept: moving the frontier marks every entry of the committed batches clean at
once, and the ids still in flight are those in the changes of the pending batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .entities import Entity
from .errors import EntityError
from .schema import EntitySpec
from .storage.base import ChainProgress, Checkpoint, Commit, Registration

# get_where operators, evaluated on stored Python values.
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "in": lambda a, b: a in b,
    "gt": lambda a, b: a is not None and a > b,
    "gte": lambda a, b: a is not None and a >= b,
    "lt": lambda a, b: a is not None and a < b,
    "lte": lambda a, b: a is not None and a <= b,
}


@dataclass(slots=True)
class Condition:
    """One ``get_where`` condition: ``field op value`` on a stored field."""

    field: str
    index: int
    op: str
    value: Any

    def matches(self, row: tuple) -> bool:
        return _COMPARE[self.op](row[self.index], self.value)


@dataclass
class Batch:
    """One batch's changes, as its commit will write them."""

    seq: int
    changes: dict[str, dict[str, tuple | None]] = field(default_factory=dict)
    chains: dict[int, ChainProgress] = field(default_factory=dict)
    first_checkpoint: int = 0
    last_checkpoint: int = 0
    description: str = ""
    # Filled only for batches inside a reorg window (see storage.base.Commit).
    in_window: bool = False
    history: dict[str, dict[tuple[str, int], tuple | None]] = field(default_factory=dict)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    window_floor: dict[int, int] = field(default_factory=dict)
    registrations: list[Registration] = field(default_factory=list)

    def size(self) -> int:
        return sum(len(c) for c in self.changes.values())

    def to_commit(self) -> Commit:
        return Commit(
            self.changes,
            self.chains,
            self.last_checkpoint,
            self.description,
            self.history,
            self.checkpoints,
            self.window_floor,
            self.registrations,
        )


class Table:
    """The in-memory state of one entity type."""

    def __init__(self, spec: EntitySpec, cls: type[Entity], store: Store) -> None:
        self.name = spec.name
        self.spec = spec
        self.cls = cls
        self.store = store
        self.entries: dict[str, tuple[int, tuple | None]] = {}
        # field index -> value -> ids, over uncommitted entries only; built on first use and
        # dropped when the frontier moves.
        self.indexes: dict[int, dict[Any, set[str]]] = {}
        # The batch being handled and its changes of this entity (see put).
        self._batch: Batch | None = None
        self._changes: dict[str, tuple | None] = {}
        self.where_memo: dict[tuple, list[tuple]] = {}
        self.columns = [f.name for f in spec.stored_fields]
        self.checks = dict(zip(self.columns, cls._checks, strict=True))

    # -- changes -----------------------------------------------------------------------------

    def put(self, entity_id: str, checkpoint: int, row: tuple | None, batch: Batch) -> None:
        if self.indexes:
            previous = self.entries.get(entity_id)
            if (
                previous is not None
                and previous[1] is not None
                and previous[0] > self.store.committed
            ):
                self._unindex(entity_id, previous[1])
            if row is not None:
                self._index(entity_id, row)
        self.entries[entity_id] = (checkpoint, row)
        if batch is not self._batch:
            self._batch = batch
            self._changes = batch.changes.setdefault(self.name, {})
        self._changes[entity_id] = row
        if batch.in_window:
            versions = batch.history.get(self.name)
            if versions is None:
                versions = batch.history[self.name] = {}
            versions[(entity_id, checkpoint)] = row

    def _index(self, entity_id: str, row: tuple) -> None:
        for i, by_value in self.indexes.items():
            by_value.setdefault(row[i], set()).add(entity_id)

    def _unindex(self, entity_id: str, row: tuple) -> None:
        for i, by_value in self.indexes.items():
            ids = by_value.get(row[i])
            if ids is not None:
                ids.discard(entity_id)
                if not ids:
                    del by_value[row[i]]

    def cache(self, rows: Iterable[tuple]) -> None:
        """Remember rows read from the database, unless memory holds a newer version."""
        entries = self.entries
        for row in rows:
            if row[0] not in entries:
                entries[row[0]] = (0, row)

    def cache_missing(self, ids: Iterable[str]) -> None:
        entries = self.entries
        for entity_id in ids:
            if entity_id not in entries:
                entries[entity_id] = (0, None)

    # -- field queries -----------------------------------------------------------------------

    def conditions(self, where: dict[str, Any]) -> list[Condition]:
        """Parse ``get_where`` keywords: ``field=v``, ``field__gt=v``, ``field__in=[...]``."""
        if not where:
            raise EntityError(
                f"{self.name}.get_where needs at least one condition",
                hint="e.g. get_where(owner='0x…') or get_where(balance__gt=0)",
            )
        out = []
        for key, value in where.items():
            name, _, op = key.partition("__")
            op = op or "eq"
            name = name.rstrip("_") if name not in self.columns else name
            if name not in self.columns:
                raise EntityError(
                    f"{self.name} has no stored field {name!r} to query",
                    hint=f"fields: {', '.join(self.columns)}",
                )
            if op not in _COMPARE:
                raise EntityError(
                    f"unknown get_where operator {op!r} in {key!r}",
                    hint="use one of: " + ", ".join(f"{name}__{o}" for o in _COMPARE),
                )
            spec = self.spec.field(name)
            if spec is not None and (spec.is_list or spec.type_name == "Json"):
                raise EntityError(
                    f"{self.name}.{name} is a list or Json field and cannot be queried",
                    hint="query a scalar field",
                )
            check = self.checks[name]
            if op == "in":
                value = frozenset(check(v) for v in value)
            elif value is not None:
                value = check(value)
            out.append(Condition(name, self.columns.index(name), op, value))
        return out

    def overlay(self, conditions: list[Condition], db_rows: list[tuple]) -> list[Entity]:
        """Database rows with every uncommitted change laid over them, sorted by id."""
        committed = self.store.committed
        entries = self.entries
        found: dict[str, tuple] = {}
        row: tuple | None
        for row in db_rows:
            entity_id = row[0]
            entry = entries.get(entity_id)
            if entry is None:
                entries[entity_id] = (0, row)
            elif entry[0] > committed:
                row = entry[1]
            if row is not None and all(c.matches(row) for c in conditions):
                found[entity_id] = row
        for entity_id in self._candidates(conditions[0]):
            if entity_id in found:
                continue
            entry = entries[entity_id]
            row = entry[1]
            if entry[0] > committed and row is not None and all(c.matches(row) for c in conditions):
                found[entity_id] = row
        from_row = self.cls.from_row
        return [from_row(found[k]) for k in sorted(found)]

    def in_flight(self) -> set[str]:
        """The ids with an uncommitted change: those in the pending batches' changes."""
        ids: set[str] = set()
        for batch in self.store.pending:
            changes = batch.changes.get(self.name)
            if changes:
                ids.update(changes)
        return ids

    def _candidates(self, condition: Condition) -> Iterable[str]:
        if condition.op not in ("eq", "in") or condition.value is None:
            return list(self.in_flight())
        index = self.indexes.get(condition.index)
        if index is None:
            index = self.indexes[condition.index] = {}
            for entity_id in self.in_flight():
                row = self.entries[entity_id][1]
                if row is not None:
                    index.setdefault(row[condition.index], set()).add(entity_id)
        if condition.op == "eq":
            return list(index.get(condition.value, ()))
        out: list[str] = []
        for v in condition.value:
            out += index.get(v, ())
        return out

    # -- frontier ----------------------------------------------------------------------------

    def evict(self) -> None:
        """Drop every committed entry; the database holds them."""
        committed = self.store.committed
        self.entries = {k: v for k, v in self.entries.items() if v[0] > committed}


class Store:
    """Every entity table's in-memory state and the committed frontier."""

    def __init__(self, specs: dict[str, EntitySpec], classes: dict[str, type[Entity]]) -> None:
        self.tables = {name: Table(spec, classes[name], self) for name, spec in specs.items()}
        self.committed = 0  # highest checkpoint whose batch is committed
        self.pending: list[Batch] = []  # batches handed to the writer and not yet committed

    @property
    def uncommitted(self) -> int:
        """Changes held for batches not yet committed (what backpressure counts)."""
        return sum(batch.size() for batch in self.pending)

    def begin_batch(self, batch: Batch) -> None:
        self.pending.append(batch)
        for table in self.tables.values():
            table.where_memo.clear()

    def advance(self, committed_seq: int) -> None:
        """Batches up to ``committed_seq`` are in the database: clean their entries."""
        moved = False
        while self.pending and self.pending[0].seq <= committed_seq:
            batch = self.pending.pop(0)
            self.committed = max(self.committed, batch.last_checkpoint)
            moved = True
        if moved:
            # Indexes cover uncommitted entries only; the next get_where rebuilds them.
            for table in self.tables.values():
                if table.indexes:
                    table.indexes.clear()

    def entry_count(self) -> int:
        return sum(len(t.entries) for t in self.tables.values())

    def evict(self) -> None:
        for table in self.tables.values():
            table.evict()

    def clear(self) -> None:
        """Forget everything (after a rollback rewrote the database). Needs no pending batch."""
        assert not self.pending, "clear() needs the writer drained"
        for table in self.tables.values():
            table.entries.clear()
            table.indexes.clear()
            table.where_memo.clear()
            table._batch = None
