"""HTTP endpoints behind local-disk presigned URLs (S3 serves its own presigned URLs).

The signature in the query string is the whole authorization, so these handlers opt out of
session authentication and CSRF checks through Litestar's standard ``opt`` keys.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get, put
from litestar.handlers import HTTPRouteHandler
from litestar.response import Response, Stream

from sygmax.errors import problem_response
from sygmax.storage.base import ObjectNotFound, ObjectStore, ObjectTooLarge
from sygmax.storage.local import OBJECTS_PATH, LocalObjectStore

ROUTE = OBJECTS_PATH + "{key:path}"
_OPT = {"exclude_from_auth": True, "exclude_from_csrf": True}


def _key(request: Request[Any, Any, Any]) -> str:
    """The key comes from ``path_params``: handler-parameter syntax for paths differs across Litestar 2.x."""
    return str(request.path_params["key"]).removeprefix("/")


def _refusal(
    store: LocalObjectStore, request: Request[Any, Any, Any], method: str, key: str
) -> Response[Any] | None:
    """A 403 problem unless the query carries an unexpired signature for this method and key."""
    query = request.query_params
    try:
        expires = int(query.get("expires", ""))
    except ValueError:
        expires = -1
    signature = query.get("signature", "")
    if query.get("method") != method or not store.verify(method, key, expires, signature):
        return problem_response(403, "forbidden", "missing, invalid or expired storage signature", request)
    return None


def storage_routes(store: ObjectStore) -> list[HTTPRouteHandler]:
    """Route handlers serving ``store``'s presigned URLs; none for backends that serve their own."""
    if not isinstance(store, LocalObjectStore):
        return []

    @get(ROUTE, opt=_OPT, name="storage:download", include_in_schema=False)
    async def download(request: Request[Any, Any, Any]) -> Response[Any]:
        key = _key(request)
        if (refusal := _refusal(store, request, "GET", key)) is not None:
            return refusal
        try:
            info = await store.stat(key)
        except ObjectNotFound:
            return problem_response(404, "not-found", f"object {key!r} does not exist", request)
        return Stream(
            store.get(key),
            media_type=info.content_type or "application/octet-stream",
            headers={"content-length": str(info.size), "etag": f'"{info.etag}"'},
        )

    @put(ROUTE, opt=_OPT, name="storage:upload", include_in_schema=False, request_max_body_size=None)
    async def upload(request: Request[Any, Any, Any]) -> Response[Any]:
        key = _key(request)
        if (refusal := _refusal(store, request, "PUT", key)) is not None:
            return refusal
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
