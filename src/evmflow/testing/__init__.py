"""Test a project's handlers: made-up events in, stored entities out.

::

    from evmflow.testing import TestIndexer

    def test_transfer_moves_the_balance():
        with TestIndexer("path/to/project") as kit:
            event = kit.event("ERC20", "Transfer", from_=ALICE, to=BOB, value=5)
            kit.run(event)
            assert kit.get("Account", f"{event.address}-{BOB}").balance == 5

See docs/testing.md for the whole API.
"""

from ._encode import EventParamError, indexed_topic
from ._kit import Change, TestIndexer, TestingError

__all__ = ["Change", "EventParamError", "TestIndexer", "TestingError", "indexed_topic"]
