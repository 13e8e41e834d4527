"""A source over local files of logs and block headers in the shape a JSON-RPC node returns.

The logs file holds one ``eth_getLogs`` result object a line, the blocks file one
``eth_getBlockByNumber`` object a line (only ``number``, ``hash``, ``parentHash`` and
``timestamp`` are read); either may be gzipped (by the ``.gz`` suffix). Both must be sorted:
logs by (block, log index), blocks by number.

Design: archives can hold millions of logs, so both files are streamed, never loaded whole,
and each file is read once per ``pages`` call, as a merge of the two sorted streams. Most
lines of a large archive do not match the filters (or lie before the resume block), so a
line is first looked at as bytes: its block number, address and topic0 are cut out with
``bytes.find`` and the line is skipped when they rule it out. Only lines that may match are
parsed with orjson and checked exactly. The cut-out block number of every line also checks
the order of the whole file, so an unsorted file fails loudly instead of giving misordered
pages.

Pages are block ranges of ``page_blocks`` blocks, ended early at a block boundary once they
hold ``max_page_logs`` logs (memory stays bounded however dense the blocks are). A stretch
with no matching log is given as one empty page up to the block before the next match, so a
sparse archive spanning millions of blocks does not cost millions of pages.

Parsing runs in a worker thread (one page at a time) so the event loop stays responsive.

# Limitation: only JSONL archives are read; cryo's parquet files are not supported yet and
# need converting to JSONL (one eth_getLogs object a line) first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import TypeVar

import orjson

from ..errors import SourceError
from . import _archive_worker as _worker
from .base import BlockHeader, Log, LogFilter, Page

logger = logging.getLogger(__name__)
T = TypeVar("T")

_BLOCK_KEY = b'"blockNumber":"'
_ADDRESS_KEY = b'"address":"'
_TOPICS_KEY = b'"topics":["'
_NOT_WANTED: frozenset[bytes] = frozenset()


_CHUNK = 1 << 20
_UPPER_HEX = (b"A", b"B", b"C", b"D", b"E", b"F", b"X")
# Logs files from this size on are read in a child process when the source is not told.
PROCESS_MIN_BYTES = 1 << 20
PROCESS_PAGE_LOGS = 5000


def _lines(path: Path) -> Generator[bytes, None, None]:
    """The lines of a file (without their newline), gunzipped when its name ends in ``.gz``.

    Reads megabyte chunks and splits them: ``gzip.open(...).readline`` spends more in
    per-line Python calls than parsing the line costs.
    """
    with open(path, "rb") as raw:
        inflate = zlib.decompressobj(wbits=31) if path.suffix == ".gz" else None
        rest = b""
        count = 0
        empty = True
        while chunk := raw.read(_CHUNK):
            empty = False
            if inflate is None:
                data = chunk
            else:
                parts = []
                try:
                    while chunk:
                        if inflate.eof:
                            # Zero bytes after a member are padding, as gzip itself allows.
                            chunk = chunk.lstrip(b"\0")
                            if not chunk:
                                break
                            # gzip and pigz may write several members, one after the other.
                            inflate = zlib.decompressobj(wbits=31)
                        parts.append(inflate.decompress(chunk))
                        chunk = inflate.unused_data
                except zlib.error as exc:
                    raise SourceError(
                        f"{path}: not a readable gzip file (after line {count}): {exc}"
                    ) from exc
                data = b"".join(parts)
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            count += len(lines)
            yield from lines
        if inflate is not None and not inflate.eof and not empty:
            raise SourceError(
                f"{path}: the gzip data ends early, after line {count} (a truncated file?)"
            )
        if rest:
            yield rest


class _Matcher:
    """Does a log match any of the filters? Answers on lowercase address and topic0."""

    def __init__(self, filters: list[LogFilter]) -> None:
        # topic0 -> addresses (None: any address); filters with no topic0 match any topic0.
        self.by_topic: dict[str, set[str] | None] = {}
        self.any_topic: set[str] | None = set()
        self.any_topic_all = False
        for log_filter in filters:
            addresses = (
                None if log_filter.addresses is None else {a.lower() for a in log_filter.addresses}
            )
            if not log_filter.topic0s:
                if addresses is None:
                    self.any_topic_all = True
                else:
                    assert self.any_topic is not None
                    self.any_topic |= addresses
                continue
            for topic0 in log_filter.topic0s:
                key = topic0.lower()
                if key in self.by_topic and self.by_topic[key] is None:
                    continue
                if addresses is None:
                    self.by_topic[key] = None
                else:
                    self.by_topic.setdefault(key, set()).update(addresses)  # type: ignore[union-attr]
        self.matches_nothing = not self.by_topic and not self.any_topic and not self.any_topic_all
        # The same, in bytes, for looking at raw lines before parsing them.
        self._by_topic_bytes = {
            t.encode(): None if a is None else {x.encode() for x in a}
            for t, a in self.by_topic.items()
        }
        self._any_topic_bytes = {x.encode() for x in self.any_topic or ()}

    def matches(self, address: str, topic0: str | None) -> bool:
        if self.any_topic_all:
            return True
        if self.any_topic and address in self.any_topic:
            return True
        if topic0 is None or topic0 not in self.by_topic:
            return False
        addresses = self.by_topic[topic0]
        return addresses is None or address in addresses

    def may_match(self, line: bytes) -> bool:
        """False only when the raw line surely does not match; True when unsure."""
        if self.any_topic_all:
            return True
        start = line.find(_TOPICS_KEY)
        if start < 0:
            # No topic, or JSON spelt with spaces: let the exact check decide.
            return True
        start += len(_TOPICS_KEY)
        addresses = self._by_topic_bytes.get(line[start : start + 66].lower(), _NOT_WANTED)
        if addresses is None:
            return True
        if addresses is _NOT_WANTED and not self._any_topic_bytes:
            return False
        start = line.find(_ADDRESS_KEY)
        if start < 0:
            return True
        start += len(_ADDRESS_KEY)
        address = line[start : start + 42].lower()
        return address in addresses or address in self._any_topic_bytes


# A log as a row: the arguments of Log(...) in order, which is also the shape the reader
# process marshals. These are the positions the page building reads.
_BLOCK, _HASH, _INDEX, _TIMESTAMP = 3, 4, 7, 8
_DISTINCT_LIMIT = 100_000


class _LogStream:
    """The matching logs of blocks ``from_block..to_block`` of the logs file, in order, as
    rows (see ``_BLOCK``).

    Stops reading at the first line past ``to_block``: the order of the rest is not checked.

    Addresses, topics and hashes that recur (one contract, one event signature, the logs of
    one block or transaction) are given as one shared string: the reader process's marshal
    then writes each once a page, and the indexer builds each once.
    """

    def __init__(self, path: Path, from_block: int, to_block: int, matcher: _Matcher) -> None:
        self.path = path
        self.from_block = from_block
        self.to_block = to_block
        self.matcher = matcher
        self._distinct: dict[str, str] = {}

    # Lines are handled in chunks. Where most lines match (a dense archive), a chunk is parsed
    # with one orjson call and checked on the parsed objects; where few do, each line is
    # first looked at as bytes (see the module docstring). Irregular lines (blank, malformed,
    # misordered) send their chunk to the line-by-line path, which names the line at fault.
    CHUNK_LINES = 2048

    def __iter__(self) -> Iterator[tuple]:
        self._previous_block = -1
        self._previous_key = (-1, -1)
        dense = False
        line_no = 0
        lines = _lines(self.path)
        with contextlib.closing(lines):
            while chunk := list(itertools.islice(lines, self.CHUNK_LINES)):
                first = line_no + 1
                line_no += len(chunk)
                done = self._parse_chunk(chunk) if dense else None
                if done is None:
                    done = self._line_by_line(chunk, first)
                logs, stop, candidates = done
                yield from logs
                if stop:
                    return
                dense = candidates * 2 > len(chunk)

    def _parse_chunk(self, chunk: list[bytes]) -> tuple[list[tuple], bool, int] | None:
        """The chunk's logs, whether the range ended in it, and how many lines were in range
        and matched; None when a line is irregular. Changes no state before it succeeds."""
        joined = b",".join(chunk)
        try:
            raws = orjson.loads(b"[" + joined + b"]")
        except orjson.JSONDecodeError:
            return None
        # Nodes write hex in lowercase; a chunk without any uppercase hex digit needs no
        # str.lower() per value (the keys hold none of A-F and X either).
        lower = any(digit in joined for digit in _UPPER_HEX)
        from_block, to_block, matches = self.from_block, self.to_block, self.matcher.matches
        previous_block, previous_key = self._previous_block, self._previous_key
        if len(self._distinct) > _DISTINCT_LIMIT:
            self._distinct.clear()
        same = self._distinct.setdefault
        logs: list[tuple] = []
        stop = False
        # Consecutive logs mostly share their block (number, hash, timestamp) and
        # transaction: parse each hex number once and compare the next one's text to it.
        number_hex: object = None
        block = -1
        ts_hex: object = None
        ts: int | None = None
        index_hex: object = None
        tx_index = -1
        try:
            for raw in raws:
                number = raw["blockNumber"]
                if number != number_hex:
                    block = int(number, 16)
                    number_hex = number
                if block < previous_block:
                    return None
                previous_block = block
                if block > to_block:
                    stop = True
                    break
                if block < from_block or raw.get("removed") is True:
                    continue
                address, topics, data = raw["address"], raw["topics"], raw["data"]
                block_hash, tx_hash = raw["blockHash"], raw["transactionHash"]
                # Anything but strings where strings belong goes to the path that names it
                # (join raises TypeError for a topic that is not a string).
                if (
                    type(topics) is not list
                    or type(address) is not str
                    or type(data) is not str
                    or type(block_hash) is not str
                    or type(tx_hash) is not str
                    or type("".join(topics)) is not str
                ):
                    return None
                if lower:
                    address, data = address.lower(), data.lower()
                    block_hash, tx_hash = block_hash.lower(), tx_hash.lower()
                    topics = [t.lower() for t in topics]
                address = same(address, address)
                if not matches(address, topics[0] if topics else None):
                    continue
                log_index = int(raw["logIndex"], 16)
                key = (block, log_index)
                if key <= previous_key:
                    return None
                previous_key = key
                stamp = raw.get("blockTimestamp")
                if stamp != ts_hex:
                    ts = None if stamp is None else int(stamp, 16)
                    ts_hex = stamp
                index = raw["transactionIndex"]
                if index != index_hex:
                    tx_index = int(index, 16)
                    index_hex = index
                logs.append(
                    (
                        address,
                        [same(t, t) for t in topics],
                        data,
                        block,
                        same(block_hash, block_hash),
                        same(tx_hash, tx_hash),
                        tx_index,
                        log_index,
                        ts,
                    )
                )
        except (KeyError, ValueError, TypeError, AttributeError, IndexError):
            return None
        self._previous_block, self._previous_key = previous_block, previous_key
        return logs, stop, len(logs)

    def _line_by_line(self, chunk: list[bytes], first: int) -> tuple[list[tuple], bool, int]:
        path, from_block, to_block, matcher = (
            self.path,
            self.from_block,
            self.to_block,
            self.matcher,
        )
        logs: list[tuple] = []
        candidates = 0
        for line_no, line in enumerate(chunk, first):
            block = _cut_block_number(line)
            raw: dict | None = None
            if block is None:
                if not line.strip():
                    continue
                raw = _parse(line, path, line_no)
                block = _hex_field(raw, "blockNumber", path, line_no)
            if block < self._previous_block:
                raise _unsorted(
                    path, line_no, f"block {block} follows block {self._previous_block}"
                )
            self._previous_block = block
            if block > to_block:
                return logs, True, candidates
            if block < from_block or not matcher.may_match(line):
                continue
            candidates += 1
            if raw is None:
                raw = _parse(line, path, line_no)
            log = _build(Log.from_rpc, raw, path, line_no, _LOG_FIELDS)
            if raw.get("removed") is True:
                continue
            if not matcher.matches(log.address, log.topics[0] if log.topics else None):
                continue
            key = (log.block_number, log.log_index)
            previous_key = self._previous_key
            if key <= previous_key:
                what = "repeats" if key == previous_key else "comes after"
                raise _unsorted(
                    path,
                    line_no,
                    f"log {log.log_index} of block {log.block_number} {what} log "
                    f"{previous_key[1]} of block {previous_key[0]}",
                )
            self._previous_key = key
            logs.append(
                (
                    log.address,
                    log.topics,
                    log.data,
                    log.block_number,
                    log.block_hash,
                    log.transaction_hash,
                    log.transaction_index,
                    log.log_index,
                    log.block_timestamp,
                )
            )
        return logs, False, candidates


class _BlockStream:
    """Block headers of the blocks file in ascending order; ``get`` moves forward only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lines: Iterator[tuple[int, bytes]] | None = None
        self._file: Generator[bytes, None, None] | None = None
        self._current: BlockHeader | None = None
        self._done = path is None
        self._previous = -1

    def get(self, number: int) -> BlockHeader | None:
        """The header of block ``number`` if the file has it; never call with a smaller one."""
        while not self._done and (self._current is None or self._current.number < number):
            self._advance()
        if self._current is not None and self._current.number == number:
            return self._current
        return None

    def _advance(self) -> None:
        assert self.path is not None
        if self._lines is None:
            self._file = _lines(self.path)
            self._lines = enumerate(self._file, 1)
        for line_no, line in self._lines:
            if not line.strip():
                continue
            raw = _parse(line, self.path, line_no)
            header = _build(BlockHeader.from_rpc, raw, self.path, line_no, _BLOCK_FIELDS)
            if header.number <= self._previous:
                what = "repeats" if header.number == self._previous else "follows"
                raise _unsorted(
                    self.path, line_no, f"block {header.number} {what} block {self._previous}"
                )
            self._previous = header.number
            self._current = header
            return
        self._done = True
        self.close()

    def last_number(self) -> int:
        """The highest block number of the file (-1 if none); reads to the end."""
        try:
            while not self._done:
                self._advance()
        finally:
            self.close()
        return self._previous

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _cut_block_number(line: bytes) -> int | None:
    start = line.find(_BLOCK_KEY)
    if start < 0:
        return None
    start += len(_BLOCK_KEY)
    end = line.find(b'"', start)
    try:
        return int(line[start:end], 16)
    except ValueError:
        return None


