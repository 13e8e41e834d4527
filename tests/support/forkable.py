"""A chain a test can fork at will, served to the engine as a source with headers.

Block hashes encode their branch, so a test can build branch "a", let evmflow index it, then
replace the last blocks by branch "b" as a real node would after a reorganisation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from evmflow.sources.base import BlockHeader, Log, LogFilter, Page

from .scripted import TOKEN, TRANSFER


def block_hash(number: int, branch: str) -> str:
    return "0x" + branch.encode().hex().rjust(8, "0") + format(number, "056x")


def transfer(
    block: int, index: int, sender: int, receiver: int, value: int, branch: str = "a"
) -> Log:
    return Log(
        TOKEN,
        [TRANSFER, "0x" + format(sender, "064x"), "0x" + format(receiver, "064x")],
        "0x" + format(value, "064x"),
        block,
        block_hash(block, branch),
        "0x" + branch.encode().hex() + format(block * 1000 + index, "060x"),
        0,
        index,
        1_700_000_000 + 12 * block,
    )


def _at_time(log: Log, timestamp: int) -> Log:
    log.block_timestamp = timestamp
    return log


class ForkableChain:
    def __init__(self, genesis_time: int = 1_700_000_000, block_time: int = 12) -> None:
        self.genesis_time = genesis_time
        self.block_time = block_time
        self.headers: dict[int, BlockHeader] = {}
        self.logs: dict[int, list[Log]] = {}
        self.branch_of: dict[int, str] = {}

    @property
    def head(self) -> int:
        return max(self.headers, default=0)

    def extend(self, last: int, branch: str, logs_of: Callable[[int, str], list[Log]]) -> None:
        """Add blocks head+1..last of ``branch``."""
        for number in range(self.head + 1, last + 1):
            parent = self.headers[number - 1].hash if number - 1 in self.headers else None
            timestamp = self.genesis_time + self.block_time * number
            self.headers[number] = BlockHeader(
                number, block_hash(number, branch), parent, timestamp
            )
            self.logs[number] = [_at_time(log, timestamp) for log in logs_of(number, branch)]
            self.branch_of[number] = branch

    def fork(
        self, first: int, last: int, branch: str, logs_of: Callable[[int, str], list[Log]]
    ) -> None:
        """Replace blocks from ``first`` on by ``branch`` up to ``last`` (may be shorter)."""
        for number in [n for n in self.headers if n >= first]:
            del self.headers[number]
            del self.logs[number]
            del self.branch_of[number]
        self.extend(last, branch, logs_of)

    def all_logs(self) -> list[Log]:
        return [log for n in sorted(self.logs) for log in self.logs[n]]


class ForkableSource:
    """Pages of ``page_blocks`` blocks; waits while the chain is shorter than asked."""

    def __init__(self, chain: ForkableChain, page_blocks: int = 1) -> None:
        self.chain = chain
        self.page_blocks = page_blocks

    async def head(self) -> int:
        return self.chain.head

    async def headers(self, numbers: list[int]) -> dict[int, BlockHeader]:
        return {n: self.chain.headers[n] for n in numbers if n in self.chain.headers}

    async def pages(
        self, from_block: int, to_block: int | None, filters: list[LogFilter]
    ) -> AsyncIterator[Page]:
        block = from_block
        while to_block is None or block <= to_block:
            if block > self.chain.head:
                await asyncio.sleep(0.005)
                continue
            last = min(block + self.page_blocks - 1, self.chain.head)
            if to_block is not None:
                last = min(last, to_block)
            logs = [x for n in range(block, last + 1) for x in self.chain.logs[n]]
            headers = {n: self.chain.headers[n] for n in range(block, last + 1)}
            yield Page(block, last, logs, headers)
            block = last + 1

    async def close(self) -> None:
        pass
