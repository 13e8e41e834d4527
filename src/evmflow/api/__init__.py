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

from ..errors import ConfigError
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
    "bind_socket",
    "build_graphql_schema",
    "create_app",
    "make_server",
    "query_names",
    "serve",
]

log = logging.getLogger(__name__)


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket listening-ready on host:port, or a ConfigError that says what to do.

    Binding before the indexer starts lets ``evmflow run --serve`` fail at once on a taken
    port, instead of after the server task dies in the background.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pick another --port, or stop the program that uses this one",
        ) from None
    return sock


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
    if sock is None:
        sock = bind_socket(host, port)
        log.info("GraphQL API on http://%s:%d/graphql", host, port)
    server = make_server(project, db_url, host, port, indexer)
    if not handle_signals:
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        await task
        raise
