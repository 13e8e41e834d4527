"""Run a real anvil node for tests and benchmarks.

``Anvil`` starts anvil on a free loopback port, waits until it answers and kills it on exit
(also when the Python process dies: Linux's parent-death signal), so no node is left behind.
Calls are plain synchronous JSON-RPC over one keep-alive HTTP connection.

``BenchToken`` wraps the ERC-20 of ``tests/support/contracts`` (see its README): real
``mint``/``transfer`` with balances, and ``spam``, which emits many ``Transfer`` logs cheaply.
``spam_transfers`` fills blocks with such logs quickly: automine off, one JSON-RPC batch of
transactions with explicit nonces per block, then ``evm_mine``.

A node started with ``dump_state=PATH`` writes its whole chain (blocks, receipts, logs) to
PATH when it stops; ``Anvil(load_state=PATH)`` brings the same blocks, hashes and logs back,
so a large dataset is generated once and reused.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from Crypto.Hash import keccak
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
BENCH_TOKEN_JSON = CONTRACTS_DIR / "BenchToken.json"

GAS_LIMIT = 300_000_000
# Measured on anvil 1.7.1: one spammed Transfer costs about 2,600 gas; leave a margin so a
# transaction never runs out of gas, and skip eth_estimateGas (slow with automine off).
SPAM_GAS_PER_EVENT = 3_000
SPAM_GAS_BASE = 60_000
# The first address of BenchToken.spam's pool; its addresses are POOL_BASE .. POOL_BASE+pool-1.
SPAM_POOL_BASE = 0x1000


class AnvilNotFound(RuntimeError):
    """No anvil binary where the helper looks for one."""


class AnvilStartError(RuntimeError):
    """anvil did not start or did not answer in time."""


class RpcError(RuntimeError):
    """A JSON-RPC error answer from the node."""

    def __init__(self, method: str, error: dict) -> None:
        self.method = method
        self.code = error.get("code")
        self.error_message = error.get("message", "")
        self.data = error.get("data")
        super().__init__(f"{method}: error {self.code}: {self.error_message}")


class TransactionFailed(RuntimeError):
    """A mined transaction has status 0 (it reverted)."""


# --- ABI helpers -----------------------------------------------------------------------------


def keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


def selector(signature: str) -> str:
    """``'transfer(address,uint256)'`` -> ``'0xa9059cbb'``."""
    return "0x" + keccak256(signature.encode()).hex()[:8]


def event_topic(signature: str) -> str:
    """topic0 of an event, e.g. ``event_topic('Transfer(address,address,uint256)')``."""
    return "0x" + keccak256(signature.encode()).hex()


TRANSFER_TOPIC = event_topic("Transfer(address,address,uint256)")


def _arg_types(signature: str) -> list[str]:
    inner = signature[signature.index("(") + 1 : signature.rindex(")")]
    return [t.strip() for t in inner.split(",")] if inner.strip() else []


def encode_call(signature: str, *args: Any) -> str:
    """Calldata for a function call, e.g. ``encode_call('mint(address,uint256)', a, 5)``."""
    return selector(signature) + abi_encode(_arg_types(signature), list(args)).hex()


def decode_result(types: Sequence[str], data: str) -> tuple:
    """Decode the hex output of ``eth_call``."""
    return tuple(abi_decode(list(types), bytes.fromhex(data.removeprefix("0x"))))


def pool_address(i: int) -> str:
    """The ``i``-th address of BenchToken.spam's pool."""
    return "0x" + format(SPAM_POOL_BASE + i, "040x")


# --- finding and running anvil ---------------------------------------------------------------


