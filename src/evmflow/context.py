"""The ``context`` a handler receives: entity reads and writes, and a logger.

Reads are awaitables that the processor drives itself instead of asyncio Tasks (see
processor.py): a read that memory answers completes without suspending the handler; one that
needs the database suspends it, yielding the :class:`Read`, and the processor resumes it with
the result. ``get`` is a plain coroutine: CPython runs an awaited coroutine that does not
suspend several times faster than any awaitable object it has to build and step.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from .entities import Entity
from .errors import EntityError
from .store import Batch, Condition, Store, Table

GET = 0
WHERE = 1


class EntityNotFound(LookupError):
    """``get_or_throw`` found no entity with that id."""


class Read:
    """An entity read. Awaiting it gives the entity (or list); it may first suspend."""

    __slots__ = ("table", "op", "key", "conditions", "result", "done")

    def __init__(self, table: Table, op: int, key: Any, conditions: list[Condition] | None = None):
        self.table = table
        self.op = op
        self.key = key
        self.conditions = conditions
        self.result: Any = None
        self.done = False

    def resolve_get(self, row: tuple | None) -> None:
        self.done = True
        self.result = self.table.cls.from_row(row) if row is not None else None

    def __await__(self) -> Generator[Read, None, Any]:
        if not self.done:
            yield self
        return self.result


class EntityContext:
    """``context.Account``: reads and writes of one entity type."""

    __slots__ = ("_table", "_runtime", "_cls")

    def __init__(self, table: Table, runtime: HandlerContext) -> None:
        self._table = table
        self._runtime = runtime
        self._cls = table.cls

    async def get(self, entity_id: str) -> Entity | None:
        """The entity with this id, or None."""
        entry = self._table.entries.get(entity_id)
        if entry is None:
            if type(entity_id) is not str:
                raise EntityError(f"{self._table.name} ids are str, got {type(entity_id).__name__}")
            return await Read(self._table, GET, entity_id)
        row = entry[1]
        return None if row is None else self._cls.from_row(row)

    async def get_or_throw(self, entity_id: str) -> Entity:
        """The entity with this id; raises EntityNotFound if there is none."""
        found = await self.get(entity_id)
        if found is None:
            raise EntityNotFound(f"{self._table.name} {entity_id!r} does not exist")
        return found

    def get_where(self, **conditions: Any) -> Read:
        """Entities matching every condition, sorted by id: ``get_where(owner=a)``,
        ``get_where(balance__gt=0)``; operators eq, in, gt, gte, lt, lte."""
        parsed = self._table.conditions(conditions)
        return Read(self._table, WHERE, None, parsed)

    def set(self, entity: Entity) -> None:
        """Store the entity (insert or replace). Checks every field's value."""
        if type(entity) is not self._cls:
            raise EntityError(
                f"context.{self._table.name}.set got a {type(entity).__name__}",
                hint=f"pass a {self._table.name} built with {self._table.name}(id=..., ...)",
            )
        runtime = self._runtime
        if runtime.is_preload:
            return
        row = entity.to_row()
        self._table.put(row[0], runtime.checkpoint, row, runtime.batch)

    def delete(self, entity_id: str) -> None:
        """Remove the entity with this id (nothing happens if there is none)."""
        runtime = self._runtime
        if runtime.is_preload:
            return
        self._table.put(entity_id, runtime.checkpoint, None, runtime.batch)


class _QuietLogger:
    """The logger of preload mode: handler code runs twice, log lines should appear once."""

    def debug(self, *args: Any, **kwargs: Any) -> None: ...
    def info(self, *args: Any, **kwargs: Any) -> None: ...
    def warning(self, *args: Any, **kwargs: Any) -> None: ...
    def error(self, *args: Any, **kwargs: Any) -> None: ...
    def exception(self, *args: Any, **kwargs: Any) -> None: ...


class HandlerContext:
    """The second argument of every handler. ``context.<Entity>`` gives the entity API."""

    def __init__(self, store: Store, is_preload: bool) -> None:
        self.is_preload = is_preload
        self.checkpoint = 0
        self.batch: Batch = None  # type: ignore[assignment]  # set per batch by the processor
        self.log: Any = _QuietLogger() if is_preload else logging.getLogger("evmflow.handlers")
        for name, table in store.tables.items():
            setattr(self, name, EntityContext(table, self))

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"context has no entity {name!r}: schema.graphql defines "
            + ", ".join(k for k, v in vars(self).items() if isinstance(v, EntityContext))
        )
