"""RFC 9457 problem details for every error the platform returns.

Each problem has a stable ``type`` URI (clients switch on it), a short ``title``, a human
``detail`` and, for validation errors, the ``field`` at fault plus every ``errors`` entry.
Unexpected exceptions become a generic 500 that names only the request id: internals and
secrets never reach the client; the full traceback goes to the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import msgspec
import structlog
from asyncpg.exceptions import CharacterNotInRepertoireError, UntranslatableCharacterError
from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://sygmax.dev/problems/"

log = structlog.get_logger("sygmax.errors")


class Problem(HTTPException):
    """Raise from any handler or action: ``raise Problem(404, "not-found", "No such channel")``."""

    def __init__(
        self,
        status_code: int,
        slug: str,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail=detail, status_code=status_code, headers=headers)
        self.slug = slug
        self.field = field
        self.extra_members = extra


def problem_body(status: int, slug: str, detail: str, request: Request | None = None, **members: Any) -> dict:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
        request_id = request.scope.get("state", {}).get("request_id")
        if request_id:
            body["request_id"] = request_id
    body.update({key: value for key, value in members.items() if value is not None})
    return body


def problem_response(status: int, slug: str, detail: str, request: Request | None = None,
                     headers: dict[str, str] | None = None, **members: Any) -> Response:
    return Response(
        problem_body(status, slug, detail, request, **members),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


_SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "rate-limited",
    503: "unavailable",
}


def _field_name(key: str | None) -> str | None:
    if not key:
        return None
    return key.removeprefix("data.") if key != "data" else None


def _is_decode_error(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, (msgspec.DecodeError, SerializationException)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _validation_handler(request: Request, exc: ValidationException) -> Response:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            errors.append({"field": _field_name(item.get("key")) or item.get("source") or "body",
                           "message": item.get("message", "invalid value"),
                           "source": item.get("source", "body")})
    detail = str(exc.detail or "Validation failed")
    if not errors and _is_decode_error(exc):
        return problem_response(400, "malformed-body", f"Request body is not valid JSON: {detail}", request)
    first = errors[0] if errors else None
    return problem_response(
        400, "validation-error",
        f"{first['field']}: {first['message']}" if first else detail,
        request, field=first["field"] if first else None, errors=errors or None,
    )


def _problem_handler(request: Request, exc: Problem) -> Response:
    return problem_response(exc.status_code, exc.slug, exc.detail, request, headers=exc.headers,
                            field=exc.field, **exc.extra_members)


def _http_handler(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    if status == 400 and _is_decode_error(exc):
        return problem_response(400, "malformed-body", f"Request body is not valid JSON: {exc.detail}", request)
    detail = exc.detail if exc.detail and exc.detail != HTTPStatus(status).phrase else {
        404: f"No route for {request.method} {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
        413: "Request body is larger than the server accepts",
    }.get(status, HTTPStatus(status).phrase)
    if status >= 500:
        log.error("http_error", status=status, detail=str(exc.detail))
        detail = HTTPStatus(status).phrase
    return problem_response(status, _SLUGS.get(status, f"http-{status}"), str(detail), request,
                            headers=exc.headers)


class ProblemOut(msgspec.Struct):
    """The documented shape of a problem response, for the OpenAPI ``responses`` of a route."""

    type: str
    title: str
    status: int
    detail: str


def problem_responses(descriptions: Mapping[int, str], *codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI responses for the problem statuses ``codes`` a route may answer, described by
    the module's own ``descriptions``; a module binds its descriptions once with functools.partial."""
    return {code: ResponseSpec(data_container=ProblemOut, description=descriptions[code]) for code in codes}


def _text_encoding_handler(request: Request, exc: Exception) -> Response:
    # PostgreSQL text cannot hold NUL (U+0000); a body that carries one is the caller's mistake,
    # not a server error. The transaction rolled back with the exception, so nothing changed.
    return problem_response(400, "validation-error", "Text values may not contain NUL (\\u0000) characters",
                            request)


def _unexpected_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled_exception", path=request.url.path, method=request.method)
    return problem_response(500, "internal-error",
                            "The server hit an unexpected error; the request id identifies it in the logs",
                            request)


EXCEPTION_HANDLERS = {
    Problem: _problem_handler,
    ValidationException: _validation_handler,
    HTTPException: _http_handler,
    CharacterNotInRepertoireError: _text_encoding_handler,
    UntranslatableCharacterError: _text_encoding_handler,
    Exception: _unexpected_handler,
}
