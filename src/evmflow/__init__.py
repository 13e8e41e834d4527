"""evmflow: index EVM smart-contract events into SQL."""

__version__ = "0.1.0"
