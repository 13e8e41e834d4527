"""The ``evmflow`` command."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import socket
import sys
import time
from pathlib import Path

import click

from .errors import EvmflowError, HandlerFailed, UserError, WriterError

log = logging.getLogger("evmflow")


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group()
@click.version_option(package_name="evmflow")
def main() -> None:
    """evmflow: index EVM smart-contract events into SQL."""


@main.command()
@click.argument("project_dir", default=".", type=click.Path(file_okay=True, path_type=Path))
@click.option(
    "--db",
    "db",
    default=None,
    help="Database URL: sqlite:///relative/to/project.db, sqlite:////absolute/path.db or "
    "postgresql://user@host:port/db[?schema=name] (default: the config's 'database', then "
    "DATABASE_URL, then SQLite in <project>/.evmflow/index.db).",
)
@click.option("--reset", is_flag=True, help="Drop the indexed data and start over.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Events per batch.")
@click.option("--no-pipeline", is_flag=True, help="Await every commit before the next batch.")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors.")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live progress view (default: on when the output is a terminal).",
)
@click.option(
    "--serve",
    "serve_api",
    is_flag=True,
    help="Also serve GraphQL, /metrics, /healthz and /ready while indexing, and keep serving "
    "after the end block until Ctrl-C.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address for --serve.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port for --serve.")
def run(
    project_dir: Path,
    db: str | None,
    reset: bool,
    batch_size: int | None,
    no_pipeline: bool,
    quiet: bool,
    verbose: bool,
    progress: bool | None,
    serve_api: bool,
    host: str,
    port: int,
) -> None:
    """Index PROJECT_DIR until every chain reaches its end block (Ctrl-C stops, keeping what
    is committed)."""
    _setup_logging(verbose, quiet)
    from .engine import Indexer

    try:
        indexer = Indexer(
            project_dir,
            db,
            reset=reset,
            batch_size=batch_size,
            pipeline=False if no_pipeline else None,
        )
    except UserError as exc:
        _fail(str(exc), 2)
        sys.exit(2)
    from .codegen import refresh_if_stale

    refresh_if_stale(indexer.project.config)
    show_progress = (sys.stderr.isatty() if progress is None else progress) and not quiet
    listen = None
    if serve_api:
        from .api import bind_socket

        try:
            listen = bind_socket(host, port)
        except UserError as exc:
            _fail(str(exc), 2)
            sys.exit(2)
        click.echo(f"GraphQL API on http://{host}:{port}/graphql", err=True)
    code = asyncio.run(_run(indexer, show_progress, quiet, listen))
    sys.exit(code)


async def _run(  # type: ignore[no-untyped-def]
    indexer, show_progress: bool, quiet: bool, listen: socket.socket | None = None
) -> int:
    from .progress import ProgressView

    loop = asyncio.get_running_loop()
    interrupted = 0  # the signal that stopped the run
    stopped = asyncio.Event()
    indexing = True

    def on_signal(sig: int) -> None:
        nonlocal interrupted
        if interrupted:
            # A second Ctrl-C does not wait: every commit is one transaction, so leaving now
            # loses only uncommitted batches, which the next run processes again.
            click.echo("aborting: uncommitted batches are dropped, committed ones kept", err=True)
            os._exit(128 + sig)
        interrupted = sig
        stopped.set()
        if not indexing:
            click.echo("\nstopping the server", err=True)
            return
        queued = indexer.writer.in_flight if indexer.writer is not None else 0
        click.echo(
            f"\nstopping: no more events are handled; committing the {queued} batches already "
            "handled (Ctrl-C again aborts: they are handled again next run)...",
            err=True,
        )
        indexer.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, int(sig))
    view = ProgressView(indexer, enabled=show_progress, quiet=quiet)
    started = time.perf_counter()
    server = None
    ended = None
    if listen is not None:
        from .api import serve

        server = asyncio.create_task(
            serve(
                indexer.project, indexer.db_url, indexer=indexer, handle_signals=False, sock=listen
            )
        )
    try:
        async with view:
            await indexer.run()
        indexing = False
        ended = time.perf_counter()
        if server is not None and not interrupted:
            click.echo("every chain reached its end block; still serving (Ctrl-C stops)", err=True)
            await stopped.wait()
    except UserError as exc:
        _fail(str(exc), 2)
        return 2
    except HandlerFailed as exc:
        _fail(f"{exc}\nnothing of this batch was stored; fix the handler and run again", 1)
        if exc.__cause__ is not None:
            import traceback

            traceback.print_exception(exc.__cause__, file=sys.stderr)
        return 1
    except WriterError as exc:
        _fail(str(exc), 1)
        return 1
    except EvmflowError as exc:
        _fail(str(exc), 1)
        return 1
    finally:
        if server is not None:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
    seconds = (ended or time.perf_counter()) - started
    m = indexer.measures
    if not quiet:
        rate = m.events / seconds if seconds > 0 else 0.0
        for chain in indexer.chains.values():
            click.echo(
                f"chain {chain.chain_id}: at block {chain.progress.block}, "
                f"{chain.progress.events} events in total",
                err=True,
            )
        click.echo(f"{m.events} events in {seconds:.2f}s ({rate:,.0f} events/s)", err=True)
    if interrupted and not indexer.finished:
        return 128 + interrupted  # 130 after Ctrl-C, 143 after SIGTERM
    return 0


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)


@main.command("serve")
@click.argument("project_dir", default=".", type=click.Path(file_okay=True, path_type=Path))
@click.option("--db", "db", default=None, help="Database URL (default: as for run).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
def serve_command(project_dir: Path, db: str | None, host: str, port: int, verbose: bool) -> None:
    """Serve the GraphQL API, /healthz and /ready over PROJECT_DIR's index (an indexer may
    write it at the same time from another process)."""
    _setup_logging(verbose, False)
    from .api import bind_socket, serve
    from .engine import database_url
    from .errors import DatabaseUnavailable
    from .project import load_project

    try:
        project = load_project(project_dir)
        url = database_url(project, db)
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            raise DatabaseUnavailable(
                f"there is no index at {url} yet",
                hint=f"run 'evmflow run {project_dir}' first (or give --db)",
            )
        listen = bind_socket(host, port)
    except UserError as exc:
        _fail(str(exc), 2)
        sys.exit(2)
    click.echo(f"GraphQL API on http://{host}:{port}/graphql (Ctrl-C stops)", err=True)
    asyncio.run(serve(project, db, host, port, sock=listen))


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--template",
    type=click.Choice(["erc20", "blank", "uniswap-v2"]),
    default="erc20",
    show_default=True,
    help="Which project to start from (ignored with --from-abi).",
)
@click.option(
    "--from-abi",
    "from_abi",
    type=click.Path(path_type=Path),
    default=None,
    help="Write config, schema and handler stubs for the events of this ABI file.",
)
@click.option("--address", default=None, help="With --from-abi: the contract address.")
@click.option(
    "--event",
    "events",
    multiple=True,
    help="With --from-abi: an event to index (repeat; default all).",
)
@click.option("--contract", default=None, help="With --from-abi: the contract's name.")
@click.option("--chain-id", type=int, default=1, show_default=True, help="With --from-abi.")
@click.option("--start-block", type=int, default=0, show_default=True, help="With --from-abi.")
@click.option("--end-block", type=int, default=None, help="With --from-abi.")
@click.option("--rpc-url", default=None, help="With --from-abi: the node to read from.")
@click.option(
    "--archive",
    type=click.Path(path_type=Path),
    default=None,
    help="With --from-abi: a local archive (NAME of NAME.logs.jsonl[.gz]) instead.",
)
def init(
    directory: Path,
    template: str,
    from_abi: Path | None,
    address: str | None,
    events: tuple[str, ...],
    contract: str | None,
    chain_id: int,
    start_block: int,
    end_block: int | None,
    rpc_url: str | None,
    archive: Path | None,
) -> None:
    """Write a new project into DIRECTORY (which must be empty or absent)."""
    from .codegen import generate
    from .templates import write_template

    try:
        if from_abi is not None:
            from .templates.from_abi import write_from_abi

            written = write_from_abi(
                directory,
                from_abi,
                address=address,
                events=list(events) or None,
                contract=contract,
                chain_id=chain_id,
                start_block=start_block,
                end_block=end_block,
                rpc_url=rpc_url,
                archive=archive,
            )
        else:
            written = write_template(template, directory)
        written += generate(directory)
    except UserError as exc:
        _fail(str(exc), 2)
        sys.exit(2)
    click.echo(f"wrote {len(written)} files to {directory}:")
    for path in written:
        click.echo(f"  {os.path.relpath(path, directory)}")
    click.echo(f"run it with: evmflow run {shlex.quote(str(directory))}")


@main.command()
@click.argument("project_dir", default=".", type=click.Path(file_okay=True, path_type=Path))
def codegen(project_dir: Path) -> None:
    """Write typed stubs of the project's entities and events to PROJECT_DIR/typings, for
    editors and mypy (set mypy_path = typings)."""
    from .codegen import generate

    try:
        written = generate(project_dir)
    except UserError as exc:
        _fail(str(exc), 2)
        sys.exit(2)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo("editors read typings/ by themselves; for mypy set mypy_path = typings")


if __name__ == "__main__":  # pragma: no cover
    main()
