"""A chain backfilled from an archive that goes on over JSON-RPC.

The archive serves every block up to its last one (the highest block of its logs or blocks
file); the node serves the rest, following its head when the chain has no end block. The
archive must hold every log the project asks for up to that block: logs it lacks are not
fetched again.

Reorgs are checked as for any RPC chain: the node's headers decide, including for archive
blocks that lie inside the reorg window, so an archive made from a branch the node no longer
has is rolled back like any other fork.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

from .archive import ArchiveSource
from .base import BlockHeader, LogFilter, Page
from .rpc import RpcSource

logger = logging.getLogger("evmflow.sources")

Pages = AsyncGenerator[Page, None]


class HandoverSource:
    """Pages from ``archive`` up to its last block, then from ``rpc``."""

    def __init__(self, archive: ArchiveSource, rpc: RpcSource) -> None:
        self.archive = archive
        self.rpc = rpc
        self.handed_over_at: int | None = None
        """The first block asked of the node, once pages went past the archive."""

    def __repr__(self) -> str:
        return f"HandoverSource({self.archive!r}, then {self.rpc!r})"

    @property
    def stats(self) -> Any:
        return self.rpc.stats

    async def head(self) -> int:
        return await self.rpc.head()

    async def headers(self, numbers: list[int]) -> dict[int, BlockHeader]:
        return await self.rpc.headers(numbers)

    async def chain_ids(self) -> list[tuple[str, int | None]]:
        return await self.rpc.chain_ids()

    async def close(self) -> None:
        try:
            await self.archive.close()
        finally:
            await self.rpc.close()

    async def pages(
        self, from_block: int, to_block: int | None, filters: list[LogFilter]
    ) -> AsyncIterator[Page]:
        last = await self.archive.head()
        # Once the node has served, it serves everything: a rollback into the archive's
        # blocks (the archive was made from a branch the node dropped) fetches them again
        # from the node, not from the archive that showed the fork.
        if self.handed_over_at is None and from_block <= last:
            end = last if to_block is None else min(to_block, last)
            archived = cast(Pages, self.archive.pages(from_block, end, filters))
            async with contextlib.aclosing(archived) as pages:
                async for page in pages:
                    yield page
            from_block = end + 1
        if to_block is not None and from_block > to_block:
            return
        if self.handed_over_at is None:
            self.handed_over_at = from_block
            logger.info(
                "chain %s: the archive ends at block %d; the node serves from %d on",
                self.rpc.chain_id,
                last,
                from_block,
            )
        fetched = cast(Pages, self.rpc.pages(from_block, to_block, filters))
        async with contextlib.aclosing(fetched) as pages:
            async for page in pages:
                yield page
