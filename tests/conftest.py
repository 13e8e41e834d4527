"""Shared fixtures for the end-to-end tests: the CLI as a user runs it, a fresh PostgreSQL
schema per test, a scratch copy of the bundled example, and table dumps read with plain
database drivers (not through evmflow), so a test sees exactly what a user's database holds.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DIR = REPO_ROOT / "examples" / "erc20-mainnet"
PG_BASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

Dump = dict[str, list[tuple]]


# --- the CLI ---------------------------------------------------------------------------------


def evmflow_command(*args: str) -> list[str]:
    """The ``evmflow`` command line for this checkout's code.

    ``python -m evmflow.cli`` runs the same click entry point as the installed ``evmflow``
    script, but always this checkout's package (see ``evmflow_env``), whatever an editable
    install elsewhere points at.
    """
    return [sys.executable, "-m", "evmflow.cli", *args]


def evmflow_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = src + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else src
    env.pop("DATABASE_URL", None)  # each test names its database
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    return env


def run_evmflow(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``evmflow ARGS`` to its end; stdout and stderr as text."""
    return subprocess.run(
        evmflow_command(*(str(a) for a in args)),
        env=evmflow_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def start_evmflow(*args: str | Path, output: Path) -> subprocess.Popen[bytes]:
    """Start ``evmflow ARGS`` in the background, its stdout and stderr going to ``output``."""
    with open(output, "wb") as sink:
        return subprocess.Popen(
            evmflow_command(*(str(a) for a in args)),
            env=evmflow_env(),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def assert_ran(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"evmflow exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


# --- databases -------------------------------------------------------------------------------


def sqlite_url(project: Path) -> str:
    """Where ``evmflow run PROJECT`` keeps its index when no --db is given."""
    return f"sqlite:///{project / '.evmflow' / 'index.db'}"


def _pg_dsn_and_schema(url: str) -> tuple[str, str]:
    base, _, query = url.partition("?")
    params = dict(part.split("=", 1) for part in query.split("&") if part)
    return base, params["schema"]


def _run_async(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def _pg_execute(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_BASE_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture()
def pg_url() -> Any:
    """A PostgreSQL URL whose ``schema`` parameter names a fresh schema, dropped afterwards."""
    schema = f"evmflow_test_{uuid.uuid4().hex[:12]}"
    try:
        _run_async(_pg_execute("SELECT 1"))
    except (TimeoutError, OSError) as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_BASE_URL}: {exc}")
    yield f"{PG_BASE_URL}?schema={schema}"
    _run_async(_pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """Run a test once on SQLite and once on PostgreSQL."""
    return str(request.param)


@pytest.fixture()
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh database of the test's ``backend``: a SQLite file or a PostgreSQL schema."""
    if backend == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'db' / 'index.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A maker of fresh databases of one backend: ``db(name)`` gives a new URL each call."""
    import asyncpg

    urls: list[str] = []

    def make(name: str = "index") -> str:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / (name + '.db')}"
        else:
            url = f"{PG_BASE_URL}?schema=r_{uuid.uuid4().hex[:12]}"
        urls.append(url)
        return url

    yield make
    if request.param == "postgres":
        conn = await asyncpg.connect(PG_BASE_URL)
        for url in urls:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{url.split("schema=")[1]}" CASCADE')
        await conn.close()


def _sort_rows(rows: list[tuple]) -> list[tuple]:
    return sorted(rows, key=repr)


def dump_sqlite(path: str | Path) -> Dump:
    """Every table of a SQLite file, with its CREATE statement, rows sorted.

    Read with the plain ``sqlite3`` module: what any tool opening the file sees.
    """
    path = Path(path)
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall()
        dump: Dump = {"(tables)": [tuple(t) for t in tables]}
        for name, _ in tables:
            quoted = '"' + name.replace('"', '""') + '"'
            dump[name] = _sort_rows(conn.execute(f"SELECT * FROM {quoted}").fetchall())
        return dump
    finally:
        conn.close()


async def _dump_postgres(url: str) -> Dump:
    import asyncpg

    dsn, schema = _pg_dsn_and_schema(url)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        columns = await conn.fetch(
            "SELECT table_name, column_name, data_type, is_nullable FROM "
            "information_schema.columns WHERE table_schema = $1 "
            "ORDER BY table_name, ordinal_position",
            schema,
        )
        dump: Dump = {"(tables)": [tuple(c) for c in columns]}
        for name in sorted({c["table_name"] for c in columns}):
            quoted = '"' + schema + '"."' + name.replace('"', '""') + '"'
            rows = await conn.fetch(f"SELECT * FROM {quoted}")
            dump[name] = _sort_rows([tuple(r) for r in rows])
        return dump
    finally:
        await conn.close()


def dump_postgres(url: str) -> Dump:
    """Every table of the URL's PostgreSQL schema, with its columns, rows sorted."""
    return _run_async(_dump_postgres(url))


def dump_db(url: str) -> Dump:
    if url.startswith("sqlite:///"):
        return dump_sqlite(url.removeprefix("sqlite:///"))
    return dump_postgres(url)


def entity_rows(dump: Dump, table: str) -> dict[str, tuple]:
    """A dumped entity table as id -> row."""
    return {row[0]: row for row in dump[table]}


def as_int(value: Any) -> int:
    """A stored BigInt: decimal text in SQLite, NUMERIC (Decimal) in PostgreSQL."""
    if isinstance(value, Decimal):
        assert value == value.to_integral_value(), value
        return int(value)
    assert isinstance(value, str | int), value
    return int(value)


def as_datetime(value: Any) -> datetime:
    """A stored Timestamp: ISO text in SQLite, TIMESTAMPTZ in PostgreSQL."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


# --- projects --------------------------------------------------------------------------------


@pytest.fixture()
def example_project(tmp_path: Path) -> Path:
    """A scratch copy of examples/erc20-mainnet (without any index left in the original)."""
    target = tmp_path / "erc20-mainnet"
    shutil.copytree(EXAMPLE_DIR, target, ignore=shutil.ignore_patterns(".evmflow", "__pycache__"))
    return target


# --- what an ERC-20 index must hold, computed from the raw archive ----------------------------

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


@dataclass
class Erc20Index:
    """The rows of the example schema's tables, by id, in the example handlers' terms.

    transfers: id -> (id, token, from, to, value, block, timestamp, transaction)
    tokens:    id -> (id, transfers, volume)
    accounts:  id -> (id, token, holder, balance, transfers)
    """

    transfers: dict[str, tuple] = field(default_factory=dict)
    tokens: dict[str, tuple] = field(default_factory=dict)
    accounts: dict[str, tuple] = field(default_factory=dict)


def read_jsonl_gz(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def erc20_transfers(
    logs_file: Path, blocks_file: Path, chain_id: int, start_block: int, end_block: int
) -> list[tuple]:
    """Every ERC-20 Transfer of the archive in order, as Transfer rows.

    An ERC-20 Transfer has exactly three topics and 32 bytes of data; ERC-721 shares topic0
    but puts the token id in a fourth topic, so it is not one.
    """
    timestamps = {
        int(b["number"], 16): datetime.fromtimestamp(int(b["timestamp"], 16), UTC)
        for b in read_jsonl_gz(blocks_file)
    }
    rows = []
    for log in read_jsonl_gz(logs_file):
        topics = log["topics"]
        block = int(log["blockNumber"], 16)
        if not start_block <= block <= end_block:
            continue
        if len(topics) != 3 or topics[0] != TRANSFER_TOPIC or len(log["data"]) != 2 + 64:
            continue
        rows.append(
            (
                f"{chain_id}-{block}-{int(log['logIndex'], 16)}",
                log["address"].lower(),
                "0x" + topics[1][-40:].lower(),
                "0x" + topics[2][-40:].lower(),
                int(log["data"], 16),
                block,
                timestamps[block],
                log["transactionHash"].lower(),
            )
        )
    return rows


def erc20_index(transfers: list[tuple], up_to_block: int | None = None) -> Erc20Index:
    """The tables the example's handlers build from ``transfers`` (of blocks <= up_to_block)."""
    index = Erc20Index()
    token_totals: dict[str, list[int]] = {}
    account_totals: dict[tuple[str, str], list[int]] = {}
    for row in transfers:
        _, token, sender, receiver, value, block, _, _ = row
        if up_to_block is not None and block > up_to_block:
            continue
        index.transfers[row[0]] = row
        totals = token_totals.setdefault(token, [0, 0])
        totals[0] += 1
        totals[1] += value
        for holder, delta in ((sender, -value), (receiver, value)):
            account = account_totals.setdefault((token, holder), [0, 0])
            account[0] += delta
            account[1] += 1
    index.tokens = {t: (t, n, volume) for t, (n, volume) in token_totals.items()}
    index.accounts = {
        f"{t}-{h}": (f"{t}-{h}", t, h, balance, n)
        for (t, h), (balance, n) in account_totals.items()
    }
    return index


def erc20_index_in_db(dump: Dump) -> Erc20Index:
    """The example schema's tables of a database dump, values as Python ints and datetimes."""
    return Erc20Index(
        transfers={
            r[0]: (r[0], r[1], r[2], r[3], as_int(r[4]), r[5], as_datetime(r[6]), r[7])
            for r in dump.get("Transfer", [])
        },
        tokens={r[0]: (r[0], r[1], as_int(r[2])) for r in dump.get("Token", [])},
        accounts={r[0]: (r[0], r[1], r[2], as_int(r[3]), r[4]) for r in dump.get("Account", [])},
    )


def assert_same_rows(actual: dict[str, tuple], expected: dict[str, tuple], what: str) -> None:
    """Equal row sets; on failure, say how many differ and show a few."""
    missing = sorted(expected.keys() - actual.keys())
    extra = sorted(actual.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & actual.keys() if expected[k] != actual[k])
    if missing or extra or wrong:
        lines = [
            f"{what}: {len(expected)} expected, {len(actual)} stored; {len(missing)} missing, "
            f"{len(extra)} extra, {len(wrong)} wrong"
        ]
        lines += [f"  missing {expected[k]}" for k in missing[:5]]
        lines += [f"  extra {actual[k]}" for k in extra[:5]]
        lines += [f"  wrong {actual[k]}, expected {expected[k]}" for k in wrong[:5]]
        pytest.fail("\n".join(lines))


def assert_erc20_index(actual: Erc20Index, expected: Erc20Index) -> None:
    assert_same_rows(actual.tokens, expected.tokens, "Token")
    assert_same_rows(actual.accounts, expected.accounts, "Account")
    assert_same_rows(actual.transfers, expected.transfers, "Transfer")


def chain_progress(dump: Dump) -> dict[int, tuple[int, int]]:
    """chain id -> (committed block, events) from a dump's progress table."""
    return {int(r[0]): (int(r[1]), int(r[2])) for r in dump.get("_evmflow_chains", [])}


def wipe_db(url: str) -> None:
    """Make ``url`` an empty database again: delete the SQLite file, or drop the schema."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    _, schema = _pg_dsn_and_schema(url)
    _run_async(_pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
