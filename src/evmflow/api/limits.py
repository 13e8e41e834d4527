"""Limits that refuse a query before it reaches the database.

A GraphQL query can nest references and derived lists without end (token -> accounts ->
token -> accounts ...) and repeat a costly field under many aliases. Depth and alias counts
are checked on the parsed document; the page size (``first``) is checked when a list field
is resolved, where variables are known.
"""

from __future__ import annotations

import graphql as gql

MAX_DEPTH = 10
MAX_ALIASES = 30


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


def check_limits(document: gql.DocumentNode) -> list[gql.GraphQLError]:
    """The errors of a document that goes over a limit; empty when it is within them."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, gql.FragmentDefinitionNode)
    }
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
