"""The GraphQL API over the bundled example's index, on SQLite and PostgreSQL, through a real
uvicorn server on loopback and a real HTTP client.

Every expected value is computed from the raw JSONL archive with plain Python (see
``tests.conftest.erc20_transfers``): an ERC-20 Transfer has Transfer's topic0, exactly three
topics and 32 bytes of data.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from evmflow.api import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_FIRST,
    MAX_ROWS,
    bind_socket,
    create_app,
    make_server,
    serve,
)
from evmflow.engine import Indexer
from evmflow.errors import ConfigError
from tests.conftest import (
    EXAMPLE_DIR,
    PG_BASE_URL,
    Erc20Index,
    _pg_execute,
    erc20_index,
    erc20_transfers,
)

CHAIN_ID = 1
START_BLOCK = 17_686_110
END_BLOCK = 17_686_312
ARCHIVE = EXAMPLE_DIR / "data" / "firehose-17686110"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transfers() -> list[tuple]:
    return erc20_transfers(
        Path(f"{ARCHIVE}.logs.jsonl.gz"),
        Path(f"{ARCHIVE}.blocks.jsonl.gz"),
        CHAIN_ID,
        START_BLOCK,
        END_BLOCK,
    )


@pytest.fixture(scope="module")
def expected(transfers: list[tuple]) -> Erc20Index:
    return erc20_index(transfers)


def _database(backend: str, folder: Path) -> tuple[str, str | None]:
    """A fresh database URL, and the PostgreSQL schema to drop afterwards."""
    if backend == "sqlite":
        return f"sqlite:///{folder / 'index.db'}", None
    try:
        asyncio.run(_pg_execute("SELECT 1"))
    except (TimeoutError, OSError) as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_BASE_URL}: {exc}")
    schema = f"evmflow_api_{uuid.uuid4().hex[:12]}"
    return f"{PG_BASE_URL}?schema={schema}", schema


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def index_url(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[str]:
    """The example indexed to its end into a fresh database of each backend."""
    url, schema = _database(request.param, tmp_path_factory.mktemp("api"))
    asyncio.run(Indexer(EXAMPLE_DIR, url).run())
    yield url
    if schema is not None:
        asyncio.run(_pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture(scope="module")
def server(index_url: str) -> Iterator[str]:
    """A uvicorn server of the index in a thread of its own; its base URL."""
    sock = _free_socket()
    port = sock.getsockname()[1]
    uvicorn_server = make_server(EXAMPLE_DIR, index_url)
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        for _ in range(500):
            if uvicorn_server.started or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        assert uvicorn_server.started, "the server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=30)
        sock.close()


async def ask(base: str, query: str, variables: dict | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        body = {"query": query, "variables": variables or {}}
        async with session.post(f"{base}/graphql", json=body) as response:
            return response.status, await response.json()


async def data_of(base: str, query: str, variables: dict | None = None) -> dict:
    status, answer = await ask(base, query, variables)
    assert status == 200 and "errors" not in answer, answer
    return answer["data"]


async def wait_until_serving(base: str) -> None:
    """Wait for a server started in this loop to accept connections (at most 10 s)."""
    for _ in range(200):
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        return
        except aiohttp.ClientConnectorError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"no server answered at {base}")


def ids(rows: list[dict]) -> list[str]:
    return [row["id"] for row in rows]


# -- single entities ---------------------------------------------------------------------------


async def test_transfer_by_id_has_every_field_of_its_raw_log(
    server: str, transfers: list[tuple]
) -> None:
    biggest = max(transfers, key=lambda t: t[4])
    data = await data_of(
        server,
        "query($id: ID!) { transfer(id: $id) { id token { id } from to value block timestamp "
        "transaction } }",
        {"id": biggest[0]},
    )
    tid, token, sender, receiver, value, block, timestamp, tx = biggest
    assert data["transfer"] == {
        "id": tid,
        "token": {"id": token},
        "from": sender,
        "to": receiver,
        "value": str(value),
        "block": block,
        "timestamp": timestamp.isoformat(),
        "transaction": tx,
    }


async def test_unknown_id_answers_null(server: str) -> None:
    data = await data_of(server, '{ account(id: "no-such-account") { id } }')
    assert data == {"account": None}


# -- filters -----------------------------------------------------------------------------------


async def test_bigint_filters_compare_numbers_not_text(server: str, expected: Erc20Index) -> None:
    volumes = sorted(volume for _, _, volume in expected.tokens.values())
    threshold = volumes[len(volumes) // 2]
    others = [volumes[0], volumes[-1], 10**30 + 7]
    # The threshold's text order differs from its numeric order, or this test would prove
    # nothing about numbers.
    by_text = {t for t, _, v in expected.tokens.values() if str(v) > str(threshold)}
    by_number = {t for t, _, v in expected.tokens.values() if v > threshold}
    assert by_text != by_number

    cases: dict[str, tuple[Any, Any]] = {
        "volume": (str(threshold), lambda v: v == threshold),
        "volume_not": (str(threshold), lambda v: v != threshold),
        "volume_gt": (str(threshold), lambda v: v > threshold),
        "volume_gte": (str(threshold), lambda v: v >= threshold),
        "volume_lt": (str(threshold), lambda v: v < threshold),
        "volume_lte": (str(threshold), lambda v: v <= threshold),
        "volume_in": ([str(v) for v in others], lambda v: v in others),
        "volume_not_in": ([str(v) for v in others], lambda v: v not in others),
    }
    for key, (value, keep) in cases.items():
        data = await data_of(
            server,
            "query($where: Token_filter) { tokens(first: 1000, where: $where) { id } }",
            {"where": {key: value}},
        )
        want = {t for t, _, v in expected.tokens.values() if keep(v)}
        assert set(ids(data["tokens"])) == want, key
        assert want, key  # every case selects something


async def test_int_text_and_bytes_filters(server: str, expected: Erc20Index) -> None:
    tokens = expected.tokens.values()
    busiest = max(tokens, key=lambda t: t[1])[0]
    cases: dict[str, tuple[Any, Any]] = {
        "transfers_gt": (20, lambda t: t[1] > 20),
        "transfers_gte": (20, lambda t: t[1] >= 20),
        "transfers_lt": (2, lambda t: t[1] < 2),
        "transfers_lte": (2, lambda t: t[1] <= 2),
        "transfers_in": ([3, 4], lambda t: t[1] in (3, 4)),
        "transfers_not_in": ([1, 2], lambda t: t[1] not in (1, 2)),
        "id_contains": ("dac17", lambda t: "dac17" in t[0]),
        "id_not_contains": ("0xa", lambda t: "0xa" not in t[0]),
        "id_gt": ("0xe", lambda t: t[0] > "0xe"),
        "id": (busiest, lambda t: t[0] == busiest),
    }
    for key, (value, keep) in cases.items():
        data = await data_of(
            server,
            "query($where: Token_filter) { tokens(first: 1000, where: $where) { id } }",
            {"where": {key: value}},
        )
        want = {t[0] for t in tokens if keep(t)}
        assert set(ids(data["tokens"])) == want, key
        assert want, key

    # Keys of one filter combine with AND; Bytes are matched whatever the case of the hex.
    holder = max(expected.accounts.values(), key=lambda a: a[4])[2]
    data = await data_of(
        server,
        "query($where: Transfer_filter) { transfers(first: 1000, where: $where) { id } }",
        {"where": {"to": holder.upper().replace("0X", "0x"), "block_gte": START_BLOCK + 100}},
    )
    want = {
        t[0] for t in expected.transfers.values() if t[3] == holder and t[5] >= START_BLOCK + 100
    }
    assert set(ids(data["transfers"])) == want and want


async def test_or_and_nested_filters(server: str, expected: Erc20Index) -> None:
    data = await data_of(
        server,
        "query($where: Token_filter) { tokens(first: 1000, where: $where) { id } }",
        {"where": {"or": [{"transfers_gt": 100}, {"volume_lt": "1000"}]}},
    )
    want = {t for t, n, v in expected.tokens.values() if n > 100 or v < 1000}
    assert set(ids(data["tokens"])) == want and want

    # Tokens with some account that lost more than 10^24 base units.
    data = await data_of(
        server,
        '{ tokens(first: 1000, where: {accounts_: {balance_lt: "-1000000000000000000000000"}})'
        " { id } }",
    )
    want = {a[1] for a in expected.accounts.values() if a[3] < -(10**24)}
    assert set(ids(data["tokens"])) == want and want

    # Accounts of tokens with more than 200 transfers, through the reference.
    data = await data_of(
        server,
        "{ accounts(first: 1000, where: {token_: {transfers_gt: 200}, transfers_gt: 3}) { id } }",
    )
    busy = {t for t, n, _ in expected.tokens.values() if n > 200}
    want = {a[0] for a in expected.accounts.values() if a[1] in busy and a[4] > 3}
    assert set(ids(data["accounts"])) == want
    assert 0 < len(want) < 1000


# -- order and pages ---------------------------------------------------------------------------


async def test_order_by_bigint_sorts_numerically(server: str, expected: Erc20Index) -> None:
    for direction in ("asc", "desc"):
        data = await data_of(
            server,
            f"{{ tokens(first: 1000, orderBy: volume, orderDirection: {direction}) "
            "{ id volume } }",
        )
        want = sorted(expected.tokens.values(), key=lambda t: (t[2], t[0]))
        if direction == "desc":
            want.reverse()
        assert [(r["id"], r["volume"]) for r in data["tokens"]] == [(t[0], str(t[2])) for t in want]
    as_text = sorted(expected.tokens.values(), key=lambda t: (str(t[2]), t[0]))
    assert as_text != sorted(expected.tokens.values(), key=lambda t: (t[2], t[0]))


async def test_pages_of_accounts_by_balance_list_every_account_once(
    server: str, expected: Erc20Index
) -> None:
    seen: list[tuple[str, str]] = []
    skip = 0
    while True:
        data = await data_of(
            server,
            "query($skip: Int) { accounts(first: 1000, skip: $skip, orderBy: balance) "
            "{ id balance } }",
            {"skip": skip},
        )
        page = data["accounts"]
        seen += [(a["id"], a["balance"]) for a in page]
        if len(page) < 1000:
            break
        skip += 1000
    want = sorted(expected.accounts.values(), key=lambda a: (a[3], a[0]))
    assert seen == [(a[0], str(a[3])) for a in want]
    assert len(seen) == len(expected.accounts) > 4000


# -- nested objects ----------------------------------------------------------------------------


async def test_reference_resolves_to_the_referenced_entity(
    server: str, expected: Erc20Index
) -> None:
    data = await data_of(
        server,
        "{ accounts(first: 50, orderBy: balance) { id holder balance transfers "
        "token { id transfers volume } } }",
    )
    want = sorted(expected.accounts.values(), key=lambda a: (a[3], a[0]))[:50]
    assert data["accounts"] == [
        {
            "id": aid,
            "holder": holder,
            "balance": str(balance),
            "transfers": n,
            "token": {
                "id": token,
                "transfers": expected.tokens[token][1],
                "volume": str(expected.tokens[token][2]),
            },
        }
        for aid, token, holder, balance, n in want
    ]


async def test_derived_from_lists_take_filters_order_and_pages(
    server: str, expected: Erc20Index
) -> None:
    busiest = sorted(expected.tokens.values(), key=lambda t: -t[1])[:3]
    chosen = sorted(t[0] for t in busiest)
    data = await data_of(
        server,
        "query($ids: [ID!]) { tokens(where: {id_in: $ids}, orderBy: id) { id "
        'accounts(where: {balance_gt: "0"}, orderBy: balance, orderDirection: desc, '
        "first: 3, skip: 1) { id balance } } }",
        {"ids": chosen},
    )
    want = []
    for token in chosen:
        holders = [a for a in expected.accounts.values() if a[1] == token and a[3] > 0]
        holders.sort(key=lambda a: (a[3], a[0]), reverse=True)
        want.append(
            {"id": token, "accounts": [{"id": a[0], "balance": str(a[3])} for a in holders[1:4]]}
        )
    assert data["tokens"] == want


async def test_meta_reports_the_committed_progress(server: str, transfers: list[tuple]) -> None:
    data = await data_of(server, "{ _meta { chains { chain_id block events end_block ready } } }")
    assert data["_meta"]["chains"] == [
        {
            "chain_id": CHAIN_ID,
            "block": END_BLOCK,
            "events": len(transfers),
            "end_block": END_BLOCK,
            "ready": True,
        }
    ]


# -- refusals ----------------------------------------------------------------------------------


async def test_a_page_over_the_limit_is_refused_with_a_clear_message(server: str) -> None:
    status, answer = await ask(server, f"{{ accounts(first: {MAX_FIRST + 1}) {{ id }} }}")
    assert status == 400
    assert answer["errors"][0]["message"].startswith(
        f"first: {MAX_FIRST + 1} is more than the page limit of {MAX_FIRST}"
    )


async def test_a_query_nested_too_deep_is_refused(server: str) -> None:
    # accounts, then 12 levels of token { accounts { ... } }, then id: 14 levels.
    inner = "id"
    for level in range(12):
        inner = f"token {{ {inner} }}" if level % 2 == 0 else f"accounts {{ {inner} }}"
    status, answer = await ask(server, f"{{ accounts(first: 1) {{ {inner} }} }}")
    assert status == 400
    assert answer == {
        "errors": [
            {
                "message": f"the query nests 14 levels deep; the limit is {MAX_DEPTH}. Split it "
                "into several queries, or fetch the inner objects by id."
            }
        ]
    }


async def test_nested_pages_that_multiply_past_the_row_limit_are_refused(server: str) -> None:
    # 1000 tokens, then 1000 accounts of each: 1,001,000 rows, though each page is allowed.
    status, answer = await ask(
        server,
        "query($n: Int) { tokens(first: 1000) { accounts(first: $n) { id } } }",
        {"n": 1000},
    )
    assert status == 400
    assert answer["errors"][0]["message"] == (
        f"the query may load 1,001,000 rows; the limit is {MAX_ROWS:,}. Ask for smaller "
        "pages (first) in nested lists, or split the query."
    )


async def test_too_many_aliases_are_refused(server: str) -> None:
    fields = " ".join(f"a{i}: tokens(first: 1) {{ id }}" for i in range(MAX_ALIASES + 1))
    status, answer = await ask(server, f"{{ {fields} }}")
    assert status == 400
    assert answer["errors"][0]["message"] == (
        f"the query uses {MAX_ALIASES + 1} aliases; the limit is {MAX_ALIASES}. "
        "Send several smaller queries."
    )


async def test_a_bigint_that_is_not_a_number_is_refused(server: str) -> None:
    status, answer = await ask(server, '{ tokens(where: {volume_gt: "lots"}) { id } }')
    assert status == 400
    assert "BigInt takes a decimal integer string" in answer["errors"][0]["message"]


# -- pages and probes --------------------------------------------------------------------------


async def test_graphiql_page_health_and_readiness(server: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server}/") as response:
            assert response.status == 200
            assert "GraphiQL" in await response.text()
        async with session.get(f"{server}/healthz") as response:
            assert (response.status, await response.json()) == (200, {"status": "ok"})
        async with session.get(f"{server}/ready") as response:
            body = await response.json()
            assert (response.status, body["ready"]) == (200, True)
        meta = {"query": "{ _meta { chains { block } } }"}
        async with session.get(f"{server}/graphql", params=meta) as response:
            want = {"data": {"_meta": {"chains": [{"block": END_BLOCK}]}}}
            assert await response.json() == want


# -- reading while the indexer writes ----------------------------------------------------------


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_every_answer_shows_whole_batches_while_the_indexer_writes(
    backend: str, tmp_path: Path, transfers: list[tuple]
) -> None:
    """Before each commit, and concurrently with the commits, the sum of the tokens' transfer
    counts equals the events in _meta: both come from one snapshot of whole batches."""
    url, schema = await asyncio.to_thread(_database, backend, tmp_path)
    query = "{ _meta { chains { events } } tokens(first: 1000) { transfers } }"
    answers: list[tuple[int, int]] = []
    base = ""

    async def one_read() -> None:
        status, answer = await ask(base, query)
        assert status == 200, answer
        data = answer["data"]
        events = data["_meta"]["chains"][0]["events"] if data["_meta"]["chains"] else 0
        answers.append((events, sum(t["transfers"] for t in data["tokens"])))

    async def read_before_commit(_commit: Any) -> None:
        await one_read()

    # Without the pipeline every batch is its own commit, so the hook reads between each two.
    indexer = Indexer(
        EXAMPLE_DIR, url, batch_size=250, pipeline=False, before_commit=read_before_commit
    )
    sock = _free_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server_task = asyncio.ensure_future(
        serve(EXAMPLE_DIR, url, indexer=indexer, handle_signals=False, sock=sock)
    )

    async def keep_reading() -> None:
        while not run.done():
            await one_read()

    try:
        await wait_until_serving(base)
        run = asyncio.ensure_future(indexer.run())
        while indexer.writer is None and not run.done():  # the tables exist once it has one
            await asyncio.sleep(0.01)
        reader = asyncio.ensure_future(keep_reading())
        await run
        await reader
        await one_read()
    finally:
        server_task.cancel()
        await asyncio.gather(server_task, return_exceptions=True)
        sock.close()
        if schema is not None:
            await _pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    assert all(events == total for events, total in answers), answers
    assert answers[-1] == (len(transfers), len(transfers))
    # The hook read the index between commits (batches end on whole blocks, ~350 events).
    assert len({events for events, _ in answers}) >= 10


# -- in a browser ------------------------------------------------------------------------------


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed")
def test_the_query_page_runs_a_query_in_headless_chromium(server: str, index_url: str) -> None:
    """Offline, the page falls back to its own console; ``?run`` runs the example query.
    The screenshot lands in tests/artifacts/ for a person to look at."""
    if not index_url.startswith("sqlite"):
        pytest.skip("one browser run is enough")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "query-page.png"
    common = [
        _chromium() or "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,800",
        "--virtual-time-budget=15000",
    ]
    dom = subprocess.run(
        [*common, "--dump-dom", f"{server}/?run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    subprocess.run(
        [*common, f"--screenshot={shot}", f"{server}/?run"], capture_output=True, timeout=120
    )
    assert 'data-answered="yes"' in dom.stdout, dom.stderr[-2000:]
    assert '"chain_id": 1' in dom.stdout
    assert shot.stat().st_size > 10_000


def test_create_app_accepts_a_project_folder() -> None:
    app = create_app(EXAMPLE_DIR, "sqlite:////nonexistent/never-opened.db")
    paths = {route.path for route in app.routes}  # type: ignore[attr-defined]
    assert paths == {"/", "/graphql", "/healthz", "/ready"}


def test_a_taken_port_is_a_config_error_that_says_what_to_do() -> None:
    taken = _free_socket()
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ConfigError) as caught:
            bind_socket("127.0.0.1", port)
    finally:
        taken.close()
    assert str(caught.value).startswith(f"cannot listen on 127.0.0.1:{port}: ")
    assert "pick another --port" in str(caught.value)


async def test_a_database_without_an_index_answers_a_clear_error_and_is_not_ready(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    sock = _free_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    task = asyncio.ensure_future(serve(EXAMPLE_DIR, url, handle_signals=False, sock=sock))
    try:
        await wait_until_serving(base)
        status, answer = await ask(base, "{ tokens { id } }")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/ready") as response:
                ready_status, ready = response.status, await response.json()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sock.close()
    message = "the database holds no index yet: run the indexer (evmflow run) on it first"
    assert (status, answer["errors"][0]["message"]) == (400, message)
    assert (ready_status, ready) == (
        503,
        {"ready": False, "reason": f"cannot read the index: {message}"},
    )
