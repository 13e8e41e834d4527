"""The JSON-RPC source: logs by ``eth_getLogs``, headers by ``eth_getBlockByNumber``.

Design
------
A call to :meth:`RpcSource.pages` walks the chain in *block ranges*. Up to ``concurrency``
ranges are in flight at once, each as one task; the tasks are awaited in the order they were
started, so pages come out in chain order while later ranges already download. The deque of
tasks is the buffer: no task is started while ``concurrency`` of them are waiting, so memory
stays bounded however far ahead the node could serve.

One range may end up as several pages: when a node refuses a range (too many blocks or too many
logs, see :mod:`evmflow.sources.rpc_errors`), the task asks for a smaller range starting at the
same block, and for the rest afterwards. The refusal also shrinks the span used for the next
ranges; a few full-span successes in a row double it again, up to ``max_block_range`` and never
past a cap the provider stated.

Every page is checked before it leaves: all logs inside the page's range, one block hash per
block, headers agreeing with the logs' block hashes, and, where a fetched header has a
``logsBloom``, no block whose bloom says "maybe" for a filter that got no log there without a
second look. A page that fails a check is fetched again (bounded): load-balanced providers
answer from nodes at different heights, and such answers contradict themselves.

Transport faults (timeouts, refused connections, HTTP 5xx and 429) are retried with exponential
backoff and jitter, honouring ``Retry-After``. With several URLs, a failing URL is set aside for
``recover_after`` seconds and the next one serves; the first healthy URL in the user's order is
always preferred, so the source returns to the first URL once it has recovered.

URLs and headers often hold API keys: they appear in logs and errors only through
:func:`mask_url`, headers never.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import aiohttp
import orjson
from Crypto.Hash import keccak

from evmflow.errors import SourceError
from evmflow.sources.base import BlockHeader, Log, LogFilter, Page
from evmflow.sources.rpc_errors import RangeRefusal, classify_getlogs_error, next_to_block

logger = logging.getLogger(__name__)

__all__ = ["RpcSource", "mask_url", "bloom_may_contain", "retry_after_seconds"]


# --- secrets ----------------------------------------------------------------------------------

_KEYISH = re.compile(r"^[A-Za-z0-9_\-.~+=]{16,}$")
_SECRET_QUERY_NAMES = re.compile(r"key|token|secret|auth|pass|sig|credential", re.IGNORECASE)


def _looks_like_key(text: str) -> bool:
    # API keys are long, and mix digits with letters (or are long hex); plain words like
    # "mainnet" or "ethereum-rpc" are not.
    if not _KEYISH.match(text):
        return False
    has_digit = any(c.isdigit() for c in text)
    has_alpha = any(c.isalpha() for c in text)
    return has_digit and has_alpha or len(text) >= 24


def mask_url(url: str) -> str:
    """``url`` with its secrets replaced by ``***``: userinfo, key-like path segments and query
    values (any value of a parameter named like a key, and key-like values of the others)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    if parts.username is not None or parts.password is not None:
        host = f"***@{host}"
    path = "/".join("***" if _looks_like_key(seg) else seg for seg in parts.path.split("/"))
    query_items = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_QUERY_NAMES.search(name) or _looks_like_key(value):
            value = "***"
        query_items.append(f"{quote(name, safe='')}={quote(value, safe='*')}")
    return urlunsplit((parts.scheme, host, path, "&".join(query_items), ""))


# --- blooms -----------------------------------------------------------------------------------


def _bloom_bits(item: bytes) -> tuple[int, int, int]:
    digest = keccak.new(digest_bits=256, data=item).digest()
    return tuple(((digest[i] << 8) | digest[i + 1]) & 2047 for i in (0, 2, 4))  # type: ignore[return-value]


def _bloom_has(bloom: int, bits: tuple[int, int, int]) -> bool:
    return all(bloom >> bit & 1 for bit in bits)