def _parse(line: bytes, path: Path, line_no: int) -> dict:
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise SourceError(f"{path}:{line_no}: not a JSON object: {exc}") from exc
    if not isinstance(raw, dict):
        raise SourceError(f"{path}:{line_no}: expected a JSON object, got {type(raw).__name__}")
    return raw


_LOG_FIELDS = (
    "an eth_getLogs log object with address, topics, data, blockNumber, blockHash, "
    "transactionHash, transactionIndex and logIndex"
)
_BLOCK_FIELDS = "a block object with number, hash and timestamp (parentHash where known)"


def _build(from_rpc: Callable[[dict], T], raw: dict, path: Path, line_no: int, shape: str) -> T:
    try:
        return from_rpc(raw)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise SourceError(
            f"{path}:{line_no}: expected {shape}; {_what_is_wrong(raw, exc)}"
        ) from exc


def _what_is_wrong(raw: dict, exc: Exception) -> str:
    """The field at fault, where one can be named."""
    if isinstance(exc, KeyError):
        return f"field {exc.args[0]!r} is missing"
    topics = raw.get("topics", [])
    if type(topics) is not list or any(type(t) is not str for t in topics):
        return f"field 'topics' must be a list of hex strings, got {topics!r:.80}"
    for name in _HEX_FIELDS:
        value = raw.get(name, "")
        if type(value) is not str and not (value is None and name in _OPTIONAL_FIELDS):
            return f"field {name!r} must be a hex string, got {type(value).__name__} {value!r:.80}"
    return f"got an error: {exc!r}"


