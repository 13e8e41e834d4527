"""ArchiveSource over the real mainnet archives of shared/data, checked against the raw files.

Every expected value is computed here from the raw JSONL with plain Python (gzip + json).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from evmflow.errors import SourceError
from evmflow.sources import archive
from evmflow.sources.archive import ArchiveSource
from evmflow.sources.base import LogFilter, Page


def _data_dir() -> Path:
    # CI puts shared/ beside the repository clone; developers have it at /work/shared.
    repo = Path(__file__).resolve().parents[1]
    for candidate in (
        os.environ.get("EVMFLOW_SHARED_DATA"),
        repo.parent / "shared" / "data",
        Path("/work/shared/data"),
    ):
        if candidate and (Path(candidate) / "mainnet").is_dir():
            return Path(candidate) / "mainnet"
    pytest.skip("shared/data/mainnet not found (set EVMFLOW_SHARED_DATA)")


DATASETS = ["firehose-17686110", "erigon-rpc-tests", "chainstorage", "superwatcher-etl"]
TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
SYNC = "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbad1"
NO_TIME = -1  # unknown_timestamp for the archives that do not date every block


def raw_logs(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as lines:
        return [json.loads(line) for line in lines]


def raw_blocks(path: Path) -> dict[int, dict]:
    with gzip.open(path, "rt") as lines:
        return {int(b["number"], 16): b for b in map(json.loads, lines)}


@pytest.fixture(params=["thread", "thread-chunks-of-3", "process-chunks-of-3"])
def reader(request, monkeypatch) -> dict:
    """ArchiveSource options for each way of reading: in a thread or a child process, and
    with chunks so small that files of a few lines already take the parsed-chunk path."""
    if request.param.endswith("chunks-of-3"):
        monkeypatch.setattr(archive._LogStream, "CHUNK_LINES", 3)
    return {"process": request.param.startswith("process")}


def source(name: str, **kw) -> ArchiveSource:
    data = _data_dir()
    return ArchiveSource(data / f"{name}.logs.jsonl.gz", data / f"{name}.blocks.jsonl.gz", **kw)


async def collect(src: ArchiveSource, start: int, end: int | None, filters) -> list[Page]:
    return [page async for page in src.pages(start, end, filters)]


def key(raw: dict) -> tuple[int, int]:
    return int(raw["blockNumber"], 16), int(raw["logIndex"], 16)


def most_common_address(logs: list[dict]) -> str:
    return Counter(log["address"].lower() for log in logs).most_common(1)[0][0]


def filter_cases(logs: list[dict]) -> dict[str, tuple[list[LogFilter], object]]:
    """Filters, each with the plain-Python predicate that says which raw logs match."""
    top = most_common_address(logs)
    top_topics = sorted({log["topics"][0] for log in logs if log["address"] == top})
    return {
        "transfer-any-address": (
            [LogFilter(None, [TRANSFER])],
            lambda r: r["topics"][:1] == [TRANSFER],
        ),
        "one-contract-all-its-events": (
            [LogFilter([top.upper().replace("0X", "0x")], top_topics)],
            lambda r: r["address"] == top and r["topics"][0] in top_topics,
        ),
        "union-of-two-filters": (
            [LogFilter([top], [TRANSFER]), LogFilter(None, [SYNC])],
            lambda r: (
                (r["address"] == top and r["topics"][:1] == [TRANSFER]) or r["topics"][:1] == [SYNC]
            ),
        ),
        "every-log": ([LogFilter(None, [])], lambda r: True),
    }


def check_coverage(pages: list[Page], start: int, end: int) -> None:
    assert pages, "no page"
    assert pages[0].from_block == start
    assert pages[-1].to_block == end
    for before, after in zip(pages, pages[1:], strict=False):
        assert after.from_block == before.to_block + 1
    for page in pages:
        assert page.from_block <= page.to_block
        assert all(page.from_block <= log.block_number <= page.to_block for log in page.logs)


@pytest.mark.parametrize("name", DATASETS)
async def test_each_filter_gives_exactly_the_matching_logs_of_the_raw_file(name, reader):
    data = _data_dir()
    logs = raw_logs(data / f"{name}.logs.jsonl.gz")
    src = source(name, page_blocks=7, unknown_timestamp=NO_TIME, **reader)
    first, last = key(logs[0])[0], key(logs[-1])[0]

    for label, (filters, predicate) in filter_cases(logs).items():
        expected = [r for r in logs if predicate(r)]
        pages = await collect(src, first, last, filters)
        check_coverage(pages, first, last)
        got = [log for page in pages for log in page.logs]
        assert len(got) == len(expected), label
        assert [(g.block_number, g.log_index) for g in got] == [key(r) for r in expected], label
        assert [(g.address, g.topics, g.data) for g in got] == [
            (r["address"], r["topics"], r["data"]) for r in expected
        ], label
    assert await src.head() == max(last, max(raw_blocks(data / f"{name}.blocks.jsonl.gz")))


@pytest.mark.parametrize("name", DATASETS)
async def test_headers_come_from_the_blocks_file_or_the_logs_timestamps(name):
    data = _data_dir()
    logs = raw_logs(data / f"{name}.logs.jsonl.gz")
    blocks = raw_blocks(data / f"{name}.blocks.jsonl.gz")
    log_times = {key(r)[0]: int(r["blockTimestamp"], 16) for r in logs if "blockTimestamp" in r}
    pages = await collect(source(name, unknown_timestamp=NO_TIME), 0, None, [LogFilter(None, [])])

    seen = set()
    for page in pages:
        for log in page.logs:
            header = page.blocks[log.block_number]
            seen.add(log.block_number)
            assert header.hash == log.block_hash
            if log.block_number in blocks:
                raw = blocks[log.block_number]
                assert header.timestamp == int(raw["timestamp"], 16)
                assert header.parent_hash == raw["parentHash"]
            elif log.block_number in log_times:
                assert (header.timestamp, header.parent_hash) == (
                    log_times[log.block_number],
                    None,
                )
            else:
                assert (header.timestamp, header.parent_hash) == (NO_TIME, None)
    assert seen == {key(r)[0] for r in logs}


async def test_a_block_without_any_timestamp_is_an_error_naming_file_and_block():
    data = _data_dir()
    logs = raw_logs(data / "erigon-rpc-tests.logs.jsonl.gz")
    blocks = raw_blocks(data / "erigon-rpc-tests.blocks.jsonl.gz")
    undated = next(key(r)[0] for r in logs if "blockTimestamp" not in r and key(r)[0] not in blocks)
    with pytest.raises(SourceError) as caught:
        await collect(source("erigon-rpc-tests"), 0, None, [LogFilter(None, [])])
    assert f"block {undated}" in str(caught.value)
    assert "erigon-rpc-tests.logs.jsonl.gz" in str(caught.value)


async def test_pages_of_consecutive_blocks_hold_at_most_page_blocks_blocks():
    data = _data_dir()
    logs = raw_logs(data / "firehose-17686110.logs.jsonl.gz")
    per_block = Counter(key(r)[0] for r in logs)
    pages = await collect(
        source("firehose-17686110", page_blocks=5), 17686110, 17686132, [LogFilter(None, [])]
    )

    check_coverage(pages, 17686110, 17686132)
    assert [(p.from_block, p.to_block) for p in pages] == [
        (17686110 + 5 * i, min(17686110 + 5 * i + 4, 17686132)) for i in range(5)
    ]
    for page in pages:
        assert len(page.logs) == sum(
            per_block[b] for b in range(page.from_block, page.to_block + 1)
        )
        # The blocks file knows each page's last block: its header is there.
        assert page.to_block in page.blocks


async def test_a_full_page_ends_at_a_block_boundary():
    data = _data_dir()
    logs = raw_logs(data / "firehose-17686110.logs.jsonl.gz")
    pages = await collect(
        source("firehose-17686110", max_page_logs=1000), 0, None, [LogFilter(None, [])]
    )

    check_coverage(pages, 0, 17686312)
    got = [(log.block_number, log.log_index) for page in pages for log in page.logs]
    assert got == [key(r) for r in logs]
    for page in pages:
        if not page.logs:
            continue
        last = page.logs[-1].block_number
        in_last_block = sum(1 for log in page.logs if log.block_number == last)
        # The page was not full before its last block, and a full page stops at that block.
        assert len(page.logs) - in_last_block < 1000
        if len(page.logs) >= 1000 and page is not pages[-1]:
            assert page.to_block == last


async def test_resuming_from_the_middle_gives_the_tail_of_a_full_run():
    data = _data_dir()
    src = source("chainstorage", page_blocks=1000)
    flt = [LogFilter(None, [TRANSFER])]
    everything = [log for p in await collect(src, 0, None, flt) for log in p.logs]
    middle = everything[len(everything) // 2].block_number

    pages = await collect(src, middle, None, flt)
    check_coverage(pages, middle, await src.head())
    tail = [(log.block_number, log.log_index) for p in pages for log in p.logs]
    assert tail == [
        (log.block_number, log.log_index) for log in everything if log.block_number >= middle
    ]
    raw = raw_logs(data / "chainstorage.logs.jsonl.gz")
    assert len(tail) == sum(1 for r in raw if key(r)[0] >= middle and r["topics"][:1] == [TRANSFER])


async def test_plain_and_gzipped_files_give_the_same_pages(tmp_path):
    data = _data_dir()
    plain_logs = tmp_path / "chainstorage.logs.jsonl"
    plain_blocks = tmp_path / "chainstorage.blocks.jsonl"
    for src_path, dst in (
        (data / "chainstorage.logs.jsonl.gz", plain_logs),
        (data / "chainstorage.blocks.jsonl.gz", plain_blocks),
    ):
        with gzip.open(src_path, "rb") as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    flt = [LogFilter(None, [TRANSFER, SYNC])]

    zipped = await collect(source("chainstorage"), 0, None, flt)
    plain = await collect(ArchiveSource(plain_logs, plain_blocks), 0, None, flt)
    assert [(p.from_block, p.to_block, p.blocks) for p in plain] == [
        (p.from_block, p.to_block, p.blocks) for p in zipped
    ]
    assert [[(x.block_number, x.log_index) for x in p.logs] for p in plain] == [
        [(x.block_number, x.log_index) for x in p.logs] for p in zipped
    ]


async def test_a_range_past_the_archive_is_covered_by_empty_pages():
    pages = await collect(source("chainstorage"), 22119618, 22119618 + 2500, [LogFilter(None, [])])
    check_coverage(pages, 22119618, 22119618 + 2500)
    assert sum(len(p.logs) for p in pages) == 0


async def test_last_block_raises_the_head():
    assert await source("chainstorage", last_block=30_000_000).head() == 30_000_000


async def test_no_filter_matches_nothing_but_still_covers_the_range():
    pages = await collect(source("chainstorage"), 100, 5000, [])
    check_coverage(pages, 100, 5000)
    assert all(not p.logs for p in pages)


def write_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


async def test_an_unsorted_logs_file_is_an_error_naming_file_and_line(tmp_path, reader):
    rows = raw_logs(_data_dir() / "firehose-17686110.logs.jsonl.gz")[:10]
    rows[4], rows[5] = rows[5], rows[4]  # same block: log indexes out of order
    path = write_lines(tmp_path / "bad.logs.jsonl", rows)
    with pytest.raises(SourceError, match=r"bad\.logs\.jsonl:6: the file is not sorted"):
        await collect(ArchiveSource(path, **reader), 0, None, [LogFilter(None, [])])


async def test_a_block_out_of_order_is_an_error_even_when_no_filter_matches_it(tmp_path, reader):
    rows = raw_logs(_data_dir() / "chainstorage.logs.jsonl.gz")
    first_of_second_block = next(
        i for i, r in enumerate(rows) if r["blockNumber"] != rows[0]["blockNumber"]
    )
    rows.insert(first_of_second_block + 3, rows[0])
    path = write_lines(tmp_path / "late.logs.jsonl", rows)
    nothing = [LogFilter(["0x" + "ab" * 20], [TRANSFER])]
    with pytest.raises(SourceError, match=rf"late\.logs\.jsonl:{first_of_second_block + 4}:"):
        await collect(ArchiveSource(path, **reader), 0, None, nothing)


async def test_a_duplicate_log_is_an_error(tmp_path, reader):
    rows = raw_logs(_data_dir() / "chainstorage.logs.jsonl.gz")[:5]
    path = write_lines(tmp_path / "dup.logs.jsonl", rows[:3] + rows[2:])
    with pytest.raises(SourceError, match=r"dup\.logs\.jsonl:4: .* repeats"):
        await collect(ArchiveSource(path, **reader), 0, None, [LogFilter(None, [])])


async def test_a_block_with_two_hashes_is_an_error(tmp_path, reader):
    rows = raw_logs(_data_dir() / "chainstorage.logs.jsonl.gz")[:5]
    rows[3] = dict(rows[3], blockHash="0x" + "11" * 32)
    path = write_lines(tmp_path / "fork.logs.jsonl", rows)
    with pytest.raises(SourceError, match="two hashes"):
        await collect(ArchiveSource(path, **reader), 0, None, [LogFilter(None, [])])


async def test_without_a_blocks_file_headers_come_from_the_logs(tmp_path):
    data = _data_dir()
    logs = raw_logs(data / "chainstorage.logs.jsonl.gz")
    src = ArchiveSource(data / "chainstorage.logs.jsonl.gz", None)
    pages = await collect(src, 0, None, [LogFilter(None, [TRANSFER])])
    headers = {n: h for p in pages for n, h in p.blocks.items()}
    expected = {
        key(r)[0]: (r["blockHash"], int(r["blockTimestamp"], 16))
        for r in logs
        if r["topics"][:1] == [TRANSFER]
    }
    assert {n: (h.hash, h.timestamp) for n, h in headers.items()} == expected
    assert all(h.parent_hash is None for h in headers.values())


async def test_a_line_that_is_not_a_log_is_an_error_naming_file_and_line(tmp_path, reader):
    rows = raw_logs(_data_dir() / "chainstorage.logs.jsonl.gz")[:3]
    path = write_lines(tmp_path / "odd.logs.jsonl", rows)
    odd = json.dumps({"address": "0x12", "blockNumber": rows[-1]["blockNumber"]})
    path.write_text(path.read_text() + odd + "\n")
    with pytest.raises(SourceError, match=r"odd\.logs\.jsonl:4: expected an eth_getLogs log"):
        await collect(ArchiveSource(path, **reader), 0, None, [LogFilter(None, [])])

    path.write_text("not json\n")
    with pytest.raises(SourceError, match=r"odd\.logs\.jsonl:1: not a JSON object"):
        await collect(ArchiveSource(path, **reader), 0, 10, [LogFilter(None, [])])


async def test_a_consumer_may_stop_after_any_page():
    src = source("firehose-17686110", page_blocks=3)
    async with contextlib.aclosing(src.pages(17686110, None, [LogFilter(None, [])])) as pages:
        async for page in pages:
            assert (page.from_block, page.to_block) == (17686110, 17686112)
            break
    again = await collect(src, 17686110, 17686112, [LogFilter(None, [])])
    assert [(p.from_block, p.to_block) for p in again] == [(17686110, 17686112)]


def test_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        ArchiveSource(tmp_path / "nope.logs.jsonl.gz")


@pytest.mark.anvil
async def test_an_archive_written_by_gen_transfers_reads_back_as_the_chain_serves_it(tmp_path):
    from bench.gen_transfers import main as gen_transfers
    from tests.support.anvil import TRANSFER_TOPIC, Anvil

    argv = ["--events", "2500", "--per-block", "1000", "--events-per-tx", "400"]
    assert gen_transfers([*argv, "--out-dir", str(tmp_path), "--dump-state"]) == 0
    meta = json.loads((tmp_path / "transfers-2500.meta.json").read_text())
    src = ArchiveSource(
        tmp_path / "transfers-2500.logs.jsonl.gz",
        tmp_path / "transfers-2500.blocks.jsonl.gz",
        page_blocks=2,
    )
    pages = await collect(src, 0, None, [LogFilter([meta["token"]], [TRANSFER_TOPIC])])

    with Anvil(load_state=tmp_path / "transfers-2500.state.json") as node:
        chain_logs = node.get_logs(0, node.block_number())
        chain_blocks = {
            n: node.get_block(n) for n in range(meta["first_block"], meta["last_block"] + 1)
        }
    check_coverage(pages, 0, meta["last_block"])
    got = [log for page in pages for log in page.logs]
    assert len(got) == len(chain_logs) == 2500
    assert [(g.block_number, g.log_index, g.transaction_hash, g.topics, g.data) for g in got] == [
        (
            int(r["blockNumber"], 16),
            int(r["logIndex"], 16),
            r["transactionHash"],
            r["topics"],
            r["data"],
        )
        for r in chain_logs
    ]
    headers = {n: h for page in pages for n, h in page.blocks.items()}
    assert {n: (h.hash, h.parent_hash, h.timestamp) for n, h in headers.items()} == {
        n: (b["hash"], b["parentHash"], int(b["timestamp"], 16)) for n, b in chain_blocks.items()
    }


async def test_blank_lines_crlf_and_removed_logs_read_the_same_on_every_path(tmp_path, reader):
    rows = raw_logs(_data_dir() / "chainstorage.logs.jsonl.gz")[:40]
    removed = {7, 8, 30}
    lines = []
    for i, r in enumerate(rows):
        lines.append(json.dumps(dict(r, removed=True) if i in removed else r) + "\r\n")
        if i in (5, 21):
            lines.append("\n   \n")
    path = tmp_path / "messy.logs.jsonl"
    path.write_text("".join(lines))
    pages = await collect(ArchiveSource(path, **reader), 0, None, [LogFilter(None, [])])
    got = [(log.block_number, log.log_index, log.data) for p in pages for log in p.logs]
    assert got == [key(r) + (r["data"],) for i, r in enumerate(rows) if i not in removed]


def _reader_children() -> list[int]:
    """Pids of this process's archive reader children that are still alive."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"_archive_worker" in cmdline:
            found.append(int(entry.name))
    return found


