from evmflow.contracts import Factory, Pair
from evmflow.entities import Pair as PairEntity
from evmflow.entities import Swap


async def load_pair(context, address: str):
    """The pair, made on first sight: the data may begin long after the pair was created."""
    pair = await context.Pair.get(address)
    if pair is None:
        pair = PairEntity(id=address, reserve0=0, reserve1=0, swapCount=0, volume0=0, volume1=0)
    return pair


@Factory.PairCreated.handler
async def on_pair_created(event, context):
    pair = await load_pair(context, event.params.pair)
    pair.token0 = event.params.token0
    pair.token1 = event.params.token1
    pair.createdAtBlock = event.block_number
    context.Pair.set(pair)


@Pair.Sync.handler
async def on_sync(event, context):
    pair = await load_pair(context, event.address)
    pair.reserve0 = event.params.reserve0
    pair.reserve1 = event.params.reserve1
    context.Pair.set(pair)


@Pair.Swap.handler
async def on_swap(event, context):
    p = event.params
    pair = await load_pair(context, event.address)
    pair.swapCount += 1
    pair.volume0 += p.amount0In + p.amount0Out
    pair.volume1 += p.amount1In + p.amount1Out
    context.Pair.set(pair)

    context.Swap.set(
        Swap(
            id=f"{event.block_number}-{event.log_index}",
            pair=event.address,
            sender=p.sender,
            to=p.to,
            amount0In=p.amount0In,
            amount1In=p.amount1In,
            amount0Out=p.amount0Out,
            amount1Out=p.amount1Out,
            timestamp=event.block_timestamp,
            transaction=event.transaction_hash,
        )
    )
