"""The indexer: fetch pages per chain, cut them into batches, run handlers, hand commits to
the writer, and keep the whole pipeline bounded.

One loop does the CPU work (decode, preload, handlers) while per-chain fetch tasks fill
bounded page buffers and the writer commits earlier batches in the background.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ChainConfig
from .errors import ConfigError, HandlerError
from .events import BlockEvent, Event
from .processor import Handler, Processor
from .project import Project, load_project
from .reorg import (
    ReorgSignal,
    ReorgTooDeep,
    check_page,
    forget_above,
    forget_below,
    plan_rewind,
)
from .sources.base import Page, Source
from .storage.base import (
    ChainProgress,
    Checkpoint,
    Commit,
    Registration,
    Storage,
    open_storage,
)
from .store import Batch, Store
from .writer import Writer

log = logging.getLogger(__name__)

_END = object()  # a chain's source has delivered its last page


class _Stopped(Exception):
    """A stop was requested while the loop waited on a source (see ``_unless_stopped``)."""


@dataclass
class ChainState:
    """One chain as the engine runs it."""

    config: ChainConfig
    source: Source
    progress: ChainProgress
    end_block: int | None
    pages: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=4))
    pending: Page | None = None  # the rest of a page a batch did not take whole
    ready: list = field(default_factory=list)  # items taken from ``pages`` while waiting
    done: bool = False
    fetch_task: asyncio.Task | None = None
    by_address: dict = field(default_factory=dict)
    wildcard: dict = field(default_factory=dict)
    registered_routes: dict = field(default_factory=dict)
    # Registered contract -> address -> the registration (from its block and log index on).
    registered: dict[str, dict[str, Registration]] = field(default_factory=dict)
    block_bindings: list = field(default_factory=list)  # block handlers of this chain
    head: int | None = None  # the highest block known to exist (for progress display)
    # Reorg window: the node's head, the hashes of window blocks seen by the fetcher, the
    # committed-or-queued window checkpoints, and a fork the fetcher found.
    tip: int = 0
    hashes: dict[int, str] = field(default_factory=dict)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    reorg_at: int | None = None

    @property
    def chain_id(self) -> int:
        return self.config.id

    @property
    def tracks_reorgs(self) -> bool:
        """Sources that can fetch headers again can be checked; archives are final."""
        return self.config.max_reorg_depth > 0 and hasattr(self.source, "headers")

    @property
    def floor(self) -> int:
        """The highest block outside the reorg window."""
        return self.tip - self.config.max_reorg_depth

    def in_window(self, block: int) -> bool:
        return self.tracks_reorgs and block >= self.floor


@dataclass
class Measures:
    """What the rest of the program (progress view, metrics, benchmarks) reads."""

    batches: int = 0
    events: int = 0  # log events handled
    block_events: int = 0  # block handler runs
    reorgs: int = 0
    rollbacks: int = 0
    preload_seconds: float = 0.0
    handler_seconds: float = 0.0
    decode_seconds: float = 0.0
    waited_on_writer_seconds: float = 0.0
    waited_on_source_seconds: float = 0.0
    last_batch_events: int = 0
    last_preload_seconds: float = 0.0
    last_handler_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)


def make_source(project: Project, chain: ChainConfig) -> Source:
    archive = rpc = None
    if chain.archive is not None:
        from .sources.archive import ArchiveSource

        reader = chain.archive.reader
        archive = ArchiveSource(
            chain.archive.logs_file(),
            chain.archive.blocks_file(),
            process=None if reader == "auto" else reader == "process",
        )
    if chain.rpc is not None:
        from .sources.rpc import RpcSource

        settings = chain.rpc
        rpc = RpcSource(
            chain.id,
            list(settings.urls),
            request_timeout=settings.request_timeout,
            max_block_range=settings.max_block_range,
            concurrency=settings.concurrency,
            poll_interval=settings.poll_interval,
            block_lag=settings.block_lag,
            headers=dict(settings.headers),
        )
    if archive is not None and rpc is not None:
        from .sources.handover import HandoverSource

        return HandoverSource(archive, rpc)
    if archive is not None:
        return archive
    if rpc is not None:
        return rpc
    raise ConfigError(f"chain {chain.id} has no source", hint="give it 'rpc' or 'archive'")


def _check_url(url: str) -> None:
    """Refuse a database URL that would be misread, before anything is created."""
    from urllib.parse import urlsplit

    if url.startswith("sqlite:") and not url.startswith("sqlite:///"):
        raise ConfigError(
            f"cannot read the SQLite URL {url!r}: a SQLite URL starts with three slashes",
            hint="sqlite:///relative/to/the/project.db or sqlite:////absolute/path.db",
        )
    if url.startswith(("postgresql:", "postgres:")):
        hint = "postgresql://user[:password]@host[:port]/dbname[?schema=name]"
        parts = urlsplit(url)
        shown = url.replace(f":{parts.password}@", ":***@") if parts.password else url
        try:
            parts.port  # noqa: B018 - reading it checks it
        except ValueError as exc:
            raise ConfigError(
                f"cannot read the PostgreSQL URL {shown!r}: {exc}", hint=hint
            ) from None
        if (
            not url.startswith(("postgresql://", "postgres://"))
            or not parts.hostname
            and not (parts.path.strip("/") or parts.query)
        ):
            raise ConfigError(f"cannot read the PostgreSQL URL {shown!r}", hint=hint)


def database_url(project: Project, override: str | None) -> str:
    import os

    url = override or project.config.database or os.environ.get("DATABASE_URL")
    if not url:
        return f"sqlite:///{project.config.root / '.evmflow' / 'index.db'}"
    _check_url(url)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        relative = url.removeprefix("sqlite:///")
        if not Path(relative).is_absolute():
            return f"sqlite:///{project.config.root / relative}"
    return url


class Indexer:
    """Runs one project until every chain reaches its end block (or forever, live)."""

    def __init__(
        self,
        project: Project | str | Path,
        db: str | None = None,
        *,
        reset: bool = False,
        batch_size: int | None = None,
        pipeline: bool | None = None,
        max_uncommitted: int | None = None,
        before_commit: Callable[[Commit], Awaitable[None]] | None = None,
        sources: dict[int, Source] | None = None,
        preload: bool = True,
        cache_limit: int | None = None,
        on_storage_open: Callable[[Storage], Awaitable[None]] | None = None,
    ) -> None:
        self.project = project if isinstance(project, Project) else load_project(project)
        engine = self.project.config.engine
        self.db_url = database_url(self.project, db)
        self.reset = reset
        self.batch_size = batch_size or engine.batch_size
        self.pipeline = engine.pipeline if pipeline is None else pipeline
        self.max_uncommitted = max_uncommitted or engine.max_uncommitted
        self.before_commit = before_commit
        self.source_overrides = sources or {}
        self.preload_enabled = preload
        self.ordered = engine.multichain == "ordered"
        self.preload_mode = engine.preload
        self._turn = 0
        self.cache_limit = cache_limit or engine.cache_limit
        self.on_storage_open = on_storage_open
        self.measures = Measures()
        self.chains: dict[int, ChainState] = {}
        self.storage: Storage | None = None
        self.writer: Writer | None = None
        self.store: Store | None = None
        self._stop: asyncio.Event | None = None  # made in run(), on its loop
        self._seq = 0
        self._checkpoint = 0
        self._last_batch_end: dict[int, int] = {}
        self.finished = False

    # -- control -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the indexer to stop after the batch in hand; committed work is kept."""
        if self._stop is not None:
            self._stop.set()

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        # The store holds hundreds of thousands of small tuples: collecting the young
        # generation every 700 allocations costs more than a tenth of the run.
        thresholds = gc.get_threshold()
        gc.set_threshold(1_000_000, 10, 100)
        try:
            await self._run()
        finally:
            gc.set_threshold(*thresholds)

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        project = self.project
        storage = self.storage = open_storage(self.db_url, project.schema)
        await storage.open()
        try:
            await storage.lock()
            # Before prepare: a refused node must leave no trace, not even the fingerprint.
            await self._check_chain_ids()
            if self.on_storage_open is not None:
                await self.on_storage_open(storage)
            state = await storage.prepare(
                project.config.fingerprint(),
                {c.id: c.start_block for c in project.config.chains},
                reset=self.reset,
                config_identity=project.config.identity(),
            )
            self._checkpoint = state.last_checkpoint
            self.store = Store(project.schema.entities, project.classes)
            self.writer = Writer(storage, self.before_commit)
            self.writer.start()
            self._start_chains(state.chains, state.checkpoints, state.registrations)
            try:
                await self._loop()
            finally:
                for chain in self.chains.values():
                    if chain.fetch_task is not None:
                        chain.fetch_task.cancel()
                for chain in self.chains.values():
                    if chain.fetch_task is not None:
                        try:
                            await chain.fetch_task
                        except (asyncio.CancelledError, Exception):
                            pass
                    await chain.source.close()
                await self.writer.stop()
        finally:
            await storage.close()

    def _start_chains(
        self,
        progress: dict[int, ChainProgress],
        checkpoints: list[Checkpoint],
        registrations: list[Registration],
    ) -> None:
        for chain_config in self.project.config.chains:
            source = self.source_overrides.get(chain_config.id) or make_source(
                self.project, chain_config
            )
            chain = ChainState(
                chain_config, source, progress[chain_config.id], chain_config.end_block
            )
            chain.by_address, chain.wildcard, chain.registered_routes = self.project.routes(
                chain_config.id
            )
            chain.block_bindings = [
                b for b in self.project.block_bindings if chain_config.id in b.chains
            ]
            for reg in registrations:
                if reg.chain_id == chain_config.id:
                    chain.registered.setdefault(reg.contract, {})[reg.address] = reg
            # The window's hashes, as committed: a restart inside the window still sees a fork.
            chain.checkpoints = [c for c in checkpoints if c.chain_id == chain_config.id]
            chain.hashes = {c.block: c.block_hash for c in chain.checkpoints}
            self.chains[chain_config.id] = chain
            start = chain.progress.block + 1
            if chain.end_block is not None and start > chain.end_block:
                chain.done = True
                log.info("chain %d: already at end block %d", chain.chain_id, chain.end_block)
                continue
            self._start_fetch(chain, start)

    async def _check_chain_ids(self) -> None:
        """Refuse a node whose chain id differs from the configured one, before any fetch."""
        for index, chain_config in enumerate(self.project.config.chains):
            source = self.source_overrides.get(chain_config.id)
            if source is not None or chain_config.rpc is None:
                continue
            probe = make_source(self.project, chain_config)
            try:
                answers = await probe.chain_ids()  # type: ignore[attr-defined]
            finally:
                await probe.close()
            for position, (url, reported) in enumerate(answers):
                if reported is not None and reported != chain_config.id:
                    raise ConfigError(
                        f"the node at {url} serves chain {reported}, not chain {chain_config.id}",
                        file=self.project.config.path,
                        where=f"chains[{index}].rpc.urls[{position}]",
                        hint=f"point chain {chain_config.id} at a node of that chain, or set "
                        f"its id to {reported}",
                    )

    def _start_fetch(self, chain: ChainState, start: int) -> None:
        chain.fetch_task = asyncio.create_task(
            self._fetch(chain, start), name=f"evmflow-fetch-{chain.chain_id}"
        )

    async def _stop_fetch(self, chain: ChainState) -> None:
        """Stop a chain's fetcher and drop every page it buffered."""
        if chain.fetch_task is not None:
            chain.fetch_task.cancel()
            try:
                await chain.fetch_task
            except (asyncio.CancelledError, Exception):
                pass
            chain.fetch_task = None
        while not chain.pages.empty():
            chain.pages.get_nowait()
        chain.pending = None
        chain.ready.clear()
        chain.done = False
        chain.reorg_at = None

    async def _fetch(self, chain: ChainState, start: int) -> None:
        filters = self.project.filters(chain.chain_id)
        try:
            if chain.end_block is not None:
                chain.head = chain.end_block
            if chain.tracks_reorgs:
                chain.tip = await chain.source.head()
            async for page in chain.source.pages(start, chain.end_block, filters):
                if chain.block_bindings and hasattr(chain.source, "headers"):
                    await self._block_headers(chain, page)
                if chain.tracks_reorgs:
                    chain.tip = max(chain.tip, page.to_block)
                    if page.to_block >= chain.floor:
                        fork = await self._check(chain, page)
                        if fork is not None:
                            await chain.pages.put(ReorgSignal(fork))
                            return
                await chain.pages.put(page)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await chain.pages.put(exc)
            return
        await chain.pages.put(_END)

    async def _block_headers(self, chain: ChainState, page: Page) -> None:
        """Fetch the headers of the page's blocks that block handlers run at."""
        wanted = sorted(
            {
                b
                for binding in chain.block_bindings
                for b in binding.blocks_in(chain.config.start_block, page.from_block, page.to_block)
                if b not in page.blocks
            }
        )
        fetch = chain.source.headers  # type: ignore[attr-defined]
        for i in range(0, len(wanted), 100):
            page.blocks.update(await fetch(wanted[i : i + 100]))

    async def _check(self, chain: ChainState, page: Page) -> int | None:
        """The block where ``page`` shows a fork, or None. Asks the source for the headers a
        check needs that the page lacks: its first block (linking to the block below) and
        its last."""
        headers = dict(page.blocks)
        wanted = [n for n in {page.from_block, page.to_block} if n not in headers]
        if wanted:
            headers.update(await chain.source.headers(sorted(wanted)))  # type: ignore[attr-defined]
        return check_page(chain.hashes, page, headers, chain.floor)

    async def _loop(self) -> None:
        assert self.writer is not None and self.store is not None and self._stop is not None
        store, writer = self.store, self.writer
        processor = Processor(store, self.storage, self.preload_enabled)  # type: ignore[arg-type]
        self.processor = processor
        while not self._stop.is_set():
            store.advance(writer.committed_seq)
            if store.entry_count() > self.cache_limit:
                store.evict()
            batch, events = await self._next_batch()
            if batch is None:
                forked = [c for c in self.chains.values() if c.reorg_at is not None]
                if forked:
                    try:
                        await self._handle_reorg(forked[0])
                    except _Stopped:
                        # Stopped before anything was rolled back: the next start finds the
                        # fork again from the stored block hashes.
                        break
                    continue
                break
            store.begin_batch(batch)
            route = _handlers_of
            started = time.perf_counter()
            on_miss = self.preload_mode == "auto"
            if self.preload_enabled and events and not on_miss:
                await processor.preload(events, route)
            preloaded = time.perf_counter()
            # With preload: auto, the preload pass starts at the first read memory cannot
            # answer, over the events from there on (its seconds count as preload).
            late_preload = await processor.run(
                events, route, batch, preload_on_miss=on_miss and self.preload_enabled
            )
            handled = time.perf_counter()
            preloaded += late_preload

            m = self.measures
            m.batches += 1
            log_events = sum(1 for e in events if type(e) is Event)
            m.events += log_events
            m.block_events += len(events) - log_events
            m.last_batch_events = log_events
            m.last_preload_seconds = preloaded - started
            m.last_handler_seconds = handled - preloaded
            m.preload_seconds += m.last_preload_seconds
            m.handler_seconds += m.last_handler_seconds

            writer.submit(batch)
            if not self.pipeline:
                m.waited_on_writer_seconds += await writer.wait_for(batch.seq)
            while store.uncommitted > self.max_uncommitted and writer.in_flight:
                m.waited_on_writer_seconds += await writer.wait_any()
                store.advance(writer.committed_seq)
        self.measures.waited_on_writer_seconds += await writer.drain()
        store.advance(writer.committed_seq)
        self.finished = all(c.done and c.reorg_at is None for c in self.chains.values())
        if self.finished:
            log.info("every chain reached its end block; %d events", self.measures.events)

    # -- batching ----------------------------------------------------------------------------

    async def _take_page(self, chain: ChainState, wait: bool) -> Page | None:
        if chain.pending is not None:
            page, chain.pending = chain.pending, None
            return page
        if chain.ready:
            item = chain.ready.pop(0)
        elif chain.done:
            return None
        elif wait:
            item = await chain.pages.get()
        else:
            try:
                item = chain.pages.get_nowait()
            except asyncio.QueueEmpty:
                return None
        if item is _END:
            chain.done = True
            return None
        if isinstance(item, ReorgSignal):
            chain.reorg_at = item.block
            chain.done = True  # for batching: nothing more from this chain until rolled back
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def _next_batch(self) -> tuple[Batch | None, list[Event]]:
        if self.ordered:
            return await self._next_batch_ordered()
        return await self._next_batch_unordered()

    async def _next_batch_ordered(self) -> tuple[Batch | None, list[Event]]:
        """Up to batch_size events in one order across chains: block timestamp, chain id,
        block, log index.

        The next block to take is the earliest among every chain's next block that has
        events, so each chain must have its next such block buffered (or be finished): this
        mode waits for the slowest chain, by design.
        """
        budget = self.batch_size
        events: list[Event] = []
        self._seq += 1
        batch = Batch(self._seq)
        ranges: dict[int, list[int]] = {}
        while budget > 0:
            candidates: list[tuple[tuple[int, int, int], ChainState]] = []
            for chain in self.chains.values():
                while chain.reorg_at is None and (chain.pending is None or not chain.pending.logs):
                    if chain.pending is not None:
                        # A stretch without logs: nothing to order, just progress.
                        empty, chain.pending = chain.pending, None
                        self._take(chain, empty, budget, events, batch, ranges)
                        continue
                    page = await self._take_page(chain, wait=False)
                    if page is None and not batch.chains and not chain.done:
                        # Nothing in hand yet: wait for this chain (or a stop request).
                        await self._wait_any_page([chain])
                        if self._stop is not None and self._stop.is_set():
                            break
                        page = await self._take_page(chain, wait=False)
                    if page is None:
                        break
                    chain.pending = page
                if chain.reorg_at is None and chain.pending is not None and chain.pending.logs:
                    first = chain.pending.logs[0]
                    candidates.append(
                        (
                            (_timestamp(first, chain.pending), chain.chain_id, first.block_number),
                            chain,
                        )
                    )
                elif not chain.done and chain.reorg_at is None:
                    # This chain's next events are unknown yet: the order cannot go on.
                    candidates = []
                    break
            if not candidates:
                break
            _, chain = min(candidates, key=lambda c: c[0])
            page = chain.pending
            assert page is not None
            block = page.logs[0].block_number
            cut = 1
            while cut < len(page.logs) and page.logs[cut].block_number == block:
                cut += 1
            part = Page(page.from_block, block, page.logs[:cut], page.blocks)
            rest_logs = page.logs[cut:]
            chain.pending = (
                Page(block + 1, page.to_block, rest_logs, page.blocks)
                if rest_logs or block < page.to_block
                else None
            )
            budget -= self._take(chain, part, budget + cut, events, batch, ranges)
            if self._stop is not None and self._stop.is_set():
                break
        return self._finish_batch(batch, events, ranges)

    def _finish_batch(
        self, batch: Batch, events: list[Event], ranges: dict[int, list[int]]
    ) -> tuple[Batch | None, list[Event]]:
        if not batch.chains:
            self._seq -= 1
            return None, []
        batch.description = ", ".join(
            f"chain {cid} blocks {first}-{last}" for cid, (first, last) in ranges.items()
        )
        batch.first_checkpoint = events[0].checkpoint if events else self._checkpoint
        batch.last_checkpoint = self._checkpoint
        return batch, events

    async def _next_batch_unordered(self) -> tuple[Batch | None, list[Event]]:
        """Up to batch_size events from the chains' buffers, whole blocks only.

        Takes what is buffered without waiting, and waits only while the batch is empty.
        """
        budget = self.batch_size
        events: list[Event] = []
        self._seq += 1
        batch = Batch(self._seq)
        ranges: dict[int, list[int]] = {}
        # Each batch starts at the next chain, so a chain whose pages are always ready does
        # not fill every batch while another waits.
        self._turn += 1
        while budget > 0:
            active = [c for c in self.chains.values() if not c.done or c.pending or c.ready]
            if not active:
                break
            first = self._turn % len(active)
            active = active[first:] + active[:first]
            took_any = False
            for chain in active:
                page = await self._take_page(chain, wait=False)
                if page is None:
                    continue
                took_any = True
                budget -= self._take(chain, page, budget, events, batch, ranges)
                if budget <= 0:
                    break
            if took_any:
                continue
            if batch.chains:
                break  # something is in hand: do not wait for more
            waiting = [c for c in active if not c.done and not c.ready]
            if not waiting:
                break
            started = time.perf_counter()
            await self._wait_any_page(waiting)
            self.measures.waited_on_source_seconds += time.perf_counter() - started
            if self._stop is not None and self._stop.is_set():
                break
        return self._finish_batch(batch, events, ranges)

    async def _wait_any_page(self, chains: list[ChainState]) -> None:
        """Wait until some chain has a page (or news) buffered in ``ready``."""
        getters = {asyncio.ensure_future(c.pages.get()): c for c in chains}
        stop_wait = asyncio.ensure_future(self._stop.wait())  # type: ignore[union-attr]
        done, pending = await asyncio.wait(
            [*getters, stop_wait], return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        for getter, chain in getters.items():
            if getter in done:
                chain.ready.append(getter.result())

    def _take(
        self,
        chain: ChainState,
        page: Page,
        budget: int,
        events: list[Event],
        batch: Batch,
        ranges: dict[int, list[int]],
    ) -> int:
        """Decode a page (or its first whole blocks, up to ``budget`` logs) into ``events``."""
        logs = page.logs
        to_block = page.to_block
        if len(logs) > budget:
            cut = budget
            while cut < len(logs) and logs[cut].block_number == logs[cut - 1].block_number:
                cut += 1
            if cut < len(logs):
                rest_from = logs[cut].block_number
                chain.pending = Page(rest_from, page.to_block, logs[cut:], page.blocks)
                to_block = rest_from - 1
                logs = logs[:cut]
        first_new = len(events)
        decoded = self._decode(chain, logs, page, events, batch, to_block)
        if chain.in_window(to_block):
            self._record_window(chain, page, to_block, events[first_new:], batch)
        chain.progress = ChainProgress(to_block, chain.progress.events + decoded)
        batch.chains[chain.chain_id] = chain.progress
        span = ranges.setdefault(chain.chain_id, [page.from_block, to_block])
        span[1] = to_block
        return max(len(logs), 1)

    def _record_window(
        self, chain: ChainState, page: Page, to_block: int, new: list[Event], batch: Batch
    ) -> None:
        """Checkpoint rows for the window blocks of a page part: one per block with events,
        and one for its last block, whose hash links the next page."""
        batch.in_window = True
        batch.window_floor[chain.chain_id] = chain.floor
        events_before = chain.progress.events
        rows: list[Checkpoint] = []
        for event in new:
            block_hash = event.block_hash or chain.hashes.get(event.block_number)
            if (not rows or rows[-1].id != event.checkpoint) and block_hash is not None:
                rows.append(
                    Checkpoint(
                        event.checkpoint,
                        chain.chain_id,
                        event.block_number,
                        block_hash,
                        events_before,
                    )
                )
            if type(event) is Event:
                events_before += 1
        last_hash = chain.hashes.get(to_block)
        if last_hash is None and to_block in page.blocks:
            last_hash = page.blocks[to_block].hash
        if last_hash is not None and (not rows or rows[-1].block != to_block):
            self._checkpoint += 1
            rows.append(
                Checkpoint(self._checkpoint, chain.chain_id, to_block, last_hash, events_before)
            )
        rows = [r for r in rows if r.block >= chain.floor]
        batch.checkpoints += rows
        chain.checkpoints += rows
        if chain.checkpoints and chain.checkpoints[0].block < chain.floor:
            chain.checkpoints = [c for c in chain.checkpoints if c.block >= chain.floor]
            forget_below(chain.hashes, chain.floor)

    async def _handle_reorg(self, chain: ChainState) -> None:
        """Find the fork's depth, then rewind every chain past it and fetch again."""
        assert self.writer is not None and self.store is not None and self.storage is not None
        fork = chain.reorg_at
        assert fork is not None
        started = time.perf_counter()
        self.measures.reorgs += 1
        target = await self._find_target(chain, fork)
        if not chain.config.rollback_on_reorg:
            log.warning(
                "chain %d: reorg at block %d back to block %d; rollback_on_reorg is off, so "
                "the index keeps what it had and continues",
                chain.chain_id,
                fork,
                target,
            )
            forget_above(chain.hashes, target)
            await self._stop_fetch(chain)
            self._start_fetch(chain, chain.progress.block + 1)
            return

        # Drain first: the rollback must see every queued commit in the database.
        self.measures.waited_on_writer_seconds += await self.writer.drain()
        self.store.advance(self.writer.committed_seq)
        window = sorted(
            (c for ch in self.chains.values() for c in ch.checkpoints), key=lambda c: c.id
        )
        plan = plan_rewind(
            chain.chain_id,
            target,
            window,
            {cid: ch.progress for cid, ch in self.chains.items()},
        )
        result = await self.storage.rollback(plan.target_checkpoint, plan.progress)
        self.store.clear()
        for each in self.chains.values():
            for addresses in each.registered.values():
                for address in [
                    a for a, r in addresses.items() if r.checkpoint > plan.target_checkpoint
                ]:
                    del addresses[address]
        for cid, progress in plan.progress.items():
            rewound = self.chains[cid]
            await self._stop_fetch(rewound)
            rewound.progress = progress
            rewound.checkpoints = [c for c in rewound.checkpoints if c.id <= plan.target_checkpoint]
            forget_above(rewound.hashes, progress.block)
            self._start_fetch(rewound, progress.block + 1)
        if chain.chain_id not in plan.progress:
            # Nothing of the fork was processed yet: drop what was buffered and fetch again.
            await self._stop_fetch(chain)
            forget_above(chain.hashes, target)
            self._start_fetch(chain, chain.progress.block + 1)
        self.measures.rollbacks += 1
        log.info(
            "chain %d: reorg seen at block %d; rolled back %d blocks to block %d "
            "(%d entities restored, %d removed, %d chains rewound) in %.2fs",
            chain.chain_id,
            fork,
            max(0, fork - 1 - target),
            target,
            result.restored,
            result.removed,
            len(plan.progress),
            time.perf_counter() - started,
        )

    async def _find_target(self, chain: ChainState, fork: int) -> int:
        """The highest known block below the fork whose hash the node still has."""
        known = sorted((n for n in chain.hashes if n < fork), reverse=True)
        step = 50
        for start in range(0, len(known), step):
            numbers = known[start : start + step]
            headers = await self._unless_stopped(
                chain.source.headers(numbers)  # type: ignore[attr-defined]
            )
            for number in numbers:
                header = headers.get(number)
                if header is not None and header.hash == chain.hashes[number]:
                    return number
        raise ReorgTooDeep(
            f"chain {chain.chain_id}: the chain forked at block {fork}, deeper than every block "
            f"evmflow keeps (max_reorg_depth {chain.config.max_reorg_depth}): no stored block "
            "hash matches the node. Nothing was rolled back or rewritten. Fix: if the node is "
            "right, reindex with 'evmflow run --reset' (and consider a larger max_reorg_depth); "
            "if the node is wrong, point the chain at another one"
        )

    async def _unless_stopped(self, work: Awaitable[Any]) -> Any:
        """The result of ``work``, or _Stopped if a stop is requested first: a source that
        follows the head retries a dead node for ever, and Ctrl-C must not wait for it."""
        assert self._stop is not None
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        finally:
            stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
        raise _Stopped

    def _decode(
        self,
        chain: ChainState,
        logs: list,
        page: Page,
        events: list,
        batch: Batch,
        to_block: int,
    ) -> int:
        started = time.perf_counter()
        by_address = chain.by_address
        wildcard = chain.wildcard
        registered_routes = chain.registered_routes
        registered = chain.registered
        chain_id = chain.chain_id
        blocks = page.blocks
        checkpoint = self._checkpoint
        last_block = -1
        count = 0
        # Block handlers run after the logs of their block, in the same checkpoint.
        scheduled = sorted(
            (number, binding.name, binding)
            for binding in chain.block_bindings
            for number in binding.blocks_in(chain.config.start_block, page.from_block, to_block)
        )
        next_scheduled = 0
        for log_ in logs + [None]:
            while next_scheduled < len(scheduled) and (
                log_ is None or scheduled[next_scheduled][0] < log_.block_number
            ):
                number, name, binding = scheduled[next_scheduled]
                next_scheduled += 1
                if number != last_block:
                    last_block = number
                    checkpoint += 1
                header = blocks.get(number)
                events.append(
                    BlockEvent(
                        chain_id,
                        name,
                        number,
                        header.hash if header else None,
                        header.timestamp if header else None,
                        checkpoint,
                        binding.handlers,
                    )
                )
            if log_ is None:
                break
            topics = log_.topics
            if not topics:
                continue
            topic0 = topics[0]
            bindings = by_address.get((topic0, log_.address))
            extra = wildcard.get(topic0)
            if extra is not None:
                bindings = extra if bindings is None else bindings + extra
            if registered_routes:
                children = registered_routes.get(topic0)
                if children is not None:
                    mine = [b for b in children if _registered_before(registered, b.contract, log_)]
                    if mine:
                        bindings = mine if bindings is None else bindings + mine
            if bindings is None:
                continue
            for binding in bindings:
                if binding.start_block is not None and log_.block_number < binding.start_block:
                    continue
                if binding.topics and not _topics_match(binding.topics, topics):
                    continue
                params = binding.decoder.decode(topics, log_.data)
                if params is None:
                    continue  # same topic0, other shape (an ERC-721 Transfer, say)
                if log_.block_number != last_block:
                    last_block = log_.block_number
                    checkpoint += 1
                timestamp = log_.block_timestamp
                if timestamp is None:
                    timestamp = blocks[log_.block_number].timestamp
                event = Event(
                    chain_id,
                    binding.contract,
                    binding.event,
                    params,
                    log_.address,
                    log_.block_number,
                    log_.block_hash,
                    timestamp,
                    log_.transaction_hash,
                    log_.transaction_index,
                    log_.log_index,
                    checkpoint,
                )
                event._handlers = binding.handlers
                if binding.registrars:
                    self._checkpoint = checkpoint
                    _run_registrars(chain, binding, event, batch)
                if binding.handlers:
                    events.append(event)
                    count += 1
        self._checkpoint = checkpoint
        self.measures.decode_seconds += time.perf_counter() - started
        return count


def _topics_match(wanted: tuple, topics: list[str]) -> bool:
    for i, allowed in enumerate(wanted):
        if allowed is not None and (i + 1 >= len(topics) or topics[i + 1] not in allowed):
            return False
    return True


def _timestamp(log_: Any, page: Page) -> int:
    if log_.block_timestamp is not None:
        return int(log_.block_timestamp)
    return page.blocks[log_.block_number].timestamp


def _registered_before(registered: dict, contract: str, log_: Any) -> bool:
    """Is the log's address a registered child of ``contract`` at the log's position?"""
    addresses = registered.get(contract)
    if not addresses:
        return False
    reg = addresses.get(log_.address)
    if reg is None:
        return False
    return (log_.block_number, log_.log_index) > (reg.block, reg.log_index)


class Registrar:
    """The second argument of a registration function: ``registrar.add(Pair, address)``."""

    def __init__(self, chain: ChainState, event: Event, batch: Batch, known: set[str]) -> None:
        self._chain = chain
        self._event = event
        self._batch = batch
        self._known = known

    def add(self, contract: Any, address: str) -> None:
        name = contract if isinstance(contract, str) else getattr(contract, "_name", None)
        if name not in self._known:
            raise HandlerError(
                f"registration for {self._event.contract}.{self._event.name} adds an address "
                f"to {name!r}, which is not a registered contract on chain "
                f"{self._chain.chain_id}",
                hint="mark the child contract 'registered: true' in evmflow.yaml and list "
                "this chain in its 'chains'",
            )
        if not isinstance(address, str) or len(address) != 42 or not address.startswith("0x"):
            raise HandlerError(
                f"registration for {self._event.contract}.{self._event.name} gave {address!r}",
                hint="pass a 0x-prefixed 20-byte address",
            )
        address = address.lower()
        addresses = self._chain.registered.setdefault(name, {})
        if address in addresses:
            return
        event = self._event
        reg = Registration(
            self._chain.chain_id,
            name,
            address,
            event.block_number,
            event.log_index,
            event.checkpoint,
        )
        addresses[address] = reg
        self._batch.registrations.append(reg)


def _run_registrars(chain: ChainState, binding: Any, event: Event, batch: Batch) -> None:
    known = {b.contract for bs in chain.registered_routes.values() for b in bs}
    registrar = Registrar(chain, event, batch, known)
    for fn in binding.registrars:
        result = fn(event, registrar)
        if inspect.iscoroutine(result):
            # An async registration function runs to its end at once: it has nothing to
            # wait for (it cannot read entities).
            try:
                result.send(None)
            except StopIteration:
                continue
            result.close()
            raise HandlerError(
                f"registration function {getattr(fn, '__qualname__', fn)} awaited something",
                hint="registration functions may only call registrar.add(...)",
            )


def _handlers_of(event: Event) -> list[Handler]:
    return event._handlers


def run_sync(indexer: Indexer) -> None:
    asyncio.run(indexer.run())