async def test_a_reader_process_that_dies_is_an_error_and_one_not_needed_is_stopped():
    src = source("firehose-17686110", page_blocks=1, process=True)
    assert not _reader_children()
    async with contextlib.aclosing(src.pages(17686110, None, [LogFilter(None, [])])) as pages:
        async for _ in pages:
            (child,) = _reader_children()
            break
    assert not _reader_children(), "the child outlived the pages it was reading"

    with pytest.raises(SourceError, match=r"reader process was killed by signal 9"):
        async for _ in src.pages(17686110, None, [LogFilter(None, [])]):
            for child in _reader_children():
                os.kill(child, 9)
    assert not _reader_children()


def test_the_reader_is_a_process_for_large_files_unless_told(tmp_path, monkeypatch):
    path = tmp_path / "x.logs.jsonl"
    path.write_bytes(b"\n" * 1000)
    monkeypatch.setattr(archive, "PROCESS_MIN_BYTES", 1000)
    assert ArchiveSource(path).process is True
    assert ArchiveSource(path, process=False).process is False
    monkeypatch.setattr(archive, "PROCESS_MIN_BYTES", 1001)
    assert ArchiveSource(path).process is False
    assert ArchiveSource(path, process=True).process is True


@pytest.mark.parametrize(
    "change",
    [{"address": 5}, {"topics": "0xab"}, {"topics": [1]}, {"data": None}, {"logIndex": 7}],
)
async def test_a_log_with_a_value_of_the_wrong_type_is_an_error_naming_its_line(
    tmp_path, reader, change
):
    rows = raw_logs(_data_dir() / "chainstorage.logs.jsonl.gz")[:12]
    rows[8] = dict(rows[8], **change)
    path = write_lines(tmp_path / "typed.logs.jsonl", rows)
    with pytest.raises(SourceError, match=r"typed\.logs\.jsonl:9: expected an eth_getLogs log"):
        await collect(ArchiveSource(path, **reader), 0, None, [LogFilter(None, [])])


