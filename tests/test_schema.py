"""schema.graphql: what a good schema describes, and the one error each kind of mistake gives."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from evmflow.errors import SchemaError
from evmflow.schema import EntitySpec, FieldSpec, SchemaSpec, load_schema, parse_schema


def write_schema(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schema.graphql"
    path.write_text(textwrap.dedent(text))
    return path


def schema_error(tmp_path: Path, text: str) -> SchemaError:
    path = write_schema(tmp_path, text)
    with pytest.raises(SchemaError) as caught:
        load_schema(path)
    return caught.value


TOKENS = """\
enum Side { BUY SELL }

type Account @entity {
  balance: BigInt!
  id: Bytes!
  sent: [Transfer!]! @derivedFrom(field: "from")
  tags: [String!]
}

type Transfer @entity {
  id: ID!
  from: Account!
  to: Account @index
  order: Int
  user: String
  side: Side!
  sides: [Side!]!
  amount: BigDecimal
  at: Timestamp!
  ok: Boolean
  ratio: Float
  extra: Json
}
"""


def test_entities_enums_references_and_derived_fields(tmp_path):
    path = write_schema(tmp_path, TOKENS)

    spec = load_schema(path)

    assert spec == SchemaSpec(
        entities={
            "Account": EntitySpec(
                name="Account",
                line=3,
                fields=[
                    FieldSpec("id", "scalar", "Bytes", required=True, line=5),
                    FieldSpec("balance", "scalar", "BigInt", required=True, line=4),
                    FieldSpec(
                        "sent",
                        "derived",
                        "Transfer",
                        required=True,
                        is_list=True,
                        derived_from="from",
                        line=6,
                    ),
                    FieldSpec("tags", "scalar", "String", required=False, is_list=True, line=7),
                ],
            ),
            "Transfer": EntitySpec(
                name="Transfer",
                line=10,
                fields=[
                    FieldSpec("id", "scalar", "ID", required=True, line=11),
                    FieldSpec("from", "ref", "Account", required=True, line=12),
                    FieldSpec("to", "ref", "Account", required=False, indexed=True, line=13),
                    FieldSpec("order", "scalar", "Int", required=False, line=14),
                    FieldSpec("user", "scalar", "String", required=False, line=15),
                    FieldSpec("side", "enum", "Side", required=True, line=16),
                    FieldSpec("sides", "enum", "Side", required=True, is_list=True, line=17),
                    FieldSpec("amount", "scalar", "BigDecimal", required=False, line=18),
                    FieldSpec("at", "scalar", "Timestamp", required=True, line=19),
                    FieldSpec("ok", "scalar", "Boolean", required=False, line=20),
                    FieldSpec("ratio", "scalar", "Float", required=False, line=21),
                    FieldSpec("extra", "scalar", "Json", required=False, line=22),
                ],
            ),
        },
        enums={"Side": ["BUY", "SELL"]},
        source=TOKENS,
    )
    assert [f.name for f in spec.entities["Account"].stored_fields] == ["id", "balance", "tags"]


def test_entity_directive_is_optional_and_sql_keywords_are_fine_as_names():
    spec = parse_schema("type order { id: String! select: Int from: order table: [Int] }")

    assert spec.entities["order"].fields == [
        FieldSpec("id", "scalar", "String", required=True, line=1),
        FieldSpec("select", "scalar", "Int", required=False, line=1),
        FieldSpec("from", "ref", "order", required=False, line=1),
        FieldSpec("table", "scalar", "Int", required=False, is_list=True, line=1),
    ]


def test_subgraph_spellings_are_accepted():
    # Subgraph schemas declare their scalars and mark entities immutable: both are harmless.
    spec = parse_schema("scalar BigInt\ntype Swap @entity(immutable: true) { id: ID! v: BigInt }")

    assert list(spec.entities) == ["Swap"]
    assert spec.entities["Swap"].fields[1] == FieldSpec("v", "scalar", "BigInt", False, line=2)


# --- errors -----------------------------------------------------------------------------------


def test_syntax_error_gives_graphql_location(tmp_path):
    error = schema_error(tmp_path, "type A @entity {\n  id: ID!\n  value:\n}\n")

    assert str(error) == (
        f"{tmp_path}/schema.graphql:4: GraphQL syntax error: Expected Name, found '}}'\n"
        "  fix: fix the syntax; a field is written 'name: Type!' inside 'type X @entity { }'"
    )


def test_unknown_type_lists_known_types_and_suggests_the_nearest(tmp_path):
    error = schema_error(tmp_path, "enum Kind { A }\ntype A {\n  id: ID!\n  v: Strng\n}\n")

    assert str(error) == (
        f"{tmp_path}/schema.graphql:4: field A.v has unknown type Strng\n"
        "  fix: did you mean String? known types: A, BigDecimal, BigInt, Boolean, Bytes, Float, "
        "ID, Int, Json, Kind, String, Timestamp"
    )


def test_entity_without_id(tmp_path):
    error = schema_error(tmp_path, "\ntype Pool @entity {\n  fee: Int!\n}\n")

    assert str(error) == (
        f"{tmp_path}/schema.graphql:2: entity Pool needs a field 'id: ID!'\n"
        "  fix: add 'id: ID!' (String! and Bytes! work too) as the entity's key"
    )


def test_id_of_a_wrong_type_or_nullable(tmp_path):
    for text in ("type P {\n  id: Int!\n}", "type P {\n  id: ID\n}", "type P {\n  id: [ID!]!\n}"):
        error = schema_error(tmp_path, text)
        assert (error.line, error.message) == (
            2,
            "entity P needs a field 'id: ID!' (found a different type)",
        )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "type _Meta { id: ID! }",
            "type name '_Meta' starts with '_', which is reserved for evmflow",
        ),
        (
            "type A { id: ID! _block: Int }",
            "field name '_block' starts with '_', which is reserved for evmflow",
        ),
    ],
)
def test_names_starting_with_underscore_are_reserved(tmp_path, text, message):
    error = schema_error(tmp_path, text)

    assert (error.line, error.message, error.hint) == (
        1,
        message,
        "rename it without the leading underscore",
    )


def test_reference_to_an_unknown_entity(tmp_path):
    error = schema_error(tmp_path, "type A {\n  id: ID!\n  owner: Acount!\n}\n")

    assert (error.line, error.message) == (3, "field A.owner has unknown type Acount")


def test_list_of_entities_needs_derived_from(tmp_path):
    error = schema_error(tmp_path, "type A { id: ID! }\ntype B {\n  id: ID!\n  as: [A!]!\n}\n")

    assert str(error) == (
        f"{tmp_path}/schema.graphql:4: field B.as is a list of entities without @derivedFrom\n"
        "  fix: store the reference on the other side: give A a field 'x: B!' and write "
        "'as: [A!]! @derivedFrom(field: \"x\")'"
    )


def test_derived_from_a_missing_field(tmp_path):
    error = schema_error(
        tmp_path,
        'type A {\n  id: ID!\n  bs: [B!]! @derivedFrom(field: "a")\n}\ntype B { id: ID! }\n',
    )

    assert str(error) == (
        f"{tmp_path}/schema.graphql:3: @derivedFrom on A.bs names B.a, which does not exist\n"
        "  fix: fields of B: id"
    )


def test_derived_from_a_field_that_does_not_reference_back(tmp_path):
    error = schema_error(
        tmp_path,
        'type A {\n  id: ID!\n  bs: [B!]! @derivedFrom(field: "a")\n}\n'
        "type B {\n  id: ID!\n  a: String\n}\n",
    )

    assert (error.line, error.message, error.hint) == (
        3,
        "@derivedFrom on A.bs names B.a, which does not reference A",
        "give B a field 'a: A!'",
    )


def test_derived_from_on_a_single_reference(tmp_path):
    error = schema_error(
        tmp_path, 'type A { id: ID! b: B @derivedFrom(field: "a") }\ntype B { id: ID! a: A }'
    )

    assert error.message == "@derivedFrom on A.b needs a list of entities"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "type A { id: ID! }\ninterface Named { name: String }",
            2,
            "interfaces are not supported in schema.graphql",
        ),
        (
            "type A { id: ID! }\ntype B { id: ID! }\nunion U = A | B",
            3,
            "unions are not supported in schema.graphql",
        ),
        (
            "type A { id: ID! }\ninput Filter { a: Int }",
            2,
            "input types are not supported in schema.graphql",
        ),
        ("type A { id: ID! }\nscalar Address", 2, "custom scalar Address is not supported"),
        (
            "type A { id: ID! }\nextend type A { b: Int }",
            2,
            "type extensions ('extend ...') are not supported in schema.graphql",
        ),
        (
            "type A { id: ID! v: [[Int]] }",
            1,
            "field A.v is a list of lists, which is not supported",
        ),
        (
            "type A { id: ID! v(first: Int): Int }",
            1,
            "field A.v has arguments; fields with arguments are not supported",
        ),
        ("type A { id: ID! v: Int @unique }", 1, "unknown directive @unique on field A.v"),
        (
            "type A { id: ID! }\ntype Query { a: A }",
            2,
            "type name Query is reserved for the GraphQL API",
        ),
    ],
)
def test_unsupported_constructs_are_named(tmp_path, text, line, message):
    error = schema_error(tmp_path, text)

    assert (error.file, error.line, error.message) == (
        str(tmp_path / "schema.graphql"),
        line,
        message,
    )


def test_type_defined_twice(tmp_path):
    error = schema_error(tmp_path, "type A { id: ID! }\n\nenum A { X }\n")

    assert (error.line, error.message) == (3, "type A is defined twice (first on line 1)")


def test_field_defined_twice(tmp_path):
    error = schema_error(tmp_path, "type A {\n  id: ID!\n  v: Int\n  v: String\n}")

    assert (error.line, error.message) == (4, "field A.v is defined twice")


def test_schema_without_entities(tmp_path):
    error = schema_error(tmp_path, "enum Side { BUY SELL }\n")

    assert (error.line, error.message) == (None, "the schema defines no entities")


def test_empty_schema(tmp_path):
    error = schema_error(tmp_path, "\n")

    assert str(error) == (
        f"{tmp_path}/schema.graphql: the schema is empty\n"
        "  fix: define your entities, e.g. type Transfer @entity { id: ID! value: BigInt! }"
    )


def test_missing_schema_file(tmp_path):
    with pytest.raises(SchemaError) as caught:
        load_schema(tmp_path / "nope.graphql")

    assert str(caught.value) == (
        f"{tmp_path}/nope.graphql: schema file not found\n"
        "  fix: create it or set 'schema' in evmflow.yaml"
    )
