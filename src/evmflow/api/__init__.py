"""evmflow's query and monitoring server: GraphQL over an index, Prometheus metrics, health.

``create_app(project, db_url, indexer=None)`` builds the ASGI app; ``serve(...)`` runs it with
uvicorn until cancelled. See app.py for the routes and graph.py for the GraphQL schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path
from typing import Any

from ..project import Project
from .app import create_app
from .graph import DEFAULT_FIRST, MAX_FIRST, build_graphql_schema, query_names
from .limits import MAX_ALIASES, MAX_DEPTH, MAX_ROWS

__all__ = [
    "DEFAULT_FIRST",
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_FIRST",
    "MAX_ROWS",
    "build_graphql_schema",
    "create_app",
    "make_server",
    "query_names",
    "serve",
]

log = logging.getLogger(__name__)


def make_server(
    project: Project | str | Path,
    db_url: str | None,
    host: str = "127.0.0.1",
    port: int = 8080,
    indexer: Any = None,
) -> Any:
    """A ``uvicorn.Server`` for the app, not yet started; ``await server.serve()`` runs it."""
    import uvicorn

    app = create_app(project, db_url, indexer)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", access_log=False
    )
    return uvicorn.Server(config)


async def serve(
    project: Project | str | Path,
    db_url: str | None,
    host: str = "127.0.0.1",
    port: int = 8080,
    indexer: Any = None,
    *,
    handle_signals: bool = True,
    sock: socket.socket | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (with ``handle_signals``) or until the task is cancelled.

    Pass ``handle_signals=False`` when the caller owns the signals, as ``evmflow run --serve``
    does (Ctrl-C stops the indexer first); it then stops the server by cancelling this
    coroutine, which shuts down cleanly. ``sock``: a bound socket to serve on instead of
    host and port.
    """
    server = make_server(project, db_url, host, port, indexer)
    if not handle_signals:
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.ensure_future(server.serve(sockets=[sock] if sock is not None else None))
    if sock is None:
        log.info("GraphQL API on http://%s:%d/graphql", host, port)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        await task
        raise