@pytest.mark.parametrize("literal", ["True", "truE", "FALSE", "fAlse", "NULL"])
async def test_an_invalid_json_literal_is_an_error_on_every_path(tmp_path, reader, literal):
    rows = raw_logs(_data_dir() / "chainstorage.logs.jsonl.gz")[:12]
    rows[8] = dict(rows[8], removed="LITERAL")
    path = write_lines(tmp_path / "lit.logs.jsonl", rows)
    path.write_text(path.read_text().replace('"LITERAL"', literal))
    with pytest.raises(SourceError, match=r"lit\.logs\.jsonl:9: not a JSON object"):
        await collect(ArchiveSource(path, **reader), 0, None, [LogFilter(None, [])])


async def test_uppercase_hex_is_read_as_lowercase_on_every_path(tmp_path, reader):
    rows = raw_logs(_data_dir() / "chainstorage.logs.jsonl.gz")[:12]
    shouting = [
        dict(
            r,
            address=r["address"].upper().replace("0X", "0x"),
            topics=[t.upper() for t in r["topics"]],
            data=r["data"].upper(),
            blockHash=r["blockHash"].upper(),
            transactionHash=r["transactionHash"].upper(),
        )
        if i % 4 == 1
        else r
        for i, r in enumerate(rows)
    ]
    path = write_lines(tmp_path / "upper.logs.jsonl", shouting)
    pages = await collect(ArchiveSource(path, **reader), 0, None, [LogFilter(None, [])])
    got = [
        (g.address, g.topics, g.data, g.block_hash, g.transaction_hash)
        for p in pages
        for g in p.logs
    ]
    assert got == [
        (r["address"], r["topics"], r["data"], r["blockHash"], r["transactionHash"]) for r in rows
    ]
    assert all(r["address"] == r["address"].lower() for r in rows)


