"""The contracts of the project being loaded: ``from evmflow.contracts import ERC20``."""

from .handlers import ContractRef, contract_ref


def __getattr__(name: str) -> ContractRef:
    if name.startswith("__"):
        raise AttributeError(name)
    return contract_ref(name)
