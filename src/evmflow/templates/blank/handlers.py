from __future__ import annotations

from typing import TYPE_CHECKING

from evmflow.contracts import WETH
from evmflow.entities import Depositor

if TYPE_CHECKING:
    # Types only: 'evmflow codegen' writes them to typings/ for your editor and mypy.
    from evmflow.entities import Context


@WETH.Deposit.handler
async def on_deposit(event: WETH.Deposit.Event, context: Context) -> None:
    depositor = await context.Depositor.get(event.params.dst)
    if depositor is None:
        depositor = Depositor(id=event.params.dst, total=0, deposits=0, lastBlock=0)
    depositor.total += event.params.wad
    depositor.deposits += 1
    depositor.lastBlock = event.block_number
    context.Depositor.set(depositor)