def bloom_may_contain(
    logs_bloom: str, addresses: Iterable[str] | None, topic0s: Iterable[str]
) -> bool:
    """Whether a block with ``logs_bloom`` may hold a log of one of ``addresses`` (``None``: any)
    with one of ``topic0s`` as first topic. ``False`` is certain, ``True`` is only likely."""
    bloom = int(logs_bloom, 16)
    if addresses is not None and not any(
        _bloom_has(bloom, _bloom_bits(bytes.fromhex(a[2:]))) for a in addresses
    ):
        return False
    topic_list = list(topic0s)
    if not topic_list:
        return True
    return any(_bloom_has(bloom, _bloom_bits(bytes.fromhex(t[2:]))) for t in topic_list)


# --- retry timing -----------------------------------------------------------------------------


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` header (delta seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass
class SourceStats:
    """Counters the metrics endpoint reads: HTTP requests, failed ones, seconds spent."""

    requests: int = 0
    errors: int = 0
    retries: int = 0
    request_seconds: float = 0.0


# The number of logs one eth_getLogs answer should carry at most, when the node allows more.
TARGET_LOGS = 10_000
# The first block range asked for, before the range adapts to the chain's density.
INITIAL_SPAN = 10


class _TransportFault(Exception):
    """One failed exchange with one URL: worth retrying, maybe elsewhere."""

    def __init__(self, text: str, retry_after: float | None = None) -> None:
        super().__init__(text)
        self.retry_after = retry_after


class _RpcError(Exception):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, code: int | None, message: str, data: Any) -> None:
        super().__init__(f"JSON-RPC error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data


class _RangeRefused(Exception):
    def __init__(self, refusal: RangeRefusal, text: str) -> None:
        super().__init__(text)
        self.refusal = refusal


class _Inconsistent(Exception):
    """An answer that contradicts itself or the other answers of the same page."""


class _BehindHead(Exception):
    """The node answering does not have a block of the page (yet, or any more)."""


@dataclass
class _Endpoint:
    url: str
    masked: str
    set_aside_until: float = 0.0
    not_before: float = 0.0
    failures: int = 0


@dataclass
class _Filter:
    addresses: list[str] | None
    topic0s: list[str]
    address_set: frozenset[str] | None = field(default=None)
    topic_set: frozenset[str] = field(default_factory=frozenset)
    rest: list[list[str] | None] = field(default_factory=list)  # topics 1..3

    def params(self, from_block: int, to_block: int) -> dict[str, Any]:
        query: dict[str, Any] = {"fromBlock": hex(from_block), "toBlock": hex(to_block)}
        if self.addresses is not None:
            query["address"] = self.addresses
        if self.topic0s:
            query["topics"] = [self.topic0s, *self.rest]
        return query

    def matches(self, log: Log) -> bool:
        if self.address_set is not None and log.address not in self.address_set:
            return False
        if self.topic_set and (not log.topics or log.topics[0] not in self.topic_set):
            return False
        return True


def _prepare(filters: list[LogFilter]) -> list[_Filter]:
    prepared = []
    for f in filters:
        addresses = None if f.addresses is None else sorted({a.lower() for a in f.addresses})
        topics = sorted({t.lower() for t in f.topic0s})
        prepared.append(
            _Filter(
                addresses,
                topics,
                None if addresses is None else frozenset(addresses),
                frozenset(topics),
                [None if t is None else sorted(t) for t in f.topics],
            )
        )
    return prepared


class RpcSource:
    """A chain's logs and headers from one or more JSON-RPC URLs (fallbacks in order)."""

    def __init__(
        self,
        chain_id: int,
        urls: list[str],
        *,
        request_timeout: float = 30.0,
        max_block_range: int = 2000,
        concurrency: int = 4,
        poll_interval: float = 1.0,
        block_lag: int = 0,
        headers: dict[str, str] | None = None,
        max_retries: int = 8,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 120.0,
        recover_after: float = 30.0,
        consistency_retries: int = 5,
        grow_after: int = 3,
        header_batch_size: int = 100,
        check_blooms: bool = True,
    ) -> None:
        if not urls:
            raise ValueError("RpcSource needs at least one URL")
        if max_block_range < 1 or concurrency < 1:
            raise ValueError("max_block_range and concurrency must be at least 1")
        self.chain_id = chain_id
        self._endpoints = [_Endpoint(u, mask_url(u)) for u in urls]
        self.stats = SourceStats()
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._max_block_range = max_block_range
        self._concurrency = concurrency
        self._poll_interval = poll_interval
        self._block_lag = block_lag
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._max_retries = max_retries
        # While following the head, transport failures never end the run: a node that is down
        # is waited for (with capped backoff and a warning every tenth attempt).
        self._following = False
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_retry_after = max_retry_after
        self._recover_after = recover_after
        self._consistency_retries = consistency_retries
        self._grow_after = grow_after
        self._header_batch_size = header_batch_size
        self._check_blooms = check_blooms

        self._session: aiohttp.ClientSession | None = None
        self._next_id = 0
        self._active_url = 0
        # The span of the next range and the provider's stated cap; shared by all tasks.
        # Start small and grow: the first answer of a busy range must not hold every log of
        # max_block_range blocks at once.
        self._span = min(max_block_range, INITIAL_SPAN)
        self._ceiling = max_block_range
        self._successes = 0

    # --- public API ---------------------------------------------------------------------------

    async def head(self) -> int:
        """The highest block to serve now: the node's head minus ``block_lag`` (may be < 0)."""
        try:
            raw = await self._call("eth_blockNumber", [])
            return int(raw, 16) - self._block_lag
        except (_RpcError, _Inconsistent, TypeError, ValueError) as exc:
            raise SourceError(
                f"chain {self.chain_id}: eth_blockNumber at "
                f"{self._endpoints[self._active_url].masked} gave no block number: {exc}"
            ) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def pages(
        self, from_block: int, to_block: int | None, filters: list[LogFilter]
    ) -> AsyncIterator[Page]:
        """Pages from ``from_block`` to ``to_block`` (``None``: follow the head forever)."""
        prepared = _prepare(filters)
        self._following = to_block is None
        pending: deque[asyncio.Task[list[Page]]] = deque()
        planned = from_block
        served_up_to = -1  # the highest block the node has shown it can serve
        try:
            while True:
                if to_block is not None and planned > to_block and not pending:
                    return
                if len(pending) < self._concurrency and (to_block is None or planned <= to_block):
                    if planned > served_up_to and not pending:
                        served_up_to = await self.head()
                    limit = served_up_to if to_block is None else min(to_block, served_up_to)
                    while len(pending) < self._concurrency and planned <= limit:
                        end = min(limit, planned + self._span - 1)
                        pending.append(
                            asyncio.create_task(self._fetch_range(planned, end, prepared))
                        )
                        planned = end + 1
                if not pending:
                    # The head is at or below our position: wait for the chain to move on.
                    await asyncio.sleep(self._poll_interval)
                    continue
                for page in await pending.popleft():
                    yield page
        finally:
            for task in pending:
                task.cancel()
            for task in pending:
                try:
                    await task
                except BaseException:  # noqa: B036 - cancelled or failed, both are unwanted now
                    pass

    # --- ranges -------------------------------------------------------------------------------

    async def chain_ids(self) -> list[tuple[str, int | None]]:
        """Each URL (masked) with the chain id its node reports; None where it did not answer.

        Asked once at start: a URL of another chain must not be indexed under this one's id.
        """
        body = orjson.dumps({"jsonrpc": "2.0", "id": 0, "method": "eth_chainId", "params": []})
        found: list[tuple[str, int | None]] = []
        for endpoint in self._endpoints:
            try:
                answer = await self._post(endpoint, body)
                found.append((endpoint.masked, int(answer["result"], 16)))
            except Exception:  # down or odd: the fetch's retries and fallbacks deal with it
                found.append((endpoint.masked, None))
        return found

    async def headers(self, numbers: list[int]) -> dict[int, BlockHeader]:
        """Fresh headers of the given blocks (the reorg check asks again for known ones).

        A block the node does not have (a chain that got shorter in a reorg) is left out.
        """
        attempt = 0
        while True:
            try:
                found: dict[int, BlockHeader] = {}
                for number in numbers:
                    try:
                        raw = await self._get_headers([number])
                    except _BehindHead:
                        continue
                    found[number] = BlockHeader.from_rpc(raw[number])
                return found
            except _Inconsistent as exc:
                attempt += 1
                if attempt > self._consistency_retries:
                    raise SourceError(
                        f"chain {self.chain_id}: headers of blocks {numbers[0]}-{numbers[-1]} "
                        f"kept coming back inconsistent ({exc})"
                    ) from exc
                await asyncio.sleep(self._backoff(attempt))

    async def _fetch_range(self, first: int, last: int, filters: list[_Filter]) -> list[Page]:
        pages: list[Page] = []
        start = first
        end = last
        while start <= last:
            try:
                page = await self._fetch_page_checked(start, end, filters)
            except _RangeRefused as refused:
                end = self._after_refusal(start, end, refused)
                continue
            pages.append(page)
            self._after_success(end - start + 1, len(page.logs))
            self._fit_span_to_logs(end - start + 1, len(page.logs))
            start = end + 1
            end = min(last, start + self._span - 1)
        return pages

    def _after_refusal(self, start: int, end: int, refused: _RangeRefused) -> int:
        refusal = refused.refusal
        if refusal.max_blocks is not None and refusal.max_blocks < self._ceiling:
            self._ceiling = max(1, refusal.max_blocks)
            logger.info(
                "chain %s: the node caps eth_getLogs at %d blocks", self.chain_id, self._ceiling
            )
        new_end = next_to_block(start, end, refusal)
        if new_end is None:
            raise SourceError(
                f"chain {self.chain_id}: eth_getLogs refuses even the single block {start} "
                f"({refused}); use a node without a result limit, or filter fewer contracts"
            )
        self._span = max(1, min(self._span, new_end - start + 1))
        self._successes = 0
        logger.debug(
            "chain %s: eth_getLogs %d-%d refused (%s), next %d-%d",
            self.chain_id,
            start,
            end,
            refused,
            start,
            new_end,
        )
        return new_end

    def _fit_span_to_logs(self, span: int, logs: int) -> None:
        """Keep answers near TARGET_LOGS logs: a node without a result limit would otherwise
        answer a wide range with every log at once, and memory would follow."""
        if logs > TARGET_LOGS:
            self._span = max(1, min(self._span, span * TARGET_LOGS // logs))
            self._successes = 0

    def _after_success(self, span: int, logs: int = 0) -> None:
        if span < self._span or logs * 2 > TARGET_LOGS:
            return
        self._successes += 1
        if self._successes >= self._grow_after and self._span < self._ceiling:
            self._span = min(self._ceiling, self._span * 2)
            self._successes = 0
            logger.debug("chain %s: block range grows to %d", self.chain_id, self._span)

    # --- one page -----------------------------------------------------------------------------

    async def _fetch_page_checked(self, start: int, end: int, filters: list[_Filter]) -> Page:
        attempt = 0
        while True:
            try:
                return await self._fetch_page(start, end, filters)
            except _Inconsistent as exc:
                attempt += 1
                if attempt > self._consistency_retries:
                    raise SourceError(
                        f"chain {self.chain_id}: blocks {start}-{end} kept coming back "
                        f"inconsistent after {attempt} tries ({exc}) from "
                        f"{self._endpoints[self._active_url].masked}"
                    ) from exc
                logger.debug(
                    "chain %s: inconsistent answer, fetching again: %s", self.chain_id, exc
                )
                await asyncio.sleep(self._backoff(attempt))
            except _BehindHead as exc:
                # A node of a pool lagging, or a chain that shrank in a reorg: the blocks come
                # (back) with the head, so wait like for a new head, without a retry limit.
                # Limitation: a URL whose node stays behind forever stalls the source here
                # instead of failing over to the next URL.
                logger.debug("chain %s: %s; waiting", self.chain_id, exc)
                await asyncio.sleep(self._poll_interval)

    async def _get_logs(self, start: int, end: int, flt: _Filter) -> list[Log]:
        try:
            raw_logs = await self._call("eth_getLogs", [flt.params(start, end)])
        except _RpcError as exc:
            refusal = classify_getlogs_error(exc.code, exc.message, exc.data)
            if refusal is None:
                # "header not found" and the like: a node of a load-balanced pool lagging.
                raise _Inconsistent(f"eth_getLogs {start}-{end}: {exc}") from exc
            if refusal.beyond_head:
                raise _BehindHead(f"node is behind block {end}: {exc.message}") from exc
            raise _RangeRefused(refusal, f"{exc.code}: {exc.message}") from exc
        if not isinstance(raw_logs, list):
            raise _Inconsistent(f"eth_getLogs {start}-{end} answered {type(raw_logs).__name__}")
        return [Log.from_rpc(raw) for raw in raw_logs if not raw.get("removed")]

    async def _fetch_page(self, start: int, end: int, filters: list[_Filter]) -> Page:
        per_filter = await asyncio.gather(*(self._get_logs(start, end, f) for f in filters))
        logs = _merge(per_filter)
        hashes = _check_logs(logs, start, end)

        numbers = sorted(set(hashes) | {end})
        raw_headers = await self._get_headers(numbers)
        blocks: dict[int, BlockHeader] = {}
        for number in numbers:
            raw = raw_headers[number]
            header = BlockHeader.from_rpc(raw)
            if header.number != number:
                raise _Inconsistent(f"asked for block {number}, got block {header.number}")
            if number in hashes and hashes[number] != header.hash:
                raise _Inconsistent(
                    f"block {number}: logs say hash {hashes[number]}, header says {header.hash}"
                )
            blocks[number] = header

        for log in logs:
            if log.block_timestamp is None:
                log.block_timestamp = blocks[log.block_number].timestamp

        if self._check_blooms:
            await self._check_against_blooms(raw_headers, per_filter, filters)
        return Page(start, end, logs, blocks)

    async def _check_against_blooms(
        self,
        raw_headers: dict[int, dict],
        per_filter: list[list[Log]],
        filters: list[_Filter],
    ) -> None:
        # Limitation: only the headers a page fetches anyway (blocks with logs, and the page's
        # last block) are checked; a node that drops every log of another block goes unseen.
        # Fetching every header of every range would catch it, at many times the traffic.
        blocks_with_logs = [{log.block_number for log in found} for found in per_filter]
        for raw in raw_headers.values():
            bloom = raw.get("logsBloom")
            if not bloom:
                continue
            number = int(raw["number"], 16)
            for flt, has_logs in zip(filters, blocks_with_logs, strict=True):
                if number in has_logs:
                    continue
                if not bloom_may_contain(bloom, flt.addresses, flt.topic0s):
                    continue
                # The bloom says "maybe": ask once more for this block alone. Blooms give
                # false positives, so an empty second answer is normal.
                again = await self._get_logs(number, number, flt)
                if again:
                    logger.warning(
                        "chain %s: the node first returned no logs for block %d although its "
                        "bloom and a second request show %d; fetching the page again",
                        self.chain_id,
                        number,
                        len(again),
                    )
                    raise _Inconsistent(f"block {number}: logs missing from the first answer")

    async def _get_headers(self, numbers: list[int]) -> dict[int, dict]:
        found: dict[int, dict] = {}
        for i in range(0, len(numbers), self._header_batch_size):
            chunk = numbers[i : i + self._header_batch_size]
            answers = await self._batch("eth_getBlockByNumber", [[hex(n), False] for n in chunk])
            for number, answer in zip(chunk, answers, strict=True):
                if isinstance(answer, _RpcError):
                    raise _Inconsistent(f"block {number}: {answer}")
                if answer is None:
                    raise _BehindHead(f"block {number} is unknown to the node")
                if not isinstance(answer, dict):
                    raise _Inconsistent(f"block {number}: the header is not an object")
                found[number] = answer
        return found

    # --- transport ----------------------------------------------------------------------------

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=max(8, self._concurrency * 4))
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    def _request_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _call(self, method: str, params: list[Any]) -> Any:
        payload = {"jsonrpc": "2.0", "id": self._request_id(), "method": method, "params": params}
        answer = await self._exchange(method, orjson.dumps(payload))
        if not isinstance(answer, dict):
            raise _Inconsistent(f"{method}: answer is not a JSON-RPC object")
        error = answer.get("error")
        if error is not None:
            raise _rpc_error(error)
        return answer.get("result")

    async def _batch(self, method: str, params_list: list[list[Any]]) -> list[Any]:
        """One JSON-RPC batch; each item is its result or an ``_RpcError``."""
        ids = [self._request_id() for _ in params_list]
        payload = [
            {"jsonrpc": "2.0", "id": i, "method": method, "params": p}
            for i, p in zip(ids, params_list, strict=True)
        ]
        answer = await self._exchange(method, orjson.dumps(payload))
        if not isinstance(answer, list):
            # Some providers refuse batches with one error object: ask one by one.
            results: list[Any] = []
            for params in params_list:
                try:
                    results.append(await self._call(method, params))
                except _RpcError as exc:
                    results.append(exc)
            return results
        by_id = {item.get("id"): item for item in answer if isinstance(item, dict)}
        results = []
        for i in ids:
            item = by_id.get(i)
            if item is None:
                results.append(_RpcError(None, "missing from the batch answer", None))
            elif item.get("error") is not None:
                results.append(_rpc_error(item["error"]))
            else:
                results.append(item.get("result"))
        return results

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _pick_endpoint(self, now: float) -> tuple[int, _Endpoint]:
        for index, endpoint in enumerate(self._endpoints):
            if endpoint.set_aside_until <= now:
                return index, endpoint
        index = min(
            range(len(self._endpoints)),
            key=lambda i: (self._endpoints[i].not_before, self._endpoints[i].set_aside_until),
        )
        return index, self._endpoints[index]

    async def _exchange(self, method: str, body: bytes) -> Any:
        attempt = 0
        while True:
            now = time.monotonic()
            index, endpoint = self._pick_endpoint(now)
            if index != self._active_url:
                logger.info(
                    "chain %s: now using %s (was %s)",
                    self.chain_id,
                    endpoint.masked,
                    self._endpoints[self._active_url].masked,
                )
                self._active_url = index
            wait = endpoint.not_before - now
            if endpoint.set_aside_until > now:  # every URL is failing: back off
                wait = max(wait, self._backoff(attempt))
            if wait > 0:
                await asyncio.sleep(wait)

            try:
                answer = await self._post(endpoint, body)
            except _TransportFault as fault:
                attempt += 1
                self.stats.retries += 1
                self._set_aside(endpoint, fault)
                if attempt > self._max_retries and not self._following:
                    raise SourceError(
                        f"chain {self.chain_id}: {method} failed after {attempt} attempts; "
                        f"last at {endpoint.masked}: {fault}"
                    ) from fault
                log_at = logging.WARNING if attempt % 10 == 0 else logging.DEBUG
                logger.log(
                    log_at,
                    "chain %s: %s at %s failed (%s), attempt %d; retrying",
                    self.chain_id,
                    method,
                    endpoint.masked,
                    fault,
                    attempt,
                )
                continue
            endpoint.failures = 0
            return answer

    def _set_aside(self, endpoint: _Endpoint, fault: _TransportFault) -> None:
        now = time.monotonic()
        endpoint.failures += 1
        pause = fault.retry_after
        if pause is not None:
            endpoint.not_before = now + min(pause, self._max_retry_after)
        else:
            endpoint.not_before = now + self._backoff(endpoint.failures)
        endpoint.set_aside_until = max(endpoint.not_before, now + self._recover_after)

    async def _post(self, endpoint: _Endpoint, body: bytes) -> Any:
        session = self._session_now()
        self.stats.requests += 1
        started = time.perf_counter()
        try:
            async with session.post(endpoint.url, data=body, headers=self._headers) as response:
                content = await response.read()
                status = response.status
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        except TimeoutError as exc:
            self.stats.errors += 1
            raise _TransportFault("no answer within the request timeout") from exc
        except aiohttp.ClientError as exc:
            self.stats.errors += 1
            raise _TransportFault(f"{type(exc).__name__}: {_strip_url(str(exc))}") from exc
        finally:
            self.stats.request_seconds += time.perf_counter() - started
        if status >= 400:
            self.stats.errors += 1

        if status == 429 or status == 408 or status >= 500:
            raise _TransportFault(f"HTTP {status}", retry_after)
        try:
            answer = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise _TransportFault(f"HTTP {status} with a body that is not JSON") from exc
        if status >= 400 and not _has_rpc_error(answer):
            # 401/403 and the like: the URL or its key is wrong; another URL may work.
            raise _TransportFault(f"HTTP {status}")
        return answer


def _strip_url(text: str) -> str:
    # aiohttp puts the full URL, key included, in some exception texts.
    return re.sub(r"https?://\S+", lambda m: mask_url(m.group(0)), text)


def _has_rpc_error(answer: Any) -> bool:
    if isinstance(answer, dict):
        return answer.get("error") is not None
    if isinstance(answer, list):
        return any(isinstance(i, dict) and i.get("error") is not None for i in answer)
    return False


def _rpc_error(error: Any) -> _RpcError:
    if isinstance(error, dict):
        code = error.get("code")
        message = str(error.get("message", ""))
        return _RpcError(code if isinstance(code, int) else None, message, error.get("data"))
    return _RpcError(None, str(error), None)


def _merge(per_filter: list[list[Log]]) -> list[Log]:
    if len(per_filter) == 1:
        logs = per_filter[0]
        logs.sort(key=lambda log: (log.block_number, log.log_index))
    else:
        unique: dict[tuple[int, int], Log] = {}
        for found in per_filter:
            for log in found:
                unique.setdefault((log.block_number, log.log_index), log)
        logs = [unique[key] for key in sorted(unique)]
    deduped: list[Log] = []
    for log in logs:
        if deduped and (deduped[-1].block_number, deduped[-1].log_index) == (
            log.block_number,
            log.log_index,
        ):
            if deduped[-1].block_hash != log.block_hash:
                raise _Inconsistent(f"block {log.block_number}: logs with two block hashes")
            continue
        deduped.append(log)
    return deduped


def _check_logs(logs: list[Log], start: int, end: int) -> dict[int, str]:
    """The block hash of each block with a log; raises on a page that contradicts itself."""
    hashes: dict[int, str] = {}
    for log in logs:
        if not start <= log.block_number <= end:
            raise _Inconsistent(
                f"a log of block {log.block_number} in the answer for {start}-{end}"
            )
        known = hashes.setdefault(log.block_number, log.block_hash)
        if known != log.block_hash:
            raise _Inconsistent(f"block {log.block_number}: logs with two block hashes")
    return hashes
