"""GraphQL for the web front end (``POST /api/graphql``), next to the REST API.

The endpoint authenticates exactly like REST: the context getter takes the ``actor``
dependency (bearer token or the web UI's cookies, CSRF check included, per-user rate limit
included), so an unauthenticated request gets the same 401 problem. Resolvers call the same
read functions as the REST handlers (:mod:`sygmax.auth.workspaces`), so the access rules are
the same: a workspace the caller is not a member of is "not found" (``null`` plus an error
with ``extensions.code = "not-found"``), whatever id is asked for.

Hostile queries are refused before anything runs: depth (``gateway.graphql_max_depth``),
tokens (``gateway.graphql_max_tokens``) and aliases (``gateway.graphql_max_aliases``) are
limited, the body size by ``server.max_request_body``, queries only over POST (no GET, so no
cross-site reads through a link), and there is no GraphiQL page. Unexpected errors are
masked ("Unexpected error.") and logged with the request id.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar

import msgspec
import strawberry
import structlog
from graphql import GraphQLError
from litestar import Request, Response, post
from litestar.background_tasks import BackgroundTasks
from litestar.di import NamedDependency, Provide
from strawberry.dataloader import DataLoader
from strawberry.extensions import MaskErrors, MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.litestar import make_graphql_controller
from strawberry.litestar.controller import GraphQLResource
from strawberry.types import Info

from sygmax.auth import workspaces as ws
from sygmax.auth.audit import source_of
from sygmax.auth.tokens import Actor
from sygmax.config import GatewaySettings
from sygmax.errors import Problem
from sygmax.kernel import Kernel

log = structlog.get_logger("sygmax.graphql")

GRAPHQL_PATH = "/api/graphql"


def _problem_error(problem: Problem) -> GraphQLError:
    return GraphQLError(problem.detail, extensions={"code": problem.slug, "status": problem.status_code})


def _uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise GraphQLError(f"{field}: not a valid id", extensions={"code": "validation-error", "status": 400,
                                                                  "field": field}) from None


@strawberry.type(description="A user account")
class User:
    id: strawberry.ID
    email: str
    display_name: str
    is_admin: bool


@strawberry.type(description="A member of a workspace")
class Member:
    user_id: strawberry.ID
    email: str
    display_name: str
    role: str
    joined_at: datetime

    @classmethod
    def of(cls, row) -> "Member":
        return cls(user_id=strawberry.ID(str(row["user_id"])), email=row["email"], display_name=row["display_name"],
                   role=row["role"] or row["role_name"], joined_at=row["joined_at"])


# Members of several workspaces in one query (a DataLoader per request batches Workspace.members).
_MEMBERS_OF = """
SELECT m.workspace_id, m.user_id, u.email, u.display_name, m.role, r.name AS role_name, m.joined_at
FROM sygmax_membership m JOIN sygmax_user u ON u.id = m.user_id
LEFT JOIN sygmax_role r ON r.workspace_id = m.workspace_id AND r.id = m.role_id
WHERE m.workspace_id = ANY($1::uuid[])
ORDER BY lower(u.display_name), m.user_id
"""


async def _load_members(pool, workspace_ids: list[uuid.UUID]) -> list[list[Member]]:
    found: dict[uuid.UUID, list[Member]] = {workspace_id: [] for workspace_id in workspace_ids}
    for row in await pool.fetch(_MEMBERS_OF, list(workspace_ids)):
        found[row["workspace_id"]].append(Member.of(row))
    return [found[workspace_id] for workspace_id in workspace_ids]


@strawberry.type(description="A workspace the caller is a member of, with the caller's role there")
class Workspace:
    id: strawberry.ID
    name: str
    role: str
    permissions: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: ws.WorkspaceView) -> "Workspace":
        return cls(id=strawberry.ID(str(view.id)), name=view.name, role=view.role, permissions=view.permissions,
                   created_at=view.created_at, updated_at=view.updated_at)

    @strawberry.field(description="The members; null (and a forbidden error) without members.read here")
    async def members(self, info: Info) -> list[Member] | None:
        # A Workspace only ever comes from a read that checked the caller's membership, and its
        # permissions are the caller's there (token scopes included): the same rule as REST.
        if "members.read" not in self.permissions:
            raise GraphQLError("You need the members.read permission for this",
                               extensions={"code": "forbidden", "status": 403})
        context = info.context
        loader = context.get("members_loader")
        if loader is None:
            pool = context["kernel"].db.pool
            loader = context["members_loader"] = DataLoader(load_fn=lambda ids: _load_members(pool, ids))
        return await loader.load(uuid.UUID(str(self.id)))


def _context(info: Info) -> tuple[Actor, Kernel, Any]:
    context = info.context
    return context["actor"], context["kernel"], context["source"]


@strawberry.type
class Query:
    @strawberry.field(description="The authenticated user")
    async def me(self, info: Info) -> User:
        actor, kernel, _ = _context(info)
        row = await kernel.db.pool.fetchrow(
            "SELECT id, email, display_name, is_admin FROM sygmax_user WHERE id = $1", actor.user_id)
        if row is None:
            raise GraphQLError("No such user", extensions={"code": "not-found", "status": 404})
        return User(id=strawberry.ID(str(row["id"])), email=row["email"], display_name=row["display_name"],
                    is_admin=row["is_admin"])

    @strawberry.field(description="The workspaces the caller is a member of")
    async def workspaces(self, info: Info) -> list[Workspace]:
        actor, kernel, _ = _context(info)
        views = await ws.list_workspaces(actor, kernel.db.pool, plugins=list(kernel.plugins.values()))
        return [Workspace.of(view) for view in views]

    @strawberry.field(description="One workspace; null (and a not-found error) unless the caller is a member")
    async def workspace(self, info: Info, id: strawberry.ID) -> Workspace | None:
        actor, kernel, source = _context(info)
        try:
            view = await ws.get_workspace(actor, kernel.db.pool, _uuid(id, "id"),
                                          plugins=list(kernel.plugins.values()), source=source)
        except Problem as problem:
            raise _problem_error(problem) from None
        return Workspace.of(view)

    @strawberry.field(description="The members of a workspace; null (and an error) unless the caller may see them")
    async def members(self, info: Info, workspace_id: strawberry.ID) -> list[Member] | None:
        actor, kernel, source = _context(info)
        try:
            views = await ws.list_members(actor, kernel.db.pool, _uuid(workspace_id, "workspaceId"), source=source)
        except Problem as problem:
            raise _problem_error(problem) from None
        return [Member(user_id=strawberry.ID(str(view.user_id)), email=view.email, display_name=view.display_name,
                       role=view.role, joined_at=view.joined_at) for view in views]


def _should_mask(error: GraphQLError) -> bool:
    """Mask what nobody meant to say: errors raised by anything but a deliberate GraphQLError."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


class SygmaxSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context=None) -> None:
        for error in errors:
            original = error.original_error
            if original is not None and not isinstance(original, GraphQLError):
                log.error("graphql_unexpected_error", path=error.path, exc_info=original)


def build_schema(settings: GatewaySettings) -> strawberry.Schema:
    return SygmaxSchema(
        query=Query,
        # Factories: strawberry builds fresh extension instances for every request.
        extensions=[
            lambda: QueryDepthLimiter(max_depth=settings.graphql_max_depth),
            lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
            lambda: MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases),
            lambda: MaskErrors(should_mask_error=_should_mask),
        ],
    )


async def graphql_context(request: Request, response: NamedDependency[Response], actor: NamedDependency[Actor],
                          kernel: NamedDependency[Kernel]) -> dict[str, Any]:
    """Litestar dependency: the same actor (and 401) as every REST route."""
    return {"request": request, "response": response, "actor": actor, "kernel": kernel,
            "source": source_of(request)}


class GraphQLRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The JSON envelope of a GraphQL request (no batching, no multipart uploads)."""

    query: Annotated[str, msgspec.Meta(max_length=100_000)]
    variables: dict[str, Any] | None = None
    operationName: str | None = None  # noqa: N815 - the GraphQL-over-HTTP field name
    extensions: dict[str, Any] | None = None


async def check_envelope(request: Request) -> None:
    """Refuse, as problem details, what strawberry would answer with a 500 or a plain-text 400."""
    if request.content_type[0] != "application/json":
        raise Problem(415, "unsupported-media-type", "Send the GraphQL request as application/json")
    try:
        msgspec.json.decode(await request.body(), type=GraphQLRequest)
    except msgspec.ValidationError as exc:
        raise Problem(400, "validation-error", f"GraphQL request: {exc}", field=str(exc).rpartition("`$.")[2]
                      .rstrip("`") or "body") from None
    except msgspec.DecodeError as exc:
        raise Problem(400, "malformed-body", f"Request body is not valid JSON: {exc}") from None


def _sub_response() -> Response:
    """Where resolvers may put headers or a status for the answer (strawberry merges it in)."""
    return Response({}, background=BackgroundTasks([]))


async def _no_root_value() -> None:
    return None


def graphql_controller(settings: GatewaySettings) -> type:
    base = make_graphql_controller(
        build_schema(settings),
        path=GRAPHQL_PATH,
        graphql_ide=None,
        allow_queries_via_get=False,
        subscription_protocols=(),
    )

    class GraphQLController(base):  # type: ignore[valid-type, misc]
        # Not part of the REST contract: GraphQL has its own schema (introspection), and its
        # request/response shapes are not expressible as one OpenAPI operation.
        include_in_schema = False
        tags = ["graphql"]
        # POST only (no GET: queries in URLs leak into logs and allow cross-site reads via links),
        # no WebSocket subscriptions (the realtime profile owns WebSockets).
        handle_http_get = None
        websocket_endpoint = None
        # Our own providers, every dependency named explicitly (strawberry's rely on inferred ones).
        dependencies: ClassVar[dict[str, Provide]] = {
            "context": Provide(graphql_context),
            "root_value": Provide(_no_root_value),
            "response": Provide(_sub_response, sync_to_thread=False),
        }

        @post(status_code=200)
        async def handle_http_post(self, request: Request, context: NamedDependency[Any],
                                   root_value: NamedDependency[Any],
                                   response: NamedDependency[Response]) -> Response[GraphQLResource | str]:
            await check_envelope(request)
            self.temporal_response = response
            return await self.execute_request(request=request, context=context, root_value=root_value)

    return GraphQLController
