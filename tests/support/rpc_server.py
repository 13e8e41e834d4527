"""A scripted JSON-RPC node on loopback HTTP, serving real chain data with injected faults.

``RpcServer`` answers ``eth_blockNumber``, ``eth_chainId``, ``eth_getLogs`` and
``eth_getBlockByNumber`` (single and batched) from a :class:`Chain` built from real logs and
headers (``load_mainnet``, ``load_erigon_fixture``). The filtering of ``eth_getLogs`` and the
``logsBloom`` of headers that lack one are computed here, independently of evmflow's code.

Faults are set on the server by a test, each used up as it fires:

- ``refuse``: a function ``(from_block, to_block, matching_logs) -> error object | None``, the
  answer of a provider that finds the range too wide or too full;
- ``http_faults``: HTTP answers (status, headers) given instead of the next requests;
- ``stalls``: the next requests get no answer for ``stall_seconds``;
- ``logs_hooks`` / ``header_hooks``: one-shot edits of an answer (drop logs, change a hash);
  a hook returns the edited value, or ``None`` to leave the answer alone and stay armed.

Every JSON-RPC call received is recorded in ``calls`` as ``(method, params)``.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
import socket
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from eth_utils import keccak

DATA = Path("/work/shared/data")
Refusal = Callable[[int, int, int], dict | None]
LogsHook = Callable[[int, int, list[dict]], list[dict] | None]
HeaderHook = Callable[[int, dict], dict | None]


_BLOOMS: dict[tuple[str, int], str] = {}  # computed blooms by (block hash, number of logs)


def compute_bloom(logs: list[dict]) -> str:
    """The 2048-bit logs bloom of ``logs`` (yellow paper, section 4.3.1), as 0x-hex."""
    bloom = bytearray(256)
    for log in logs:
        items = [log["address"]] + list(log["topics"])
        for item in items:
            digest = keccak(bytes.fromhex(item[2:]))
            for pair in range(3):
                bit = int.from_bytes(digest[2 * pair : 2 * pair + 2], "big") % 2048
                bloom[255 - bit // 8] |= 1 << (bit % 8)
    return "0x" + bloom.hex()


class Chain:
    """Logs (as an RPC returns them) and headers by block number, with a movable head."""

    def __init__(self, logs: list[dict], headers: list[dict], head: int | None = None) -> None:
        self.logs_by_block: dict[int, list[dict]] = {}
        for log in logs:
            self.logs_by_block.setdefault(int(log["blockNumber"], 16), []).append(log)
        self.headers = {int(h["number"], 16): h for h in headers}
        self.head = head if head is not None else max(self.headers)

    def header(self, number: int) -> dict | None:
        raw = self.headers.get(number)
        if raw is None or number > self.head:
            return None
        answer = {k: v for k, v in raw.items() if k != "transactions"}
        answer["transactions"] = []
        if "logsBloom" not in answer:
            key = (raw["hash"], len(self.logs_by_block.get(number, [])))
            if key not in _BLOOMS:
                _BLOOMS[key] = compute_bloom(self.logs_by_block.get(number, []))
            answer["logsBloom"] = _BLOOMS[key]
        return answer

    def logs(self, query: dict) -> list[dict]:
        start, end = (
            _block(query.get("fromBlock"), self.head),
            _block(query.get("toBlock"), self.head),
        )
        addresses = query.get("address")
        if isinstance(addresses, str):
            addresses = [addresses]
        wanted = {a.lower() for a in addresses} if addresses else None
        topics = query.get("topics") or []
        found = []
        for number in range(start, end + 1):
            for log in self.logs_by_block.get(number, []):
                if wanted is not None and log["address"].lower() not in wanted:
                    continue
                if _topics_match(topics, log["topics"]):
                    found.append(log)
        return found


def _block(tag: Any, head: int) -> int:
    if tag is None or tag == "latest":
        return head
    if tag == "earliest":
        return 0
    return int(tag, 16)


def _topics_match(wanted: list, topics: list[str]) -> bool:
    for position, options in enumerate(wanted):
        if options is None:
            continue
        if position >= len(topics):
            return False
        choices = [options] if isinstance(options, str) else options
        if choices and topics[position].lower() not in {c.lower() for c in choices}:
            return False
    return True


def _read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as lines:
        return [json.loads(line) for line in lines]


def load_mainnet(name: str) -> tuple[list[dict], list[dict]]:
    """Logs and headers of ``/work/shared/data/mainnet/NAME.*.jsonl.gz``."""
    base = DATA / "mainnet"
    return _read_jsonl(base / f"{name}.logs.jsonl.gz"), _read_jsonl(
        base / f"{name}.blocks.jsonl.gz"
    )


def load_erigon_fixture(method: str, test: str) -> list[dict]:
    """The ``{request, response}`` pairs of one erigon rpc-tests fixture."""
    path = DATA / "rpc-fixtures" / "erigon" / method / f"{test}.json.gz"
    with gzip.open(path, "rt") as text:
        return json.load(text)


def free_port() -> int:
    """A loopback port nobody listens on (a "dead" URL once the socket is closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RpcServer:
    """The scripted node; ``async with RpcServer(chain) as server: server.url``."""

    def __init__(self, chain: Chain, *, chain_id: int = 1) -> None:
        self.chain = chain
        self.chain_id = chain_id
        self.refuse: Refusal | None = None
        self.http_faults: deque[tuple[int, dict[str, str]]] = deque()
        self.stalls = 0
        self.stall_seconds = 5.0
        self.logs_hooks: list[LogsHook] = []
        self.header_hooks: list[HeaderHook] = []
        self.calls: list[tuple[str, Any]] = []
        self.http_requests = 0
        # (from, to, the filter as sorted JSON) of every refused eth_getLogs
        self.refused: list[tuple[int, int, bytes]] = []
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def __aenter__(self) -> RpcServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.http_requests += 1
        if self.stalls > 0:
            self.stalls -= 1
            try:
                await asyncio.wait_for(self._closing.wait(), self.stall_seconds)
            except TimeoutError:
                pass
        if self.http_faults:
            status, headers = self.http_faults.popleft()
            return web.Response(status=status, headers=headers, text="fault injected by test")
        body = orjson.loads(await request.read())
        if isinstance(body, list):
            answer: Any = [self._answer(item) for item in body]
        else:
            answer = self._answer(body)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    def _answer(self, call: dict) -> dict:
        method, params = call["method"], call.get("params") or []
        self.calls.append((method, copy.deepcopy(params)))
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": call.get("id")}
        if method == "eth_blockNumber":
            reply["result"] = hex(self.chain.head)
        elif method == "eth_chainId":
            reply["result"] = hex(self.chain_id)
        elif method == "eth_getBlockByNumber":
            number = _block(params[0], self.chain.head)
            header = self.chain.header(number)
            if header is not None:
                header = self._run_hooks(self.header_hooks, number, header)
            reply["result"] = header
        elif method == "eth_getLogs":
            query = params[0]
            start = _block(query.get("fromBlock"), self.chain.head)
            end = _block(query.get("toBlock"), self.chain.head)
            error = None
            if end > self.chain.head:
                error = {"code": -32602, "message": "block range extends beyond current head block"}
            logs = self.chain.logs(query) if error is None else []
            if error is None and self.refuse is not None:
                error = self.refuse(start, end, len(logs))
                if error is not None:
                    self.refused.append(
                        (start, end, orjson.dumps(query, option=orjson.OPT_SORT_KEYS))
                    )
            if error is not None:
                reply["error"] = error
            else:
                logs = [{**log, "topics": list(log["topics"])} for log in logs]
                reply["result"] = self._run_hooks(self.logs_hooks, start, end, logs)
        else:
            reply["error"] = {"code": -32601, "message": f"the method {method} does not exist"}
        return reply

    @staticmethod
    def _run_hooks(hooks: list, *args: Any) -> Any:
        value = args[-1]
        for hook in list(hooks):
            edited = hook(*args[:-1], value)
            if edited is not None:
                # one hook fires per answer, so N copies of a hook spoil N answers
                hooks.remove(hook)
                return edited
        return value
