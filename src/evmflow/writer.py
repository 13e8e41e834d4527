"""The background writer: one commit at a time, in batch order, overlapping processing.

Batches are queued as they finish. The writer takes everything queued at once and writes it as
one transaction (group commit), so a slow database gets fewer, larger commits instead of a
growing queue. The processing side waits on the writer only for backpressure, for a drain
(rollback or clean exit) or when the pipeline is switched off.

A failed commit stops the writer for good: nothing of that transaction is stored, nothing after
it is written, and the processing side raises the error at its next step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .errors import WriterError
from .storage.base import Commit, Storage
from .store import Batch

log = logging.getLogger(__name__)


class Writer:
    def __init__(
        self,
        storage: Storage,
        before_commit: Callable[[Commit], Awaitable[None]] | None = None,
    ) -> None:
        self.storage = storage
        # A hook awaited before each commit; tests use it as a gate that holds commits back.
        self.before_commit = before_commit
        self.queue: list[Batch] = []
        self.committed_seq = 0
        self.error: WriterError | None = None
        self.commits = 0
        self.batches_committed = 0
        self.commit_seconds = 0.0
        self.idle_seconds = 0.0
        self.last_commit_seconds = 0.0
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="evmflow-writer")

    def submit(self, batch: Batch) -> None:
        self.raise_error()
        self.queue.append(batch)
        self._wake.set()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    @property
    def in_flight(self) -> int:
        return len(self.queue)

    async def wait_for(self, seq: int) -> float:
        """Wait until batch ``seq`` is committed; returns the seconds waited."""
        started = time.perf_counter()
        while self.committed_seq < seq:
            self.raise_error()
            self._progress.clear()
            await self._progress.wait()
        self.raise_error()
        return time.perf_counter() - started

    async def wait_any(self) -> float:
        """Wait for the next commit to finish (backpressure)."""
        started = time.perf_counter()
        self.raise_error()
        if self.queue:
            self._progress.clear()
            await self._progress.wait()
        self.raise_error()
        return time.perf_counter() - started

    async def drain(self) -> float:
        """Wait until every queued batch is committed."""
        if not self.queue:
            self.raise_error()
            return 0.0
        return await self.wait_for(self.queue[-1].seq)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def _loop(self) -> None:
        idle_since = time.perf_counter()
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
            self.idle_seconds += time.perf_counter() - idle_since
            # Group commit, but never across the start of a reorg window: a merged commit is
            # either all history-free backfill or all inside the window.
            batches = [self.queue[0]]
            for later in self.queue[1:]:
                if later.in_window != batches[0].in_window:
                    break
                batches.append(later)
            commit = _merge(batches)
            try:
                if self.before_commit is not None:
                    await self.before_commit(commit)
                started = time.perf_counter()
                await self.storage.commit(commit)
                self.last_commit_seconds = time.perf_counter() - started
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.error = WriterError(
                    f"commit of {commit.description or 'a batch'} failed: "
                    f"{type(exc).__name__}: {exc}; nothing of it was stored, and the next start "
                    "resumes from the last committed block"
                )
                self.error.__cause__ = exc
                log.error("%s", self.error)
                self._progress.set()
                return
            self.commit_seconds += self.last_commit_seconds
            self.commits += 1
            self.batches_committed += len(batches)
            del self.queue[: len(batches)]
            self.committed_seq = batches[-1].seq
            idle_since = time.perf_counter()
            self._progress.set()


def _merge(batches: list[Batch]) -> Commit:
    if len(batches) == 1:
        return batches[0].to_commit()
    commit = Commit()
    for batch in batches:
        commit.merge(batch.to_commit())
    return commit
