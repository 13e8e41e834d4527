"""Entity value checks: what ``set`` accepts, how it normalises, and what it refuses."""

from __future__ import annotations

import pytest

from evmflow.entities import make_entity_classes
from evmflow.errors import EntityError
from evmflow.schema import parse_schema

SCHEMA = """
type Holder @entity {
  id: ID!
  address: Bytes!
  note: Bytes
  balance: BigInt!
}
"""


@pytest.fixture
def holder() -> type:
    return make_entity_classes(parse_schema(SCHEMA))["Holder"]


def test_bytes_are_stored_as_lowercase_hex_however_often_a_value_was_seen(holder):
    mixed = "0xAbCd" + "ef" * 19
    lower = mixed.lower()
    for _ in range(3):  # the lowercase form is remembered once checked; the mixed one is not
        assert holder(id="a", address=lower, note=None, balance=1).to_row()[1] == lower
        assert holder(id="a", address=mixed, note=mixed, balance=1).to_row()[1:3] == (lower, lower)
    raw = bytes(range(20))
    assert holder(id="a", address=raw, balance=0).to_row()[1] == "0x" + raw.hex()


@pytest.mark.parametrize(
    "value, message",
    [
        ("0xabc", "expects bytes or a 0x-prefixed even-length hex str, got str '0xabc'"),
        ("abcd", "got str 'abcd'"),
        ("0xzz", "got str '0xzz'"),
        (["0xab"], "got list"),
        (12, "got int 12"),
        (None, "Holder.address is required"),
    ],
)
def test_bad_bytes_are_refused_even_after_good_ones_were_seen(holder, value, message):
    holder(id="a", address="0xabcd", balance=1).to_row()
    with pytest.raises(EntityError, match=message.replace("(", r"\(").replace("[", r"\[")):
        holder(id="a", address=value, balance=1).to_row()
