"""What every data source gives the engine: ordered pages of logs with their block headers.

A source owns how it gets the logs (block range sizes, concurrency, retries, following the
head). The engine only asks for pages from a block on and consumes them in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol


class Log:
    """One raw log, as ``eth_getLogs`` returns it, with the numbers parsed.

    ``address`` and every hex string are lowercase with a ``0x`` prefix.
    """

    __slots__ = (
        "address",
        "topics",
        "data",
        "block_number",
        "block_hash",
        "transaction_hash",
        "transaction_index",
        "log_index",
        "block_timestamp",
    )

    def __init__(
        self,
        address: str,
        topics: list[str],
        data: str,
        block_number: int,
        block_hash: str,
        transaction_hash: str,
        transaction_index: int,
        log_index: int,
        block_timestamp: int | None = None,
    ) -> None:
        self.address = address
        self.topics = topics
        self.data = data
        self.block_number = block_number
        self.block_hash = block_hash
        self.transaction_hash = transaction_hash
        self.transaction_index = transaction_index
        self.log_index = log_index
        self.block_timestamp = block_timestamp

    @classmethod
    def from_rpc(cls, raw: dict) -> Log:
        """Build a log from one object of an ``eth_getLogs`` answer."""
        ts = raw.get("blockTimestamp")
        topics = raw["topics"]
        if type(topics) is not list:
            raise TypeError(f"topics must be a list, not {type(topics).__name__}")
        return cls(
            raw["address"].lower(),
            [t.lower() for t in topics],
            raw["data"].lower(),
            int(raw["blockNumber"], 16),
            raw["blockHash"].lower(),
            raw["transactionHash"].lower(),
            int(raw["transactionIndex"], 16),
            int(raw["logIndex"], 16),
            int(ts, 16) if ts is not None else None,
        )

    def __repr__(self) -> str:
        return f"Log(block={self.block_number}, index={self.log_index}, address={self.address})"


@dataclass(slots=True, frozen=True)
class BlockHeader:
    number: int
    hash: str
    parent_hash: str | None
    timestamp: int

    @classmethod
    def from_rpc(cls, raw: dict) -> BlockHeader:
        parent = raw.get("parentHash")
        return cls(
            int(raw["number"], 16),
            raw["hash"].lower(),
            parent.lower() if parent else None,
            int(raw["timestamp"], 16),
        )


@dataclass(slots=True)
class LogFilter:
    """Which logs to fetch. ``addresses=None`` means any address (a wildcard contract)."""

    addresses: list[str] | None
    topic0s: list[str]
    # Allowed values of topics 1..3 (indexed parameters); None: any. Sources may use it to
    # fetch less; the engine checks it again on every log.
    topics: tuple[frozenset[str] | None, ...] = ()


@dataclass(slots=True)
class Page:
    """Every matching log of the blocks ``from_block..to_block`` (inclusive), in chain order.

    ``blocks`` holds a header for every block that has a log in ``logs`` (for its timestamp
    and hash) and, where the source knows it, for ``to_block``.
    """

    from_block: int
    to_block: int
    logs: list[Log]
    blocks: dict[int, BlockHeader] = field(default_factory=dict)


class Source(Protocol):
    """A chain's data source."""

    async def head(self) -> int:
        """The highest block the source can serve now."""
        ...

    def pages(
        self, from_block: int, to_block: int | None, filters: list[LogFilter]
    ) -> AsyncIterator[Page]:
        """Pages covering ``from_block`` to ``to_block`` without gap or overlap, in order.

        With ``to_block=None`` the source follows the head forever. The logs of one page match
        any of ``filters``, with no duplicates.
        """
        ...

    async def close(self) -> None: ...
