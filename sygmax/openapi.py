"""Complete the generated OpenAPI document with the error answers every route can give.

Litestar documents request and success bodies from the handler signatures; the errors
come from the kernel (auth, validation, rate limits, unexpected failures), so the kernel
adds them here, once, to every operation: clients and the schemathesis fuzz run then see
the full contract, each error as an RFC 9457 problem body.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Reference, Schema
from litestar.openapi.spec.enums import OpenAPIType

from sygmax.errors import PROBLEM_MEDIA_TYPE

PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    description="RFC 9457 problem details",
    required=["type", "title", "status", "detail"],
    properties={
        "type": Schema(type=OpenAPIType.STRING, description="stable URI naming the kind of problem"),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING, description="what went wrong, for a human"),
        "instance": Schema(type=OpenAPIType.STRING),
        "request_id": Schema(type=OpenAPIType.STRING),
        "field": Schema(type=OpenAPIType.STRING, description="the input field at fault"),
        "errors": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT)),
    },
)

_DESCRIPTIONS = {
    "400": "Malformed or invalid input",
    "401": "Missing, malformed, expired or revoked credentials",
    "403": "Authenticated, but not allowed",
    "404": "No such object, or not visible to the caller",
    "409": "Conflicts with the current state of the resource",
    "413": "Request body too large",
    "429": "Rate limit exceeded; see Retry-After",
    "500": "Unexpected server error; the request id identifies it in the logs",
    "503": "A dependency is unavailable",
}


def _problem(code: str) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=_DESCRIPTIONS[code],
        content={PROBLEM_MEDIA_TYPE: OpenAPIMediaType(schema=Reference(ref="#/components/schemas/Problem"))},
    )


def add_problem_responses(app: Litestar) -> None:
    schema = app.openapi_schema
    schema.components.schemas = {**(schema.components.schemas or {}), "Problem": PROBLEM_SCHEMA}
    for path, item in (schema.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method, None)
            if operation is None:
                continue
            codes = ["429", "500"]
            if operation.parameters or operation.request_body:
                codes.append("400")
            if operation.security:
                codes.append("401")
            if "{" in path:
                codes.append("404")
            if operation.request_body:
                codes.append("413")
            if path == "/readyz":
                codes.append("503")
            responses = operation.responses or {}
            codes += [code for code in responses if code in _DESCRIPTIONS]  # declared by the handler
            for code in codes:
                responses[code] = _problem(code)  # replaces Litestar's generic 400 body
            operation.responses = responses
            if operation.request_body:
                for media in (operation.request_body.content or {}).values():
                    _close_objects(media.schema, schema.components.schemas, set())


def _close_objects(node, components: dict, seen: set[str]) -> None:
    """Request bodies are msgspec Structs with ``forbid_unknown_fields``: say so in the schema
    (``additionalProperties: false``), for the body and every object nested in it."""
    if isinstance(node, Reference):
        name = node.ref.rsplit("/", 1)[-1]
        if name in seen or name not in components:
            return
        seen.add(name)
        node = components[name]
    if not isinstance(node, Schema):
        return
    if node.properties is not None and node.additional_properties is None:
        node.additional_properties = False
    for child in (*(node.properties or {}).values(), *(node.one_of or ()), *(node.any_of or ()),
                  *(node.all_of or ()), node.items):
        if child is not None:
            _close_objects(child, components, seen)
