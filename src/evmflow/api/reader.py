"""Read-only database access for the API: every GraphQL request reads one snapshot.

A request may run many SELECTs (a page of accounts, then their tokens, then each token's
accounts). If the indexer committed a batch between two of them, the answer would mix two
states of the index. So a request holds one read transaction from its first SELECT to its
last: on SQLite a ``BEGIN ... COMMIT`` on one connection (WAL mode keeps that snapshot while
the writer commits), on PostgreSQL a ``REPEATABLE READ READ ONLY`` transaction.

Both readers keep a few connections; a request takes one for its whole life, and its SELECTs
run one at a time on it (a lock, since GraphQL resolves sibling fields concurrently).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from ..storage.base import quote

POOL_SIZE = 4


class IndexNotCreated(Exception):
    """The database has no index tables (yet)."""

    def __init__(self) -> None:
        super().__init__(
            "the database holds no index yet: run the indexer (evmflow run) on it first"
        )


class Snapshot:
    """One request's read transaction."""

    dialect: str

    async def fetch(self, sql: str, params: list[Any]) -> list[tuple]:
        try:
            return await self._fetch_rows(sql, params)
        except Exception as exc:
            text = str(exc)
            if "no such table" in text or ("relation" in text and "does not exist" in text):
                raise IndexNotCreated() from exc
            raise

    async def _fetch_rows(self, sql: str, params: list[Any]) -> list[tuple]:
        raise NotImplementedError


class Reader:
    dialect: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def snapshot(self) -> Any:  # an async context manager yielding a Snapshot
        raise NotImplementedError


# -- SQLite ------------------------------------------------------------------------------------


class _SqliteSnapshot(Snapshot):
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, thread: ThreadPoolExecutor) -> None:
        self.conn = conn
        self.thread = thread
        self.lock = asyncio.Lock()

    def _fetch(self, sql: str, params: list[Any]) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    async def _fetch_rows(self, sql: str, params: list[Any]) -> list[tuple]:
        async with self.lock:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.thread, self._fetch, sql, params)


class SqliteReader(Reader):
    """Connections with evmflow's collations, each used from a thread of its own."""

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._free: asyncio.Queue[tuple[sqlite3.Connection, ThreadPoolExecutor]] | None = None
        self._all: list[tuple[sqlite3.Connection, ThreadPoolExecutor]] = []

    async def open(self) -> None:
        from ..storage.sqlite import connect

        self._free = asyncio.Queue()
        loop = asyncio.get_running_loop()
        for i in range(POOL_SIZE):
            thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"evmflow-api-{i}")
            conn = await loop.run_in_executor(thread, connect, self.path)
            # The API never writes; this makes a bug that tries fail instead of locking.
            await loop.run_in_executor(thread, conn.execute, "PRAGMA query_only=ON")
            self._all.append((conn, thread))
            self._free.put_nowait((conn, thread))

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for conn, thread in self._all:
            await loop.run_in_executor(thread, conn.close)
            thread.shutdown(wait=True)
        self._all.clear()

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Snapshot]:
        assert self._free is not None, "SqliteReader.open() was not awaited"
        conn, thread = await self._free.get()
        snap = _SqliteSnapshot(conn, thread)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(thread, conn.execute, "BEGIN")
            try:
                yield snap
            finally:
                await loop.run_in_executor(thread, conn.execute, "COMMIT")
        finally:
            self._free.put_nowait((conn, thread))


# -- PostgreSQL --------------------------------------------------------------------------------


class _PostgresSnapshot(Snapshot):
    dialect = "postgres"

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.lock = asyncio.Lock()

    async def _fetch_rows(self, sql: str, params: list[Any]) -> list[tuple]:
        async with self.lock:
            records = await self.conn.fetch(sql, *params)
        return [tuple(r) for r in records]


class PostgresReader(Reader):
    dialect = "postgres"

    def __init__(self, url: str) -> None:
        from ..storage.postgres import split_url

        self.dsn, self.pg_schema = split_url(url)
        self._pool: Any = None

    async def open(self) -> None:
        import asyncpg

        settings = {"search_path": quote(self.pg_schema)} if self.pg_schema else {}
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=POOL_SIZE, server_settings=settings
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Snapshot]:
        assert self._pool is not None, "PostgresReader.open() was not awaited"
        async with self._pool.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                yield _PostgresSnapshot(conn)


def open_reader(url: str) -> Reader:
    """A reader for the same URLs as ``evmflow.storage.open_storage``."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresReader(url)
    if url.startswith("sqlite://"):
        return SqliteReader(url.removeprefix("sqlite:///") or ":memory:")
    from ..errors import ConfigError

    raise ConfigError(
        f"unsupported database URL {url!r}",
        hint="use sqlite:///path/to/file.db or postgresql://user@host:port/dbname",
    )
