"""Feature-flag HTTP routes: administration (instance admins) and the caller's own flags."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from litestar import Request, Response, delete, get, put
from litestar.openapi import ResponseSpec
from litestar.params import FromQuery, JSONBody, PathParameter

from sygmax import flags
from sygmax.auth import policy
from sygmax.auth.audit import source_of
from sygmax.auth.tokens import CurrentActor
from sygmax.flags import Flag, FlagIn
from sygmax.kernel import KernelDep

_SECURITY = [{"bearer": []}]
# Documented in the schema, checked by Litestar before the handler: a bad name is a 400 naming the field.
FlagName = Annotated[str, PathParameter(pattern=flags.FLAG_NAME.pattern, max_length=64,
                                        description="a-z, 0-9, '_', '.', '-', starting with a letter")]
_FORBIDDEN = {403: ResponseSpec(None, description="Not an instance administrator")}
_BOTH = {**_FORBIDDEN, 404: ResponseSpec(None, description="No such flag")}


class MyFlags(msgspec.Struct):
    flags: dict[str, bool]
    workspace_id: uuid.UUID | None = None


def _request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


@get("/api/v1/flags", tags=["flags"], summary="Every feature flag (instance admins)", security=_SECURITY,
     responses=_FORBIDDEN)
async def flags_list(actor: CurrentActor, kernel: KernelDep, request: Request) -> list[Flag]:
    return await flags.list_flags(actor, kernel.db.pool, _request_id(request))


@get("/api/v1/flags/me", tags=["flags"], summary="The flags as they apply to the caller (in a workspace)",
     security=_SECURITY, responses={404: ResponseSpec(None, description="No such workspace")})
async def flags_me(actor: CurrentActor, kernel: KernelDep, request: Request,
                   workspace_id: FromQuery[uuid.UUID | None] = None) -> MyFlags:
    if workspace_id is not None:
        async with kernel.db.pool.acquire() as connection:
            await policy.require(connection, actor, "workspace.read", workspace_id=workspace_id,
                                 request_id=_request_id(request), what="workspace")
    return MyFlags(await flags.evaluate_all(kernel, actor, workspace_id), workspace_id)


@get("/api/v1/flags/{name:str}", tags=["flags"], summary="One feature flag (instance admins)", security=_SECURITY,
     responses=_BOTH)
async def flags_get(name: FlagName, actor: CurrentActor, kernel: KernelDep, request: Request) -> Flag:
    return await flags.get_flag(actor, kernel.db.pool, name, _request_id(request))


@put("/api/v1/flags/{name:str}", tags=["flags"], summary="Create or replace a feature flag (instance admins)",
     security=_SECURITY, responses={**_FORBIDDEN, 201: ResponseSpec(Flag, description="Created")})
async def flags_put(name: FlagName, data: JSONBody[FlagIn], actor: CurrentActor, kernel: KernelDep,
                    request: Request) -> Response[Flag]:
    flag, created = await flags.do_set_flag(actor, kernel.db.pool, name, data, source=source_of(request),
                                            kernel=kernel)
    return Response(flag, status_code=201 if created else 200)


@delete("/api/v1/flags/{name:str}", tags=["flags"], summary="Delete a feature flag (instance admins)",
        security=_SECURITY, responses=_BOTH)
async def flags_delete(name: FlagName, actor: CurrentActor, kernel: KernelDep, request: Request) -> None:
    await flags.do_delete_flag(actor, kernel.db.pool, name, source=source_of(request), kernel=kernel)


def flag_handlers() -> list:
    return [flags_list, flags_me, flags_get, flags_put, flags_delete]
