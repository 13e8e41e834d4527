"""The block handlers of the project being loaded: ``from evmflow.blocks import Hourly``."""

from .handlers import BlockRef, block_ref


def __getattr__(name: str) -> BlockRef:
    if name.startswith("__"):
        raise AttributeError(name)
    return block_ref(name)
