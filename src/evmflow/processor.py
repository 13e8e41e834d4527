"""Running a batch's handlers: preload, then the real run in event order.

Handlers are coroutines, but the processor steps them itself (``coro.send``) rather than
wrapping each in an asyncio Task: a Task costs tens of microseconds per event, more than a
typical handler's whole work. A handler that only touches memory runs to its end inside one
``send``. A handler that suspends yields either a :class:`~evmflow.context.Read` (an entity read
that memory could not answer) or something of asyncio's (the user awaited I/O of their own).

Preload runs every handler of the batch with writes switched off and stops each at its first
database read; the reads of one round are grouped into one query per entity and operation, and
the handlers resume with the answers until none asks for more. Then the real run handles the
events one after another, now mostly from memory. With ``preload: auto`` (opt-in) the real run
starts at once, and the first read memory cannot answer preloads the events from there on: a
batch memory answers whole runs each handler once.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from .context import GET, WHERE, HandlerContext, Read
from .errors import HandlerFailed
from .events import Event
from .storage.base import Storage
from .store import Store, Table

Handler = Callable[[Event, HandlerContext], Coroutine[Any, Any, None]]

# Preload stops after this many rounds of reads: handlers that read in a long chain are
# finished by the real run.
PRELOAD_ROUNDS = 4

# The real run hands the event loop over every this many events.
YIELD_EVERY = 200


@dataclass
class BatchTimings:
    preload_seconds: float = 0.0
    handler_seconds: float = 0.0
    preload_queries: int = 0
    queries: int = 0


@dataclass
class Processor:
    store: Store
    storage: Storage
    preload_enabled: bool = True
    preload_context: HandlerContext = field(init=False)
    context: HandlerContext = field(init=False)
    queries: int = 0

    def __post_init__(self) -> None:
        self.preload_context = HandlerContext(self.store, is_preload=True)
        self.context = HandlerContext(self.store, is_preload=False)
        # The batch run() is in, while preload: auto has not preloaded it yet.
        self._late: tuple[list[Event], Callable[[Event], list[Handler]]] | None = None
        self._late_seconds = 0.0
        self._position = 0

    # -- database reads ----------------------------------------------------------------------

    async def _load_ids(self, table: Table, ids: list[str]) -> None:
        self.queries += 1
        rows = await self.storage.load_by_ids(table.name, ids)
        table.cache(rows)
        table.cache_missing(ids)

    async def _db_where(self, read: Read) -> list[tuple]:
        table = read.table
        first = read.conditions[0]  # type: ignore[index]
        key = (first.index, first.op, first.value)
        rows = table.where_memo.get(key)
        if rows is None:
            self.queries += 1
            value = sorted(first.value) if first.op == "in" else first.value
            rows = await self.storage.load_where(table.name, first.field, first.op, value)
            table.where_memo[key] = rows
        return rows

    async def resolve(self, read: Read) -> None:
        """Answer one read from the database (the real run's path for a preload miss)."""
        table = read.table
        if read.op == GET:
            entry = table.entries.get(read.key)
            if entry is None:
                await self._load_ids(table, [read.key])
                entry = table.entries[read.key]
            read.resolve_get(entry[1])
        else:
            rows = await self._db_where(read)
            read.result = table.overlay(read.conditions, rows)  # type: ignore[arg-type]
            read.done = True

    async def _resolve_round(self, reads: list[Read]) -> None:
        """Answer a preload round: one query per entity for ids, one per field for equality."""
        ids: dict[Table, set[str]] = defaultdict(set)
        equal: dict[tuple[Table, int], set[Any]] = defaultdict(set)
        for read in reads:
            if read.op == GET:
                if read.key not in read.table.entries:
                    ids[read.table].add(read.key)
            else:
                first = read.conditions[0]  # type: ignore[index]
                memo_key = (first.index, first.op, first.value)
                if first.op == "eq" and first.value is not None:
                    if memo_key not in read.table.where_memo:
                        equal[(read.table, first.index)].add(first.value)
        for table, wanted in ids.items():
            await self._load_ids(table, sorted(wanted))
        for (table, index), values in equal.items():
            self.queries += 1
            column = table.columns[index]
            rows = await self.storage.load_where(table.name, column, "in", sorted(values))
            by_value: dict[Any, list[tuple]] = {v: [] for v in values}
            for row in rows:
                by_value.setdefault(row[index], []).append(row)
            for value, matching in by_value.items():
                table.where_memo[(index, "eq", value)] = matching
        for read in reads:
            if read.op == WHERE:
                await self.resolve(read)
            else:
                read.resolve_get(read.table.entries[read.key][1])

    # -- preload -----------------------------------------------------------------------------

    async def preload(
        self, events: list[Event], handlers: Callable[[Event], list[Handler]]
    ) -> None:
        ctx = self.preload_context
        waiting: list[tuple[Coroutine, Read]] = []
        for event in events:
            for handler in handlers(event):
                try:
                    coro = handler(event, ctx)
                except Exception:
                    continue
                _step(coro, waiting)
        rounds = 0
        while waiting and rounds < PRELOAD_ROUNDS:
            rounds += 1
            reads = [read for _, read in waiting]
            try:
                await self._resolve_round(reads)
            except Exception:
                # A read the database refuses will fail again in the real run, with the
                # handler's context; preload only warms the cache.
                break
            resumed, waiting = waiting, []
            for coro, _ in resumed:
                _step(coro, waiting)
        for coro, _ in waiting:
            coro.close()

    # -- the real run ------------------------------------------------------------------------

    async def run(
        self,
        events: list[Event],
        handlers: Callable[[Event], list[Handler]],
        batch: Any,
        preload_on_miss: bool = False,
    ) -> float:
        """Run the handlers in event order. With ``preload_on_miss``, the first read that
        memory cannot answer first preloads the rest of the batch (from that event on), so
        a batch that memory answers whole runs its handlers once. Returns the seconds that
        preload took."""
        ctx = self.context
        ctx.batch = batch
        countdown = YIELD_EVERY
        self._late = (events, handlers) if preload_on_miss else None
        self._late_seconds = 0.0
        for position, event in enumerate(events):
            self._position = position
            countdown -= 1
            if not countdown:
                # Let the writer's coroutine (PostgreSQL) send its next statement, so the
                # database works on commit N while this loop handles batch N+1.
                countdown = YIELD_EVERY
                await asyncio.sleep(0)
            ctx.checkpoint = event.checkpoint
            for handler in handlers(event):
                coro = handler(event, ctx)
                try:
                    yielded = coro.send(None)
                except StopIteration:
                    continue
                except Exception as exc:
                    raise _failure(event, handler, exc) from exc
                try:
                    await self._finish(coro, yielded)
                except Exception as exc:
                    raise _failure(event, handler, exc) from exc
        self._late = None
        return self._late_seconds

    async def _preload_late(self) -> None:
        """preload: auto: the batch's first read that memory could not answer preloads the
        events from the current one on (once a batch)."""
        assert self._late is not None
        events, handlers = self._late
        self._late = None
        started = time.perf_counter()
        await self.preload(events[self._position :], handlers)
        self._late_seconds += time.perf_counter() - started

    async def _finish(self, coro: Coroutine, yielded: Any) -> None:
        """Drive a suspended handler to its end, answering its reads and asyncio awaits."""
        while True:
            if type(yielded) is Read:
                if self._late is not None:
                    await self._preload_late()
                await self.resolve(yielded)
            elif yielded is None:
                await asyncio.sleep(0)  # a bare yield, as asyncio.sleep(0) makes
            else:
                # An asyncio future the handler awaits: wait for it here, then let the
                # handler's own await pick up its result or exception.
                try:
                    await yielded
                except Exception:
                    pass
            try:
                yielded = coro.send(None)
            except StopIteration:
                return


# Bare yields (``await asyncio.sleep(0)``) a preload coroutine is stepped over, at most.
PRELOAD_BARE_YIELDS = 100


def _step(coro: Coroutine, waiting: list[tuple[Coroutine, Read]]) -> None:
    """Advance a preload coroutine to its next entity read, or finish or drop it."""
    for _ in range(PRELOAD_BARE_YIELDS):
        try:
            yielded = coro.send(None)
        except BaseException:  # finished, or failed: preload swallows handler errors
            return
        if type(yielded) is Read:
            waiting.append((coro, yielded))
            return
        if yielded is not None:
            break
    # The handler awaits something other than an entity read (its own I/O): preload does
    # not wait for it; the real run will.
    coro.close()


def _failure(event: Event, handler: Handler, exc: Exception) -> HandlerFailed:
    name = getattr(handler, "__qualname__", repr(handler))
    return HandlerFailed(
        f"handler {name} failed on {event.contract}.{event.name} at chain {event.chain_id} "
        f"block {event.block_number} log index {event.log_index} "
        f"(tx {event.transaction_hash}): {type(exc).__name__}: {exc}"
    )
