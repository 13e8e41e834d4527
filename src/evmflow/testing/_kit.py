"""The testing kit: a project's real handlers, run on made-up events, against a real database.

The kit reuses the engine's own parts rather than imitating them: the project loader, the
in-memory :class:`~evmflow.store.Store`, the :class:`~evmflow.processor.Processor` (preload pass,
then the real run in event order), the background :class:`~evmflow.writer.Writer` and a real
storage backend (SQLite in a temporary directory by default). A handler that works under the
kit works the same under ``evmflow run``.

Two choices make it easy to use from any test:

* It owns an event loop in a daemon thread. Every call is submitted to that loop, so the same
  object works from plain ``def`` tests (``kit.run(...)``, ``kit.get(...)``) and from async
  tests (``await kit.process(...)``) without binding the database to the test's loop.
* Each ``process`` call is one batch: preload over all its events (as ``preload: always``
  does; ``auto`` preloads less often, with the same reads and results), then the handlers one
  event after another, then one commit that the kit waits for. Between events the kit records what
  each event wrote, so a test can assert one event's effect with ``kit.changes(event)``.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from ..abi import keccak256
from ..entities import Entity
from ..errors import UserError
from ..events import Event
from ..processor import Processor
from ..project import EventBinding, Project, load_project
from ..storage.base import ChainProgress, Storage, open_storage
from ..store import Batch, Store
from ..writer import Writer
from ._encode import encode_log

T = TypeVar("T")

# Made-up block times follow mainnet's rhythm from its genesis: 12 seconds a block. A block's
# timestamp depends only on its number, so a test's expectations never depend on event order.
GENESIS_TIMESTAMP = 1_438_269_973
SECONDS_PER_BLOCK = 12

# Keyword arguments of TestIndexer.event that describe the log, not its parameters.
LOG_FIELDS = (
    "address",
    "block",
    "timestamp",
    "block_hash",
    "transaction_hash",
    "transaction_index",
    "log_index",
    "chain_id",
)


class TestingError(UserError):
    """A test asked the kit for something the project does not have or the engine never does."""

    __test__ = False  # not a pytest test class, despite its name


class Change(NamedTuple):
    """One entity an event wrote: its state before the event and after it (None: absent)."""

    entity: str
    id: str
    before: Entity | None
    after: Entity | None


def made_up_hash(*parts: object) -> str:
    """A deterministic 32-byte hex hash for made-up block and transaction hashes."""
    text = ":".join(str(p) for p in ("evmflow-testing", *parts))
    return "0x" + keccak256(text.encode()).hex()


class _LoopThread:
    """An event loop in a daemon thread; coroutines are handed to it from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="evmflow-testing", daemon=True
        )
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def call_async(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class _RecordingChanges(dict):  # type: ignore[type-arg]
    """A batch's changes of one entity that also remembers each write, in order.

    :class:`~evmflow.store.Table` writes ``changes[id] = row`` for every ``set`` and
    ``delete``; recording those writes costs O(1) each, where comparing snapshots after every
    event would be quadratic in the batch size.
    """

    def __init__(self, entity: str, log: list[tuple[str, str, bool, Any, Any]]) -> None:
        super().__init__()
        self.entity = entity
        self.log = log

    def __setitem__(self, entity_id: str, row: Any) -> None:
        had = entity_id in self
        self.log.append((self.entity, entity_id, had, self.get(entity_id), row))
        super().__setitem__(entity_id, row)


@dataclass
class _ChainCursor:
    """Defaults for the next made-up event of one chain."""

    block: int | None = None
    next_log_index: int = 0


def _cleanup(loop: _LoopThread, directory: str | None) -> None:
    loop.stop()
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


class TestIndexer:
    """Run a project's handlers on made-up events and inspect the entities they store.

    ``TestIndexer("path/to/project")`` loads evmflow.yaml, schema.graphql and the handlers.
    ``db`` may name a database URL (say a PostgreSQL schema of its own); by default the kit
    uses a fresh SQLite file in a temporary directory, removed by :meth:`close`. The kit
    starts from an empty index every time.
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, project: str | Path | Project, *, db: str | None = None) -> None:
        self.project = project if isinstance(project, Project) else load_project(project)
        self.classes = self.project.classes
        self._directory: str | None = None
        if db is None:
            self._directory = tempfile.mkdtemp(prefix="evmflow-testing-")
            db = f"sqlite:///{Path(self._directory) / 'index.db'}"
        self.db_url = db
        self._loop = _LoopThread()
        self._finalizer = weakref.finalize(self, _cleanup, self._loop, self._directory)
        self._bindings = {(b.contract, b.event): b for b in self.project.bindings}
        self._cursors: dict[int, _ChainCursor] = {}
        self._storage: Storage | None = None
        self._writer: Writer | None = None
        self._store: Store | None = None
        self._processor: Processor | None = None
        self._seq = 0
        self._checkpoint = 0
        self._progress: dict[int, ChainProgress] = {}
        self._changes: dict[int, tuple[Event, list[Change]]] = {}

    # -- building events ---------------------------------------------------------------------

    def event(
        self, contract: str, name: str, /, params: dict[str, Any] | None = None, **values: Any
    ) -> Event:
        """A decoded event of ``contract.name``, as the indexer would hand it to a handler.

        Parameters go by their Python name (``from_=``) or, in ``params``, by their ABI name
        (``params={"from": ...}``); every parameter needs a value. The log fields are optional
        keywords: ``address`` (default: the contract's first address, or a made-up one),
        ``block`` (default: the previous event's block, first the chain's start block),
        ``timestamp``, ``block_hash``, ``transaction_hash``, ``transaction_index``,
        ``log_index`` (default: one more than the previous event's in the same block) and
        ``chain_id`` (default: the contract's first chain). A parameter whose name is one of
        these goes in ``params``.
        """
        binding = self._binding(contract, name)
        log_fields = {k: values.pop(k) for k in LOG_FIELDS if k in values}
        given = dict(params or {})
        given.update(values)
        ordered = self._param_values(binding, given)

        chain_id = log_fields.get("chain_id", binding.chains[0])
        if chain_id not in binding.chains:
            raise TestingError(
                f"{contract} is not indexed on chain {chain_id} (its chains: {binding.chains})",
                hint="pass a chain_id the contract lists, or add the chain in evmflow.yaml",
            )
        address = self._address(binding, log_fields.get("address"))
        cursor = self._cursors.setdefault(chain_id, _ChainCursor())
        block = log_fields.get("block")
        if block is None:
            block = cursor.block if cursor.block is not None else self._first_block(binding)
        self._check_block(binding, chain_id, block)
        if block != cursor.block:
            cursor.block, cursor.next_log_index = block, 0
        log_index = log_fields.get("log_index", cursor.next_log_index)
        cursor.next_log_index = log_index + 1
        transaction_index = log_fields.get("transaction_index", log_index)

        event_abi = binding.decoder.event
        topics, data = encode_log(event_abi, ordered, list(binding.decoder.params_class._names))
        decoded = binding.decoder.decode(topics, data)
        if decoded is None:  # pragma: no cover - the encoder and decoder disagree: a bug
            raise AssertionError(f"evmflow could not decode its own encoding of {event_abi}")
        event = Event(
            chain_id,
            binding.contract,
            binding.event,
            decoded,
            address,
            block,
            log_fields.get("block_hash") or made_up_hash(chain_id, block),
            log_fields.get("timestamp", GENESIS_TIMESTAMP + SECONDS_PER_BLOCK * block),
            log_fields.get("transaction_hash")
            or made_up_hash(chain_id, block, "tx", transaction_index),
            transaction_index,
            log_index,
        )
        # Limitation: only the handlers of this (contract, event) run. The engine also runs
        # those of another contract whose ABI has the same event at a matching address; build
        # one event per contract to test that case.
        event._handlers = binding.handlers
        return event

    def _binding(self, contract: str, name: str) -> EventBinding:
        binding = self._bindings.get((contract, name))
        if binding is not None:
            return binding
        contracts = sorted({c for c, _ in self._bindings})
        if contract not in contracts:
            raise TestingError(
                f"evmflow.yaml declares no contract {contract!r}",
                file=self.project.config.path,
                hint=f"contracts: {', '.join(contracts)}",
            )
        events = sorted(e for c, e in self._bindings if c == contract)
        raise TestingError(
            f"contract {contract} indexes no event {name!r}",
            file=self.project.config.path,
            hint=f"its indexed events: {', '.join(events)}; add {name} to its 'events' to index it",
        )

    def _param_values(self, binding: EventBinding, given: dict[str, Any]) -> list[Any]:
        params_class = binding.decoder.params_class
        lookup = params_class._lookup
        by_name: dict[str, Any] = {}
        for key, value in given.items():
            name = lookup.get(key) or lookup.get(key.rstrip("_"))
            if name is None:
                raise TestingError(
                    f"{binding.contract}.{binding.event} has no parameter {key!r}",
                    hint=f"its parameters: {', '.join(params_class._names)}",
                )
            by_name[name] = value
        missing = [n for n in params_class._names if n not in by_name]
        if missing:
            clash = [n for n in missing if n in LOG_FIELDS]
            hint = "give every parameter a value"
            if clash:
                hint = f"{', '.join(clash)} also names a log field: pass it in params={{...}}"
            raise TestingError(
                f"{binding.contract}.{binding.event} needs a value for {', '.join(missing)}",
                hint=hint,
            )
        return [by_name[n] for n in params_class._names]

    def _address(self, binding: EventBinding, address: str | None) -> str:
        if address is None:
            if binding.addresses:
                return binding.addresses[0]
            return "0x" + made_up_hash("address", binding.contract)[-40:]
        normal = address.lower()
        if binding.addresses and normal not in binding.addresses:
            raise TestingError(
                f"{binding.contract} is indexed at {', '.join(binding.addresses)} only; the "
                f"indexer would never see an event from {address}",
                hint="leave address out, or add it to the contract's address in evmflow.yaml",
            )
        return normal

    def _first_block(self, binding: EventBinding) -> int:
        chain = self.project.config.chain(binding.chains[0])
        return max(chain.start_block, binding.start_block or 0)

    def _check_block(self, binding: EventBinding, chain_id: int, block: int) -> None:
        chain = self.project.config.chain(chain_id)
        first = max(chain.start_block, binding.start_block or 0)
        if block < first or (chain.end_block is not None and block > chain.end_block):
            end = "" if chain.end_block is None else f" to {chain.end_block}"
            raise TestingError(
                f"block {block} is outside what the indexer reads for {binding.contract} on "
                f"chain {chain_id} (blocks {first}{end}), so its handlers would never run",
                hint="give a block inside that range",
            )

    # -- running -----------------------------------------------------------------------------

    def run(self, *events: Event) -> None:
        """Run the handlers on ``events`` as one batch and commit it (for plain ``def`` tests).

        A handler that raises makes this raise :class:`~evmflow.errors.HandlerFailed` (the
        handler's own exception is its ``__cause__``); nothing of the batch is stored.
        """
        self._loop.call(self._process(list(events)))

    async def process(self, *events: Event) -> None:
        """``run`` for ``async def`` tests."""
        await self._loop.call_async(self._process(list(events)))

    def set(self, *entities: Entity) -> None:
        """Store entities directly, as the state a test starts from."""
        self._loop.call(self._seed(list(entities)))

    def get(self, entity: str, entity_id: str) -> Entity | None:
        """The entity as the database holds it, or None."""
        return self._loop.call(self._get(entity, entity_id))

    def all(self, entity: str) -> list[Entity]:
        """Every stored entity of a type, sorted by id."""
        return self._loop.call(self._all(entity))

    def changes(self, event: Event) -> list[Change]:
        """What ``event``'s handlers wrote: one Change per entity, in the order first written.

        ``before`` is the entity as it was just before this event (None: absent), ``after`` as
        the event left it (None: deleted). A write that leaves an entity unchanged is listed.
        """
        found = self._changes.get(id(event))
        if found is None or found[0] is not event:
            raise TestingError(
                f"{event!r} has not been processed by this kit",
                hint="pass it to kit.run(...) or await kit.process(...) first",
            )
        return list(found[1])

    def close(self) -> None:
        """Close the database and remove the temporary one."""
        if self._storage is not None and not self._loop.loop.is_closed():
            self._loop.call(self._close())
        self._finalizer()

    def __enter__(self) -> TestIndexer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- on the kit's loop -------------------------------------------------------------------

    async def _open(self) -> None:
        if self._storage is not None:
            return
        project = self.project
        storage = open_storage(self.db_url, project.schema)
        await storage.open()
        self._storage = storage
        starts = {c.id: c.start_block for c in project.config.chains}
        await storage.prepare(project.config.fingerprint(), starts, reset=True)
        self._writer = Writer(storage)
        self._writer.start()
        self._fresh_store()

    def _fresh_store(self) -> None:
        assert self._storage is not None
        self._store = Store(self.project.schema.entities, self.project.classes)
        self._processor = Processor(self._store, self._storage)

    async def _close(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
        if self._storage is not None:
            await self._storage.close()
        self._storage = None

    def _new_batch(self, log: list) -> Batch:
        self._seq += 1
        batch = Batch(self._seq)
        batch.changes = {name: _RecordingChanges(name, log) for name in self.project.classes}
        return batch

    async def _commit(self, batch: Batch) -> None:
        assert self._writer is not None and self._store is not None
        self._writer.submit(batch)
        await self._writer.wait_for(batch.seq)
        self._store.advance(self._writer.committed_seq)

    async def _process(self, events: list[Event]) -> None:
        await self._open()
        assert self._store is not None and self._processor is not None
        store, processor = self._store, self._processor
        log: list[tuple[str, str, bool, Any, Any]] = []
        batch = self._new_batch(log)
        batch.first_checkpoint = self._checkpoint + 1
        last: tuple[int, int] | None = None
        for event in events:
            # Like the engine: one checkpoint per block, in the order the events come.
            if (event.chain_id, event.block_number) != last:
                last = (event.chain_id, event.block_number)
                self._checkpoint += 1
            event.checkpoint = self._checkpoint
        batch.last_checkpoint = self._checkpoint

        store.begin_batch(batch)
        route = _handlers_of
        try:
            await processor.preload(events, route)
            writes = []
            for event in events:
                log.clear()
                await processor.run([event], route, batch)
                writes.append((event, list(log)))
            changes = await self._describe(writes)
        except BaseException:
            # Nothing of a failed batch is stored, as in the engine: forget its changes.
            self._fresh_store()
            raise
        for event in events:
            progress = self._progress.get(event.chain_id, ChainProgress(event.block_number))
            block = max(progress.block, event.block_number)
            self._progress[event.chain_id] = ChainProgress(block, progress.events + 1)
            batch.chains[event.chain_id] = self._progress[event.chain_id]
        await self._commit(batch)
        for event, described in changes:
            self._changes[id(event)] = (event, described)

    async def _describe(self, writes: list) -> list[tuple[Event, list[Change]]]:
        """Turn each event's recorded writes into Changes; ``before`` of an entity first
        written in this batch comes from the database, which holds the state before it."""
        assert self._storage is not None
        first_touch: dict[str, set[str]] = {}
        for _, log in writes:
            for entity, entity_id, had, _, _ in log:
                if not had:
                    first_touch.setdefault(entity, set()).add(entity_id)
        stored: dict[tuple[str, str], tuple] = {}
        for entity, ids in first_touch.items():
            for row in await self._storage.load_by_ids(entity, sorted(ids)):
                stored[(entity, row[0])] = row

        out = []
        for event, log in writes:
            by_key: dict[tuple[str, str], list] = {}
            for entity, entity_id, had, previous, row in log:
                key = (entity, entity_id)
                if key not in by_key:
                    before = previous if had else stored.get(key)
                    by_key[key] = [before, row]
                by_key[key][1] = row
            out.append(
                (
                    event,
                    [
                        Change(e, i, self._entity(e, before), self._entity(e, after))
                        for (e, i), (before, after) in by_key.items()
                    ],
                )
            )
        return out

    def _entity(self, entity: str, row: tuple | None) -> Entity | None:
        return None if row is None else self.classes[entity].from_row(row)

    async def _seed(self, entities: list[Entity]) -> None:
        await self._open()
        batch = self._new_batch([])
        batch.first_checkpoint = batch.last_checkpoint = self._checkpoint
        for entity in entities:
            name = type(entity)._entity_name
            if name not in self.classes:
                raise TestingError(
                    f"schema.graphql defines no entity {name!r}",
                    hint=f"entities: {', '.join(self.classes)}",
                )
            row = entity.to_row()
            batch.changes[name][row[0]] = row
        await self._commit(batch)
        # The store may remember these ids as absent from an earlier read: start it afresh.
        self._fresh_store()

    def _table(self, entity: str) -> str:
        if entity not in self.classes:
            raise TestingError(
                f"schema.graphql defines no entity {entity!r}",
                hint=f"entities: {', '.join(self.classes)}",
            )
        return entity

    async def _get(self, entity: str, entity_id: str) -> Entity | None:
        await self._open()
        assert self._storage is not None
        rows = await self._storage.load_by_ids(self._table(entity), [entity_id])
        return self._entity(entity, rows[0]) if rows else None

    async def _all(self, entity: str) -> list[Entity]:
        await self._open()
        assert self._storage is not None
        rows = await self._storage.read_table(self._table(entity))
        return [self.classes[entity].from_row(row) for row in rows]


def _handlers_of(event: Event) -> list:
    return event._handlers