async def test_gzip_padding_and_empty_files_read_like_gzip_reads_them(tmp_path, reader):
    rows = raw_logs(_data_dir() / "chainstorage.logs.jsonl.gz")[:12]
    text = "".join(json.dumps(r) + "\n" for r in rows).encode()
    padded = tmp_path / "padded.logs.jsonl.gz"
    padded.write_bytes(gzip.compress(text[:1000]) + gzip.compress(text[1000:]) + b"\0" * 512)
    assert gzip.decompress(padded.read_bytes()) == text
    pages = await collect(ArchiveSource(padded, **reader), 0, None, [LogFilter(None, [])])
    assert [(g.block_number, g.log_index) for p in pages for g in p.logs] == list(map(key, rows))

    empty = tmp_path / "empty.logs.jsonl.gz"
    empty.write_bytes(b"")
    src = ArchiveSource(empty, last_block=10, **reader)
    pages = await collect(src, 0, None, [LogFilter(None, [])])
    assert [(p.from_block, p.to_block, p.logs) for p in pages] == [(0, 10, [])]

    cut = tmp_path / "cut.logs.jsonl.gz"
    cut.write_bytes(gzip.compress(text)[:-20])
    with pytest.raises(SourceError, match=r"cut\.logs\.jsonl\.gz: the gzip data ends early"):
        await collect(ArchiveSource(cut, **reader), 0, None, [LogFilter(None, [])])