_HEX_FIELDS = (
    "address",
    "data",
    "blockNumber",
    "blockHash",
    "transactionHash",
    "transactionIndex",
    "logIndex",
    "blockTimestamp",
    "number",
    "hash",
    "parentHash",
    "timestamp",
)
_OPTIONAL_FIELDS = ("blockTimestamp", "parentHash")


def _hex_field(raw: dict, field: str, path: Path, line_no: int) -> int:
    value = raw.get(field)
    try:
        return int(value, 16)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise SourceError(
            f'{path}:{line_no}: field {field!r} must be a hex string like "0x1a", got {value!r}'
        ) from exc


def _unsorted(path: Path, line_no: int, what: str) -> SourceError:
    return SourceError(
        f"{path}:{line_no}: the file is not sorted: {what}. An archive must be sorted by "
        "block number (logs also by log index within a block) with no duplicates: sort it "
        "numerically by those fields, or regenerate it."
    )


class ArchiveSource:
    """Logs and headers from local JSONL files (see the module docstring).

    ``last_block`` declares the archive's last block when it is above the highest block
    present in the files (trailing blocks without logs); ``head()`` and ``to_block=None``
    then reach it. ``unknown_timestamp``, when given, is the timestamp of a block with logs
    that neither file dates (its header gets no parent hash); by default such a block is an
    error, since a made-up timestamp would end up in the user's entities.
    """

    def __init__(
        self,
        logs_file: str | Path,
        blocks_file: str | Path | None = None,
        page_blocks: int = 1000,
        *,
        max_page_logs: int = 20_000,
        last_block: int | None = None,
        unknown_timestamp: int | None = None,
        process: bool | None = None,
    ) -> None:
        if page_blocks < 1 or max_page_logs < 1:
            raise ValueError("page_blocks and max_page_logs must be at least 1")
        self.logs_file = Path(logs_file)
        self.blocks_file = Path(blocks_file) if blocks_file is not None else None
        for path in (self.logs_file, self.blocks_file):
            if path is not None and not path.is_file():
                raise SourceError(f"archive file {path} does not exist")
        self.page_blocks = page_blocks
        self.max_page_logs = max_page_logs
        self.last_block = last_block
        self.unknown_timestamp = unknown_timestamp
        # Parse in a child process (see _archive_worker): None decides by the file's size.
        self.process = (
            process if process is not None else self.logs_file.stat().st_size >= PROCESS_MIN_BYTES
        )
        self._highest: int | None = None

    def __repr__(self) -> str:
        return f"ArchiveSource({str(self.logs_file)!r})"

    async def head(self) -> int:
        """The highest block of either file, or ``last_block`` when that is higher."""
        if self._highest is None:
            self._highest = await asyncio.to_thread(self._scan_highest)
        return self._highest

    async def close(self) -> None:
        return None

    async def pages(
        self, from_block: int, to_block: int | None, filters: list[LogFilter]
    ) -> AsyncIterator[Page]:
        """Pages covering exactly ``from_block..to_block`` (``None``: to the archive's end)."""
        # With to_block=None the pages stop at the archive's last block, since the files do
        # not grow; a chain that goes on over RPC switches there (handover.py).
        end = to_block if to_block is not None else await self.head()
        logger.debug("%s: pages of blocks %d..%d", self.logs_file, from_block, end)
        child = _Child(self, from_block, end, filters) if self.process else None
        pages = child.pages() if child is not None else self._iter_pages(from_block, end, filters)
        try:
            while True:
                page = await asyncio.to_thread(next, pages, None)
                if page is None:
                    return
                yield page
        finally:
            if child is not None:
                child.stop()
            # Cancelled while a worker thread still runs next(): the generator cannot be closed
            # from here ("already executing"); it closes its files when it is collected.
            with contextlib.suppress(ValueError):
                pages.close()

    def _scan_highest(self) -> int:
        highest = -1
        lines = _lines(self.logs_file)
        with contextlib.closing(lines):
            for line_no, line in enumerate(lines, 1):
                block = _cut_block_number(line)
                if block is None and line.strip():
                    block = _hex_field(
                        _parse(line, self.logs_file, line_no),
                        "blockNumber",
                        self.logs_file,
                        line_no,
                    )
                if block is not None and block > highest:
                    highest = block
        if self.blocks_file is not None:
            highest = max(highest, _BlockStream(self.blocks_file).last_number())
        if self.last_block is not None:
            highest = max(highest, self.last_block)
        if highest < 0:
            raise SourceError(
                f"{self.logs_file}: the archive holds no block; give last_block to say how "
                "far it reaches"
            )
        return highest

    def _iter_pages(
        self, from_block: int, end: int, filters: list[LogFilter], rows: bool = False
    ) -> Generator[Page, None, None]:
        """The pages; with ``rows``, their logs are left as rows (the reader process
        marshals them as they are) instead of :class:`Log` objects."""
        matcher = _Matcher(filters)
        logs: Iterator[tuple] = (
            iter(())
            if matcher.matches_nothing
            else iter(_LogStream(self.logs_file, from_block, end, matcher))
        )
        headers = _BlockStream(self.blocks_file)
        try:
            pending = next(logs, None)
            cursor = from_block
            while cursor <= end:
                page_end = min(cursor + self.page_blocks - 1, end)
                if pending is None or pending[_BLOCK] > page_end:
                    # No match in this range: stretch the empty page to the next match.
                    page_end = end if pending is None else min(pending[_BLOCK] - 1, end)
                    page_logs: list = []
                else:
                    page_logs, pending, page_end = self._take(logs, pending, page_end)
                found = self._headers(page_logs, page_end, headers)
                if not rows:
                    page_logs = [Log(*row) for row in page_logs]
                yield Page(cursor, page_end, page_logs, found)
                cursor = page_end + 1
        finally:
            headers.close()
            close = getattr(logs, "close", None)
            if close is not None:
                close()

    def _take(
        self, logs: Iterator[tuple], pending: tuple, page_end: int
    ) -> tuple[list[tuple], tuple | None, int]:
        """The logs up to ``page_end``, or up to the block where the page gets full."""
        page_logs: list[tuple] = []
        current: tuple | None = pending
        limit = self.max_page_logs
        while current is not None and current[_BLOCK] <= page_end:
            if len(page_logs) >= limit and current[_BLOCK] != page_logs[-1][_BLOCK]:
                page_end = page_logs[-1][_BLOCK]
                break
            page_logs.append(current)
            current = next(logs, None)
        return page_logs, current, page_end

    def _headers(
        self, page_logs: list[tuple], page_end: int, headers: _BlockStream
    ) -> dict[int, BlockHeader]:
        found: dict[int, BlockHeader] = {}
        known: BlockHeader | None = None
        for row in page_logs:
            number = row[_BLOCK]
            if known is not None and known.number == number:
                if known.hash != row[_HASH]:
                    raise self._hash_conflict(row, known.hash)
                continue
            # The logs of one block are contiguous (the file is sorted).
            known = found[number] = self._header(row, headers)
        if page_end not in found:
            header = headers.get(page_end)
            if header is not None:
                found[page_end] = header
        return found

    def _header(self, row: tuple, headers: _BlockStream) -> BlockHeader:
        """The header of the block of a page's first log of that block."""
        number, block_hash, timestamp = row[_BLOCK], row[_HASH], row[_TIMESTAMP]
        header = headers.get(number)
        if header is not None:
            if header.hash != block_hash:
                raise self._hash_conflict(row, header.hash)
            if timestamp not in (None, header.timestamp):
                raise SourceError(
                    f"{self.logs_file}: block {number}: its logs say timestamp "
                    f"{timestamp}, {self.blocks_file} says {header.timestamp}; "
                    "the two files come from different chains or versions of the block"
                )
            return header
        if timestamp is not None:
            return BlockHeader(number, block_hash, None, timestamp)
        if self.unknown_timestamp is not None:
            return BlockHeader(number, block_hash, None, self.unknown_timestamp)
        where = (
            f"{self.blocks_file} has no such block"
            if self.blocks_file is not None
            else "no blocks file was given"
        )
        raise SourceError(
            f"{self.logs_file}: no timestamp for block {number}: its logs "
            f"carry no blockTimestamp and {where}. Add the block's header (number, "
            "hash, parentHash, timestamp) to the blocks file, or pass unknown_timestamp "
            "if the timestamps do not matter."
        )

    def _hash_conflict(self, row: tuple, other_hash: str) -> SourceError:
        return SourceError(
            f"{self.logs_file}: block {row[_BLOCK]} has two hashes, {other_hash} and "
            f"{row[_HASH]} (log {row[_INDEX]}): the archive mixes two versions of the "
            "block (a reorg); keep only the canonical one in both files"
        )


