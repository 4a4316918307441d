"""HTTP endpoints behind local-disk presigned URLs (S3 serves its own presigned URLs).

The signature in the query string is the whole authorization, so these handlers opt out of
session authentication and CSRF checks through Litestar's standard ``opt`` keys.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get, put
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery
from litestar.response import Response, Stream

from sygmax.errors import problem_response
from sygmax.storage.base import ObjectNotFound, ObjectStore, ObjectTooLarge
from sygmax.storage.local import OBJECTS_PATH, LocalObjectStore

ROUTE = OBJECTS_PATH + "{key:path}"
_OPT = {"exclude_from_auth": True, "exclude_from_csrf": True}


# The 403 body is documented as a problem by sygmax.openapi like every other error.
_SIGNED = {403: ResponseSpec(data_container=None, description="Missing, invalid or expired signature")}


def _refusal(
    store: LocalObjectStore, request: Request[Any, Any, Any], method: str, key: str,
    signed_method: str | None, expires: str | None, signature: str | None,
) -> Response[Any] | None:
    """A 403 problem unless the query carries an unexpired signature for this method and key."""
    expiry = int(expires) if expires and expires.isdigit() and len(expires) < 12 else -1
    if signed_method != method or not store.verify(method, key.removeprefix("/"), expiry, signature or ""):
        return problem_response(403, "forbidden", "missing, invalid or expired storage signature", request)
    return None


def storage_routes(store: ObjectStore) -> list[HTTPRouteHandler]:
    """Route handlers serving ``store``'s presigned URLs; none for backends that serve their own."""
    if not isinstance(store, LocalObjectStore):
        return []

    @get(ROUTE, opt=_OPT, name="storage:download", tags=["storage"], responses=_SIGNED,
         summary="Download an object through a presigned URL")
    async def download(
        request: Request[Any, Any, Any], key: FromPath[str], method: FromQuery[str | None] = None,
        expires: FromQuery[str | None] = None, signature: FromQuery[str | None] = None,
    ) -> Response[Any]:
        if (refusal := _refusal(store, request, "GET", key, method, expires, signature)) is not None:
            return refusal
        key = key.removeprefix("/")
        try:
            info = await store.stat(key)
        except ObjectNotFound:
            return problem_response(404, "not-found", f"object {key!r} does not exist", request)
        return Stream(
            store.get(key),
            media_type=info.content_type or "application/octet-stream",
            headers={"content-length": str(info.size), "etag": f'"{info.etag}"'},
        )

    @put(ROUTE, opt=_OPT, name="storage:upload", tags=["storage"], responses=_SIGNED,
         summary="Upload an object through a presigned URL", request_max_body_size=None)
    async def upload(
        request: Request[Any, Any, Any], key: FromPath[str], method: FromQuery[str | None] = None,
        expires: FromQuery[str | None] = None, signature: FromQuery[str | None] = None,
    ) -> Response[Any]:
        if (refusal := _refusal(store, request, "PUT", key, method, expires, signature)) is not None:
            return refusal
        key = key.removeprefix("/")
        length = request.headers.get("content-length")
        try:
            info = await store.put(
                key,
                request.stream(),
                size=int(length) if length and length.isdigit() else None,
                content_type=request.headers.get("content-type") or "application/octet-stream",
            )
        except ObjectTooLarge as exc:
            return problem_response(413, "payload-too-large", str(exc), request)
        return Response({"key": info.key, "size": info.size, "etag": info.etag}, status_code=200)

    return [download, upload]
