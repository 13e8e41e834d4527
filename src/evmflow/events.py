"""The event object a handler receives."""

from __future__ import annotations

from typing import Any


class Event:
    """One decoded log.

    ``params`` holds the decoded parameters by name (``event.params.value``); an ABI name that is
    a Python keyword gets a trailing underscore (``event.params.from_``) and stays reachable by
    its ABI name (``event.params["from"]``). Addresses and hashes are lowercase ``0x`` hex.
    """

    __slots__ = (
        "chain_id",
        "contract",
        "name",
        "params",
        "address",
        "block_number",
        "block_hash",
        "block_timestamp",
        "transaction_hash",
        "transaction_index",
        "log_index",
        "checkpoint",
        "_handlers",
    )

    def __init__(
        self,
        chain_id: int,
        contract: str,
        name: str,
        params: Any,
        address: str,
        block_number: int,
        block_hash: str,
        block_timestamp: int,
        transaction_hash: str,
        transaction_index: int,
        log_index: int,
        checkpoint: int = 0,
    ) -> None:
        self.chain_id = chain_id
        self.contract = contract
        self.name = name
        self.params = params
        self.address = address
        self.block_number = block_number
        self.block_hash = block_hash
        self.block_timestamp = block_timestamp
        self.transaction_hash = transaction_hash
        self.transaction_index = transaction_index
        self.log_index = log_index
        self.checkpoint = checkpoint
        self._handlers: list = []

    def __repr__(self) -> str:
        return (
            f"Event({self.contract}.{self.name}, chain={self.chain_id}, "
            f"block={self.block_number}, log_index={self.log_index}, params={self.params!r})"
        )


class BlockEvent:
    """What a block handler receives: the block's number, hash and timestamp.

    ``block_hash`` and ``block_timestamp`` are None where the source cannot give the header
    (an archive without that block in its blocks file).
    """

    __slots__ = (
        "chain_id",
        "contract",
        "name",
        "block_number",
        "block_hash",
        "block_timestamp",
        "checkpoint",
        "log_index",
        "transaction_hash",
        "_handlers",
    )

    def __init__(
        self,
        chain_id: int,
        name: str,
        block_number: int,
        block_hash: str | None,
        block_timestamp: int | None,
        checkpoint: int,
        handlers: list,
    ) -> None:
        self.chain_id = chain_id
        self.contract = name
        self.name = "block"
        self.block_number = block_number
        self.block_hash = block_hash
        self.block_timestamp = block_timestamp
        self.checkpoint = checkpoint
        self.log_index = None
        self.transaction_hash = None
        self._handlers = handlers

    def __repr__(self) -> str:
        return f"BlockEvent({self.contract}, chain={self.chain_id}, block={self.block_number})"
