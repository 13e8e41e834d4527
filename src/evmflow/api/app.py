"""The HTTP server: GraphQL over the index, GraphiQL, /metrics, /healthz and /ready.

Routes:

- ``POST /graphql`` (and ``POST /``): ``{"query", "variables", "operationName"}`` as JSON;
  ``GET /graphql?query=...`` works too. The answer is ``{"data", "errors"}``; a refused
  query (syntax, validation, limits) answers 400 with ``errors`` only.
- ``GET /`` and ``GET /graphql`` without a query: the GraphiQL page.
- ``GET /metrics``: Prometheus text format, when the app was given an indexer.
- ``GET /healthz``: 200 while the process runs.
- ``GET /ready``: 200 when every chain is ready (see health.py), else 503; JSON body.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import graphql as gql
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..project import Project, load_project
from ..storage.base import CHAINS_TABLE
from .graph import Loader, RequestContext, build_graphql_schema, query_names
from .health import chain_statuses, index_ready
from .limits import check_limits, check_rows
from .reader import Snapshot, open_reader

log = logging.getLogger(__name__)


class QueryService:
    """Runs GraphQL requests against one index, each in one read snapshot."""

    def __init__(self, project: Project, db_url: str, indexer: Any = None) -> None:
        self.project = project
        self.indexer = indexer
        self.schema, self.compiler = build_graphql_schema(project.schema)
        self.reader = open_reader(db_url)

    async def committed(self, snapshot: Snapshot) -> dict[int, tuple[int, int]]:
        rows = await snapshot.fetch(f"SELECT chain_id, block, events FROM {CHAINS_TABLE}", [])
        return {int(c): (int(b), int(e)) for c, b, e in rows}

    async def execute(
        self, query: str, variables: dict | None, operation: str | None
    ) -> tuple[int, dict]:
        try:
            document = gql.parse(query)
        except gql.GraphQLError as exc:
            return 400, {"errors": [exc.formatted]}
        refused = check_limits(document)
        if not refused:
            refused = gql.validate(self.schema, document)
        if not refused:
            refused = check_rows(self.schema, document, variables, operation)
        if refused:
            return 400, {"errors": [e.formatted for e in refused]}

        async with self.reader.snapshot() as snapshot:
            loader = Loader(snapshot, self.compiler, self.project.schema)

            async def meta() -> list[dict]:
                committed = await self.committed(snapshot)
                statuses = chain_statuses(self.project.config.chains, committed, self.indexer)
                return [s.as_dict() for s in statuses]

            result = gql.execute(
                self.schema,
                document,
                variable_values=variables,
                operation_name=operation,
                context_value=RequestContext(loader, meta),
            )
            if not isinstance(result, gql.ExecutionResult):
                result = await result
        answer: dict[str, Any] = {"data": result.data}
        if result.errors:
            answer["errors"] = [e.formatted for e in result.errors]
            for error in result.errors:
                if error.original_error is not None and not isinstance(
                    error.original_error, gql.GraphQLError
                ):
                    log.warning("query failed: %s", error.original_error)
        return (200 if result.data is not None else 400), answer

    async def readiness(self) -> tuple[bool, dict]:
        try:
            async with self.reader.snapshot() as snapshot:
                committed = await self.committed(snapshot)
        except Exception as exc:
            return False, {"ready": False, "reason": f"cannot read the index: {exc}"}
        statuses = chain_statuses(self.project.config.chains, committed, self.indexer)
        ready, reason = index_ready(statuses, self.indexer)
        return ready, {
            "ready": ready,
            "reason": reason,
            "chains": [s.as_dict() for s in statuses],
        }


def _example_query(project: Project) -> str:
    entity = next(iter(project.schema.entities.values()))
    _, many = query_names(entity.name)
    fields = [f.name for f in entity.stored_fields if f.kind in ("scalar", "enum")][:4]
    return (
        f"{{\n  {many}(first: 5) {{\n"
        + "".join(f"    {name}\n" for name in fields)
        + "  }\n  _meta {\n    chains { chain_id block events ready }\n  }\n}\n"
    )


def create_app(
    project: Project | str | Path, db_url: str | None = None, indexer: Any = None
) -> Starlette:
    """The ASGI app serving ``project``'s index at ``db_url``.

    ``db_url`` defaults as ``evmflow run`` does (``--db``, the config's database,
    DATABASE_URL, then SQLite in the project folder). Give ``indexer`` (an
    ``evmflow.engine.Indexer`` running in this process) to serve /metrics and to judge
    readiness of live chains.
    """
    from ..engine import database_url

    if not isinstance(project, Project):
        project = load_project(project)
    service = QueryService(project, database_url(project, db_url), indexer)
    page = _example_query(project)

    async def graphql_endpoint(request: Request) -> Response:
        if request.method == "GET":
            query = request.query_params.get("query")
            if query is None:
                from .page import graphiql_page

                return HTMLResponse(graphiql_page(project.config.name, page))
            raw_variables = request.query_params.get("variables")
            operation = request.query_params.get("operationName")
            try:
                variables = json.loads(raw_variables) if raw_variables else None
            except ValueError:
                return _bad_request("variables is not valid JSON")
        else:
            try:
                body = await request.json()
            except ValueError:
                return _bad_request('the body is not JSON; send {"query": "..."}')
            if not isinstance(body, dict) or not isinstance(body.get("query"), str):
                return _bad_request("send a JSON object with a 'query' string")
            query = body["query"]
            variables = body.get("variables")
            operation = body.get("operationName")
        if variables is not None and not isinstance(variables, dict):
            return _bad_request("variables must be a JSON object")
        status, answer = await service.execute(query, variables, operation)
        return JSONResponse(answer, status_code=status)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(_request: Request) -> Response:
        is_ready, body = await service.readiness()
        return JSONResponse(body, status_code=200 if is_ready else 503)

    routes = [
        Route("/", graphql_endpoint, methods=["GET", "POST"]),
        Route("/graphql", graphql_endpoint, methods=["GET", "POST"]),
        Route("/healthz", healthz),
        Route("/ready", ready),
    ]
    if indexer is not None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from .metrics import make_registry

        registry = make_registry(indexer)

        async def metrics(_request: Request) -> Response:
            return PlainTextResponse(
                generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        routes.append(Route("/metrics", metrics))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await service.reader.open()
        try:
            yield
        finally:
            await service.reader.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    return app


def _bad_request(message: str) -> Response:
    return JSONResponse({"errors": [{"message": message}]}, status_code=400)
