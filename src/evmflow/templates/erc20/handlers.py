from evmflow.contracts import ERC20
from evmflow.entities import Account, Token, Transfer


async def add_to_account(context, token: str, holder: str, delta: int) -> None:
    account_id = f"{token}-{holder}"
    account = await context.Account.get(account_id)
    if account is None:
        account = Account(id=account_id, token=token, holder=holder, balance=0, transfers=0)
    account.balance += delta
    account.transfers += 1
    context.Account.set(account)


@ERC20.Transfer.handler
async def on_transfer(event, context):
    token_address = event.address
    value = event.params.value

    token = await context.Token.get(token_address)
    if token is None:
        token = Token(id=token_address, transfers=0, volume=0)
    token.transfers += 1
    token.volume += value
    context.Token.set(token)

    await add_to_account(context, token_address, event.params.from_, -value)
    await add_to_account(context, token_address, event.params.to, value)

    context.Transfer.set(
        Transfer(
            id=f"{event.chain_id}-{event.block_number}-{event.log_index}",
            token=token_address,
            from_=event.params.from_,
            to=event.params.to,
            value=value,
            block=event.block_number,
            timestamp=event.block_timestamp,
            transaction=event.transaction_hash,
        )
    )