@pytest.mark.parametrize(
    "change, named",
    [
        ({"address": 5}, "field 'address' must be a hex string, got int 5"),
        ({"topics": "0xab"}, "field 'topics' must be a list of hex strings"),
        ({"logIndex": 7}, "field 'logIndex' must be a hex string, got int 7"),
        ({"data": None}, "field 'data' must be a hex string, got NoneType"),
    ],
)
async def test_the_error_for_a_malformed_log_names_the_field(tmp_path, change, named):
    rows = raw_logs(_data_dir() / "chainstorage.logs.jsonl.gz")[:3]
    rows[1] = dict(rows[1], **change)
    path = write_lines(tmp_path / "named.logs.jsonl", rows)
    with pytest.raises(
        SourceError, match=re.escape("named.logs.jsonl:2: expected") + ".*" + re.escape(named)
    ):
        await collect(ArchiveSource(path), 0, None, [LogFilter(None, [])])


async def test_the_reader_process_ignores_an_evmflow_module_in_the_working_directory(
    tmp_path, monkeypatch
):
    (tmp_path / "evmflow.py").write_text("raise SystemExit('the user file was imported')\n")
    monkeypatch.chdir(tmp_path)
    src = source("chainstorage", process=True)
    pages = await collect(src, 0, None, [LogFilter(None, [])])
    logs = raw_logs(_data_dir() / "chainstorage.logs.jsonl.gz")
    assert [(g.block_number, g.log_index) for p in pages for g in p.logs] == list(map(key, logs))