def find_anvil() -> str:
    """Path of the anvil binary.

    Looked for in order: env ``EVMFLOW_ANVIL``, ``anvil`` on PATH, then the npm install of
    ``.ci/install_anvil.sh`` under ``<repo>/.tools``.
    """
    from_env = os.environ.get("EVMFLOW_ANVIL")
    if from_env:
        if not (os.path.isfile(from_env) and os.access(from_env, os.X_OK)):
            raise AnvilNotFound(f"EVMFLOW_ANVIL={from_env!r} is not an executable file")
        return from_env
    on_path = shutil.which("anvil")
    if on_path:
        return on_path
    npm_dir = REPO_ROOT / ".tools" / "node_modules" / "@foundry-rs"
    for candidate in sorted(npm_dir.glob("anvil-linux-*/bin/anvil")):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    raise AnvilNotFound(
        "anvil not found: set EVMFLOW_ANVIL to the binary, put `anvil` on PATH, or run "
        "`bash .ci/install_anvil.sh` (installs the npm package @foundry-rs/anvil into "
        f"{REPO_ROOT / '.tools'})"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask Linux to SIGKILL anvil when the Python
    # process that started it dies, even by SIGKILL, so a crashed test leaves no node behind.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _may_tie_to_parent() -> bool:
    # Linux sends the parent-death signal when the *thread* that forked exits, so tie anvil
    # to its parent only when the main thread starts it (a worker thread may end first).
    return sys.platform == "linux" and threading.current_thread() is threading.main_thread()


class Anvil:
    """A running anvil node, as a context manager.

    ``dump_state`` writes the chain to that file when the node stops (cleanly, by SIGTERM);
    ``load_state`` starts from such a file. ``extra_args`` go to anvil as they are.
    """

    def __init__(
        self,
        *,
        chain_id: int | None = None,
        gas_limit: int = GAS_LIMIT,
        load_state: str | Path | None = None,
        dump_state: str | Path | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 30.0,
        binary: str | None = None,
    ) -> None:
        self.binary = binary or find_anvil()
        self.chain_id = chain_id
        self.gas_limit = gas_limit
        self.load_state = Path(load_state) if load_state is not None else None
        self.dump_state = Path(dump_state) if dump_state is not None else None
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.port = 0
        self._process: subprocess.Popen | None = None
        self._log_file: Any = None
        self._conn: http.client.HTTPConnection | None = None
        self._next_id = 1
        self._accounts: list[str] | None = None

    # lifecycle

    def __enter__(self) -> Anvil:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.load_state is not None and not self.load_state.is_file():
            raise AnvilStartError(f"state file {self.load_state} does not exist")
        # A port found free can be taken before anvil binds it: try a few times.
        last_error: Exception | None = None
        for _ in range(3):
            try:
                self._start_once(_free_port())
                return
            except AnvilStartError as exc:
                last_error = exc
                self._kill()
        assert last_error is not None
        raise last_error

    def _command(self, port: int) -> list[str]:
        cmd = [self.binary, "--host", "127.0.0.1", "--port", str(port), "--silent"]
        cmd += ["--gas-limit", str(self.gas_limit)]
        if self.chain_id is not None:
            cmd += ["--chain-id", str(self.chain_id)]
        if self.load_state is not None:
            cmd += ["--load-state", str(self.load_state)]
        if self.dump_state is not None:
            cmd += ["--dump-state", str(self.dump_state)]
        return cmd + self.extra_args

    def _start_once(self, port: int) -> None:
        self.port = port
        self._log_file = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            self._command(port),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if _may_tie_to_parent() else None,  # noqa: PLW1509
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                raise AnvilStartError(f"anvil exited with code {code} on start: {self._output()}")
            try:
                self.rpc("eth_chainId")
                return
            except (OSError, http.client.HTTPException):
                self._close_conn()
            if time.monotonic() > deadline:
                raise AnvilStartError(
                    f"anvil did not answer on {self.url} within {self.start_timeout}s: "
                    f"{self._output()}"
                )
            time.sleep(0.05)

    def _output(self) -> str:
        if self._log_file is None:
            return ""
        self._log_file.seek(0)
        text = self._log_file.read().decode(errors="replace").strip()
        return text[-2000:] or "(no output)"

    def stop(self) -> None:
        """Stop the node: SIGTERM (so ``--dump-state`` is written), SIGKILL if it hangs."""
        self._close_conn()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60 if self.dump_state else 10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _kill(self) -> None:
        self._close_conn()
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # JSON-RPC

    def _post(self, body: bytes) -> Any:
        while True:
            reused = self._conn is not None
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            try:
                self._conn.request(
                    "POST", "/", body=body, headers={"Content-Type": "application/json"}
                )
                response = self._conn.getresponse()
                payload = response.read()
                break
            except (OSError, http.client.HTTPException):
                # Retry once on a fresh connection only when a kept-alive one failed (the
                # server may have closed it while idle); a fresh one failing is a real error.
                self._close_conn()
                if not reused:
                    raise
        if response.status != 200:
            raise RpcError("http", {"code": response.status, "message": payload[:500].decode()})
        return orjson.loads(payload)

    def rpc(self, method: str, params: Sequence[Any] | None = None) -> Any:
        """One JSON-RPC call; returns ``result`` or raises ``RpcError``."""
        request = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        request["params"] = list(params) if params is not None else []
        self._next_id += 1
        answer = self._post(orjson.dumps(request))
        if "error" in answer:
            raise RpcError(method, answer["error"])
        return answer.get("result")

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Several calls in one JSON-RPC batch; results in call order, ``RpcError`` on any error."""
        if not calls:
            return []
        first_id = self._next_id
        requests = [
            {"jsonrpc": "2.0", "id": first_id + i, "method": method, "params": list(params)}
            for i, (method, params) in enumerate(calls)
        ]
        self._next_id += len(calls)
        answers = self._post(orjson.dumps(requests))
        by_id = {answer.get("id"): answer for answer in answers}
        results = []
        for i, (method, _) in enumerate(calls):
            answer = by_id.get(first_id + i)
            if answer is None:
                raise RpcError(method, {"message": f"no answer to call {i} of the batch"})
            if "error" in answer:
                raise RpcError(method, answer["error"])
            results.append(answer.get("result"))
        return results

    # chain

    @property
    def accounts(self) -> list[str]:
        """The unlocked dev accounts, lowercase."""
        if self._accounts is None:
            self._accounts = [a.lower() for a in self.rpc("eth_accounts")]
        return self._accounts

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def mine(self, n: int = 1) -> None:
        if n == 1:
            self.rpc("evm_mine")
        else:
            self.rpc("anvil_mine", [hex(n)])

    def set_automine(self, enabled: bool) -> None:
        self.rpc("evm_setAutomine", [enabled])

    def automine(self) -> bool:
        return bool(self.rpc("anvil_getAutomine"))

    @contextlib.contextmanager
    def manual_mining(self) -> Iterator[None]:
        """Automine off inside the block, back to what it was after."""
        was_on = self.automine()
        self.set_automine(False)
        try:
            yield
        finally:
            if was_on:
                self.set_automine(True)

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> bool:
        return bool(self.rpc("evm_revert", [snapshot_id]))

    def nonce(self, address: str, block: str = "pending") -> int:
        return int(self.rpc("eth_getTransactionCount", [address, block]), 16)

    def call(self, to: str, data: str, block: str | int = "latest") -> str:
        tag = hex(block) if isinstance(block, int) else block
        return str(self.rpc("eth_call", [{"to": to, "data": data}, tag]))

    def receipt(self, tx_hash: str) -> dict | None:
        return self.rpc("eth_getTransactionReceipt", [tx_hash])

    def get_block(self, number: int) -> dict:
        return self.rpc("eth_getBlockByNumber", [hex(number), False])

    def get_logs(
        self,
        from_block: int,
        to_block: int,
        address: str | list[str] | None = None,
        topics: list[Any] | None = None,
    ) -> list[dict]:
        query: dict[str, Any] = {"fromBlock": hex(from_block), "toBlock": hex(to_block)}
        if address is not None:
            query["address"] = address
        if topics is not None:
            query["topics"] = topics
        return self.rpc("eth_getLogs", [query])

    def send(
        self,
        to: str | None,
        data: str,
        from_: str | None = None,
        nonce: int | None = None,
        gas: int | None = None,
        check: bool = True,
    ) -> str:
        """Send a transaction from an unlocked account; returns its hash.

        With automine on (and ``check``) the transaction is mined by now: raise
        ``TransactionFailed`` if it reverted.
        """
        tx = self.prepare_tx(to, data, from_, nonce, gas)
        tx_hash = str(self.rpc("eth_sendTransaction", [tx]))
        if check and self.automine():
            receipt = self.wait_receipt(tx_hash)
            if receipt.get("status") != "0x1":
                raise TransactionFailed(f"transaction {tx_hash} reverted: {receipt}")
        return tx_hash

    def wait_receipt(self, tx_hash: str, timeout: float = 30.0) -> dict:
        """The receipt once the transaction is mined (anvil's automine is not instant)."""
        deadline = time.monotonic() + timeout
        while True:
            receipt = self.receipt(tx_hash)
            if receipt is not None:
                return receipt
            if time.monotonic() > deadline:
                raise TransactionFailed(f"transaction {tx_hash} not mined after {timeout}s")
            time.sleep(0.01)

    def prepare_tx(
        self, to: str | None, data: str, from_: str | None, nonce: int | None, gas: int | None
    ) -> dict:
        """A transaction object for ``eth_sendTransaction`` (default sender: account 0)."""
        tx: dict[str, Any] = {"from": from_ or self.accounts[0], "data": data}
        if to is not None:
            tx["to"] = to
        if nonce is not None:
            tx["nonce"] = hex(nonce)
        if gas is not None:
            tx["gas"] = hex(gas)
        return tx

    def send_many(self, txs: Sequence[dict]) -> list[str]:
        """``eth_sendTransaction`` of each prepared transaction in one batch; their hashes.

        With several transactions of one sender, give each an explicit ``nonce``: without
        it anvil answers "replacement transaction underpriced".
        """
        return [str(h) for h in self.batch([("eth_sendTransaction", [tx]) for tx in txs])]

    def deploy(self, contract_json_path: str | Path, *constructor_args: Any, **kw: Any) -> str:
        """Deploy a contract from a JSON with ``abi`` and ``bytecode``; returns its address.

        Mines a block for it if automine is off.
        """
        artifact = orjson.loads(Path(contract_json_path).read_bytes())
        bytecode = artifact["bytecode"]
        if isinstance(bytecode, dict):  # solc/forge output nests it as {"object": ...}
            bytecode = bytecode["object"]
        data = "0x" + bytecode.removeprefix("0x")
        if constructor_args:
            ctor = next((e for e in artifact["abi"] if e.get("type") == "constructor"), None)
            if ctor is None:
                raise ValueError(f"{contract_json_path}: no constructor takes arguments")
            types = [_abi_type(p) for p in ctor["inputs"]]
            data += abi_encode(types, list(constructor_args)).hex()
        tx_hash = self.send(None, data, from_=kw.get("from_"), check=False)
        if not self.automine():
            self.mine()
        receipt = self.wait_receipt(tx_hash)
        if receipt.get("status") != "0x1" or not receipt["contractAddress"]:
            raise TransactionFailed(f"deploying {contract_json_path} failed: {receipt}")
        return str(receipt["contractAddress"]).lower()


def _abi_type(param: dict) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return str(param["type"])


# --- BenchToken ------------------------------------------------------------------------------


class BenchToken:
    """The BenchToken ERC-20 deployed on a node."""

    def __init__(self, node: Anvil, address: str) -> None:
        self.node = node
        self.address = address.lower()

    @classmethod
    def deploy(cls, node: Anvil, from_: str | None = None) -> BenchToken:
        return cls(node, node.deploy(BENCH_TOKEN_JSON, from_=from_))

    def mint(self, to: str, amount: int, **kw: Any) -> str:
        return self.node.send(self.address, encode_call("mint(address,uint256)", to, amount), **kw)

    def transfer(self, to: str, amount: int, from_: str, **kw: Any) -> str:
        data = encode_call("transfer(address,uint256)", to, amount)
        return self.node.send(self.address, data, from_=from_, **kw)

    def balance_of(self, holder: str, block: str | int = "latest") -> int:
        out = self.node.call(self.address, encode_call("balanceOf(address)", holder), block)
        return int(decode_result(["uint256"], out)[0])

    def total_supply(self, block: str | int = "latest") -> int:
        out = self.node.call(self.address, encode_call("totalSupply()"), block)
        return int(decode_result(["uint256"], out)[0])

    def spam_tx(self, n: int, seed: int, pool: int, from_: str, nonce: int | None = None) -> dict:
        """A prepared ``spam(n, seed, pool)`` transaction (for ``Anvil.send_many``)."""
        data = encode_call("spam(uint256,uint256,uint256)", n, seed, pool)
        gas = SPAM_GAS_BASE + SPAM_GAS_PER_EVENT * n
        return self.node.prepare_tx(self.address, data, from_, nonce, gas)

    def spam(self, n: int, seed: int, pool: int, from_: str | None = None) -> str:
        """Emit ``n`` Transfer logs (no balance change) in one transaction."""
        data = encode_call("spam(uint256,uint256,uint256)", n, seed, pool)
        gas = SPAM_GAS_BASE + SPAM_GAS_PER_EVENT * n
        return self.node.send(self.address, data, from_=from_, gas=gas)


@dataclass(frozen=True)
class SpamResult:
    first_block: int
    last_block: int
    events: int
    transactions: int


def spam_transfers(
    token: BenchToken,
    events: int,
    blocks: int,
    *,
    seed: int = 1,
    pool: int = 1000,
    events_per_tx: int = 1000,
    progress: Any = None,
) -> SpamResult:
    """Emit ``events`` Transfer logs spread evenly over ``blocks`` new blocks.

    Each block gets its share as transactions of at most ``events_per_tx`` logs, sent in one
    JSON-RPC batch with explicit nonces, then mined with ``evm_mine``. Transaction ``k``
    (counted over the whole run) spams with seed ``seed * 2**64 + k``, so runs with other
    seeds give other logs. ``progress(blocks_done, blocks)`` is called after each block.
    """
    if events < 0 or blocks < 1 or events_per_tx < 1:
        raise ValueError("need events >= 0, blocks >= 1, events_per_tx >= 1")
    node = token.node
    sender = node.accounts[0]
    tx_count = 0
    with node.manual_mining():
        nonce = node.nonce(sender)
        first_block = node.block_number() + 1
        for b in range(blocks):
            # Spread the remainder over the first blocks so every block differs by at most 1.
            in_block = events // blocks + (1 if b < events % blocks else 0)
            txs = []
            while in_block > 0:
                n = min(events_per_tx, in_block)
                txs.append(token.spam_tx(n, seed * 2**64 + tx_count, pool, sender, nonce))
                nonce += 1
                tx_count += 1
                in_block -= n
            node.send_many(txs)
            node.mine()
            if progress is not None:
                progress(b + 1, blocks)
        last_block = node.block_number()
    if last_block != first_block + blocks - 1:
        raise RuntimeError(
            f"expected blocks {first_block}..{first_block + blocks - 1}, "
            f"the node is at {last_block}"
        )
    return SpamResult(first_block, last_block, events, tx_count)


def real_transfers(
    token: BenchToken,
    transfers: int,
    *,
    seed: int = 1,
    holders: Sequence[str] | None = None,
    per_block: int = 20,
    mint_amount: int = 10**21,
) -> list[str]:
    """Mint to each holder, then make ``transfers`` random real transfers between them.

    Returns every transaction hash, mints first. Senders must be unlocked accounts (the dev
    accounts by default). Transactions are batched ``per_block`` to a block with explicit
    nonces; each amount fits the sender's balance, so none reverts (checked on the receipts).
    """
    node = token.node
    holders = [h.lower() for h in (holders or node.accounts[:5])]
    rng = random.Random(seed)
    minter = node.accounts[0]
    balances = dict.fromkeys(holders, 0)
    planned: list[dict] = []
    nonces: dict[str, int] = {}

    def next_nonce(sender: str) -> int:
        if sender not in nonces:
            nonces[sender] = node.nonce(sender)
        nonces[sender] += 1
        return nonces[sender] - 1

    for holder in holders:
        amount = rng.randrange(mint_amount // 2, mint_amount)
        balances[holder] += amount
        data = encode_call("mint(address,uint256)", holder, amount)
        planned.append(node.prepare_tx(token.address, data, minter, next_nonce(minter), 100_000))
    for _ in range(transfers):
        sender = rng.choice([h for h in holders if balances[h] > 0])
        receiver = rng.choice(holders)
        amount = rng.randrange(0, balances[sender] + 1)
        balances[sender] -= amount
        balances[receiver] += amount
        data = encode_call("transfer(address,uint256)", receiver, amount)
        planned.append(node.prepare_tx(token.address, data, sender, next_nonce(sender), 100_000))

    hashes: list[str] = []
    with node.manual_mining():
        for start in range(0, len(planned), per_block):
            hashes += node.send_many(planned[start : start + per_block])
            node.mine()
    receipts = node.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
    failed = [h for h, r in zip(hashes, receipts, strict=True) if not r or r["status"] != "0x1"]
    if failed:
        raise TransactionFailed(f"{len(failed)} transfers failed, first {failed[0]}")
    return hashes