class _Child:
    """An archive reader process for one ``pages`` call, and its pages as they arrive."""

    def __init__(
        self, source: ArchiveSource, from_block: int, end: int, filters: list[LogFilter]
    ) -> None:
        self.logs_file = source.logs_file
        job = {
            "logs_file": source.logs_file,
            "blocks_file": source.blocks_file,
            "page_blocks": source.page_blocks,
            # Smaller pages than in a thread: the first arrives sooner, and the pipe carries
            # the same logs either way.
            "max_page_logs": min(source.max_page_logs, PROCESS_PAGE_LOGS),
            "last_block": source.last_block,
            "unknown_timestamp": source.unknown_timestamp,
            "chunk_lines": _LogStream.CHUNK_LINES,
            "from_block": from_block,
            "end": end,
            "filters": filters,
        }
        # The child imports this very package, wherever it was loaded from.
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}
        self.proc = subprocess.Popen(
            # -P: not the current directory first on the path, where a user's own
            # evmflow.py would shadow the package.
            [sys.executable, "-P", "-m", "evmflow.sources._archive_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
            self.proc.stdin.close()
        except BrokenPipeError:
            pass  # it died at once; pages() reports how

    def pages(self) -> Generator[Page, None, None]:
        out = self.proc.stdout
        assert out is not None
        while True:
            head = out.read(_worker.FRAME.size)
            if len(head) < _worker.FRAME.size:
                raise self._ended_early()
            kind, size = _worker.FRAME.unpack(head)
            body = out.read(size)
            if len(body) < size:
                raise self._ended_early()
            if kind == _worker.PAGE:
                yield _worker.load_page(body)
            elif kind == _worker.END:
                return
            elif kind == _worker.ERROR:
                raise SourceError(body.decode())
            else:
                raise SourceError(
                    f"{self.logs_file}: the archive reader process failed:\n{body.decode()}"
                )

    def _ended_early(self) -> SourceError:
        code = self.proc.wait()
        how = (
            f"was killed by signal {-code}"
            if code < 0
            else f"exited with code {code} (its messages are above)"
        )
        return SourceError(
            f"{self.logs_file}: the archive reader process {how} before the end of the "
            "pages; run again, or set 'reader: thread' on the archive to read in the "
            "indexer's own process"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
