"""Limits that refuse a query before it reaches the database.

A GraphQL query can nest references and derived lists without end (token -> accounts ->
token -> accounts ...) and repeat a costly field under many aliases. Depth and alias counts
are checked on the parsed document. After validation, the rows a query may load are
estimated: each list multiplies what is below it by its page size (``first``, 100 unless
given), so ``tokens(first: 1000) { accounts(first: 1000) { id } }`` counts a million rows and
is refused though each page alone is allowed. The page size itself is checked when a list
field is resolved.
"""

from __future__ import annotations

from typing import Any

import graphql as gql

MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_ROWS = 100_000


def _depth(
    selection_set: gql.SelectionSetNode | None,
    fragments: dict[str, gql.FragmentDefinitionNode],
    seen: frozenset[str],
) -> int:
    if selection_set is None:
        return 0
    deepest = 0
    for selection in selection_set.selections:
        if isinstance(selection, gql.FieldNode):
            # Introspection (GraphiQL's own schema query nests deep) costs no database reads.
            if selection.name.value.startswith("__"):
                continue
            deepest = max(deepest, 1 + _depth(selection.selection_set, fragments, seen))
        elif isinstance(selection, gql.InlineFragmentNode):
            deepest = max(deepest, _depth(selection.selection_set, fragments, seen))
        elif isinstance(selection, gql.FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:
                deepest = max(deepest, _depth(fragment.selection_set, fragments, seen | {name}))
    return deepest


def _aliases(document: gql.DocumentNode) -> int:
    count = 0

    class Counter(gql.Visitor):
        def enter_field(self, node: gql.FieldNode, *_args: object) -> None:
            nonlocal count
            if node.alias is not None:
                count += 1

    gql.visit(document, Counter())
    return count


def _fragments(document: gql.DocumentNode) -> dict[str, gql.FragmentDefinitionNode]:
    return {
        d.name.value: d for d in document.definitions if isinstance(d, gql.FragmentDefinitionNode)
    }


def check_limits(document: gql.DocumentNode) -> list[gql.GraphQLError]:
    """The errors of a document that goes over a limit; empty when it is within them."""
    fragments = _fragments(document)
    errors: list[gql.GraphQLError] = []
    for definition in document.definitions:
        if not isinstance(definition, gql.OperationDefinitionNode):
            continue
        depth = _depth(definition.selection_set, fragments, frozenset())
        if depth > MAX_DEPTH:
            name = definition.name.value if definition.name else "the query"
            errors.append(
                gql.GraphQLError(
                    f"{name} nests {depth} levels deep; the limit is {MAX_DEPTH}. "
                    "Split it into several queries, or fetch the inner objects by id."
                )
            )
    aliases = _aliases(document)
    if aliases > MAX_ALIASES:
        errors.append(
            gql.GraphQLError(
                f"the query uses {aliases} aliases; the limit is {MAX_ALIASES}. "
                "Send several smaller queries."
            )
        )
    return errors


def _page_size(node: gql.FieldNode, variables: dict[str, Any], default: int) -> int:
    for argument in node.arguments or ():
        if argument.name.value != "first":
            continue
        value = argument.value
        if isinstance(value, gql.VariableNode):
            given = variables.get(value.name.value, default)
            return given if isinstance(given, int) else default
        if isinstance(value, gql.IntValueNode):
            return int(value.value)
        return default
    return default


class _RowEstimate:
    def __init__(
        self,
        schema: gql.GraphQLSchema,
        fragments: dict[str, gql.FragmentDefinitionNode],
        variables: dict[str, Any],
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables

    def rows(
        self,
        parent: gql.GraphQLObjectType,
        selection_set: gql.SelectionSetNode | None,
        multiplier: int,
        seen: frozenset[str] = frozenset(),
    ) -> int:
        """Rows loaded under ``selection_set`` when ``parent`` occurs ``multiplier`` times."""
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, gql.FieldNode):
                field = parent.fields.get(selection.name.value)
                if field is None or selection.selection_set is None:
                    continue  # a scalar, or introspection
                target = gql.get_named_type(field.type)
                if not isinstance(target, gql.GraphQLObjectType):
                    continue
                count = multiplier
                if "first" in field.args:
                    default = field.args["first"].default_value
                    count *= _page_size(selection, self.variables, int(default))
                total += count + self.rows(target, selection.selection_set, count, seen)
            elif isinstance(selection, gql.InlineFragmentNode):
                total += self.rows(parent, selection.selection_set, multiplier, seen)
            elif isinstance(selection, gql.FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is not None and name not in seen:
                    total += self.rows(parent, fragment.selection_set, multiplier, seen | {name})
        return total


def check_rows(
    schema: gql.GraphQLSchema,
    document: gql.DocumentNode,
    variables: dict[str, Any] | None,
    operation_name: str | None,
) -> list[gql.GraphQLError]:
    """Refuse an operation that may load more than MAX_ROWS rows (run after validation)."""
    operation = gql.get_operation_ast(document, operation_name)
    if operation is None or schema.query_type is None:
        return []
    fragments = _fragments(document)
    estimate = _RowEstimate(schema, fragments, variables or {})
    rows = estimate.rows(schema.query_type, operation.selection_set, 1)
    if rows <= MAX_ROWS:
        return []
    return [
        gql.GraphQLError(
            f"the query may load {rows:,} rows; the limit is {MAX_ROWS:,}. Ask for smaller "
            "pages (first) in nested lists, or split the query."
        )
    ]
