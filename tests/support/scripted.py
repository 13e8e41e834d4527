"""Test projects whose handlers follow a script, fed by a source that serves chosen logs.

Each event is one ERC-20 Transfer log; its (block, log index) selects the operations the
handler performs from ``probe.PROGRAM``, and what it reads goes to ``probe.READS``.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

from evmflow.sources.base import BlockHeader, Log, LogFilter, Page

TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
ERC20_ABI = Path("/work/shared/data/abis/ERC20.openzeppelin-4.9.6.json")
TOKEN = "0x" + "ab" * 20

SCHEMA = """
type Item @entity {
  id: ID!
  owner: String! @index
  score: Int!
}
"""

HANDLERS = """
import asyncio

from evmflow.contracts import ERC20
from evmflow.entities import Item
from tests.support import probe


@ERC20.Transfer.handler
async def run_script(event, context):
    for op in probe.PROGRAM.get((event.block_number, event.log_index), []):
        kind = op[0]
        if kind == "set":
            context.Item.set(Item(id=op[1], owner=op[2], score=op[3]))
        elif kind == "delete":
            context.Item.delete(op[1])
        elif kind == "pause":
            await asyncio.sleep(0)
        elif kind == "get":
            item = await context.Item.get(op[1])
            seen = None if item is None else (item.id, item.owner, item.score)
            if not context.is_preload:
                probe.READS.append((event.block_number, event.log_index, op, seen))
        elif kind == "where":
            items = await context.Item.get_where(**{op[1]: op[2]})
            if not context.is_preload:
                probe.READS.append(
                    (event.block_number, event.log_index, op, [i.id for i in items])
                )
"""


def abi_path() -> Path:
    # The ABI is copied next to the project so the test works from a CI clone too.
    here = (
        Path(__file__).resolve().parents[2] / "examples" / "erc20-mainnet" / "abis" / "ERC20.json"
    )
    return here


def write_project(
    root: Path,
    schema: str = SCHEMA,
    handlers: str = HANDLERS,
    end_block: int | None = 100,
    chains: list[int] = [1],  # noqa: B006 - read only
    max_reorg_depth: int = 200,
    rollback_on_reorg: bool = True,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "abi.json").write_text(abi_path().read_text())
    (root / "schema.graphql").write_text(textwrap.dedent(schema))
    (root / "handlers.py").write_text(textwrap.dedent(handlers))
    config: dict = {
        "name": "scripted",
        "chains": [
            {
                "id": chain_id,
                "start_block": 1,
                "end_block": end_block,
                "max_reorg_depth": max_reorg_depth,
                "rollback_on_reorg": rollback_on_reorg,
                "archive": {"path": "unused"},
            }
            for chain_id in chains
        ],
        "contracts": [{"name": "ERC20", "abi": "abi.json", "events": ["Transfer"]}],
    }
    (root / "unused.logs.jsonl").write_text("")
    (root / "evmflow.yaml").write_text(json.dumps(config, indent=2))
    return root


def transfer_log(block: int, index: int, value: int = 1) -> Log:
    return Log(
        TOKEN,
        [TRANSFER, "0x" + "00" * 12 + "11" * 20, "0x" + "00" * 12 + "22" * 20],
        "0x" + format(value, "064x"),
        block,
        "0x" + format(block, "064x"),
        "0x" + format(block * 1000 + index, "064x"),
        0,
        index,
        1_700_000_000 + block,
    )


class ListSource:
    """Serves fixed logs as pages of ``page_blocks`` blocks, up to ``last_block``."""

    def __init__(self, logs: list[Log], last_block: int, page_blocks: int = 1) -> None:
        self.logs = sorted(logs, key=lambda x: (x.block_number, x.log_index))
        self.last_block = last_block
        self.page_blocks = page_blocks

    async def head(self) -> int:
        return self.last_block

    async def pages(
        self, from_block: int, to_block: int | None, filters: list[LogFilter]
    ) -> AsyncIterator[Page]:
        end = self.last_block if to_block is None else min(to_block, self.last_block)
        block = from_block
        while block <= end:
            last = min(block + self.page_blocks - 1, end)
            logs = [x for x in self.logs if block <= x.block_number <= last]
            headers = {
                x.block_number: BlockHeader(x.block_number, x.block_hash, None, x.block_timestamp)
                for x in logs
            }
            yield Page(block, last, logs, headers)
            block = last + 1

    async def close(self) -> None:
        pass
