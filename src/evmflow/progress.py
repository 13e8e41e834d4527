"""The terminal progress view: one line per chain, refreshed while the indexer runs.

On a terminal it uses rich's live display; elsewhere (CI logs, pipes) it prints a plain line
every few seconds, or nothing with ``--quiet``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

log = logging.getLogger("evmflow.progress")


class ProgressView:
    def __init__(self, indexer: Any, enabled: bool, quiet: bool, interval: float = 5.0) -> None:
        self.indexer = indexer
        self.enabled = enabled
        self.quiet = quiet
        self.interval = interval
        self._task: asyncio.Task | None = None
        self._live: Live | None = None
        self._rates: dict[int, tuple[float, int]] = {}

    def render(self) -> Table:
        table = Table(box=None, pad_edge=False)
        for column in ("chain", "block", "target", "events", "events/s", "left"):
            table.add_column(column, justify="right")
        for line in self.lines():
            table.add_row(*line)
        return table

    def lines(self) -> list[tuple[str, ...]]:
        out: list[tuple[str, ...]] = []
        now = time.perf_counter()
        for chain in self.indexer.chains.values():
            block = chain.progress.block
            events = chain.progress.events
            then, before = self._rates.get(chain.chain_id, (self.indexer.measures.started, 0))
            rate = (events - before) / (now - then) if now > then else 0.0
            target = chain.end_block if chain.end_block is not None else chain.head
            left = "-"
            if target is not None and block < target and chain.progress.block > 0:
                done_blocks = block - chain.config.start_block + 1
                total_blocks = target - chain.config.start_block + 1
                elapsed = now - self.indexer.measures.started
                if done_blocks > 0:
                    seconds = elapsed * (total_blocks - done_blocks) / done_blocks
                    left = f"{seconds:,.0f}s"
            elif target is not None and block >= target:
                writer = self.indexer.writer
                left = "committing" if writer is not None and writer.in_flight else "done"
            out.append(
                (
                    str(chain.chain_id),
                    f"{block:,}",
                    f"{target:,}" if target is not None else "live",
                    f"{events:,}",
                    f"{rate:,.0f}",
                    left,
                )
            )
        return out

    async def __aenter__(self) -> ProgressView:
        if self.enabled:
            self._live = Live(self.render(), console=Console(file=sys.stderr), transient=False)
            self._live.start()
            self._task = asyncio.create_task(self._refresh(0.5))
        elif not self.quiet:
            self._task = asyncio.create_task(self._plain(self.interval))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._live is not None:
            self._live.update(self.render())
            self._live.stop()

    async def _refresh(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            assert self._live is not None
            self._live.update(self.render())

    async def _plain(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            for chain, block, target, events, rate, left in self.lines():
                log.info(
                    "chain %s: block %s of %s, %s events, %s events/s, %s left",
                    chain,
                    block,
                    target,
                    events,
                    rate,
                    left,
                )
