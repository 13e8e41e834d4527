from evmflow.contracts import WETH
from evmflow.entities import Depositor


@WETH.Deposit.handler
async def on_deposit(event, context):
    depositor = await context.Depositor.get(event.params.dst)
    if depositor is None:
        depositor = Depositor(id=event.params.dst, total=0, deposits=0, lastBlock=0)
    depositor.total += event.params.wad
    depositor.deposits += 1
    depositor.lastBlock = event.block_number
    context.Depositor.set(depositor)
