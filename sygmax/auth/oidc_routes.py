"""OpenID Connect / OAuth2 login routes (see :mod:`sygmax.auth.oidc` for the flow)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Request, get
from litestar.datastructures import Cookie
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect

from sygmax.auth import oidc
from sygmax.auth.audit import source_of
from sygmax.auth.cookies import session_cookies
from sygmax.errors import Problem
from sygmax.kernel import KernelDep

_PREFIX = "/api/v1/auth/oidc"
_COOKIE_PATH = _PREFIX + "/"


class ProviderOut(msgspec.Struct):
    name: str
    title: str


def _binding_cookie(value: str, secure: bool, max_age: int) -> Cookie:
    # SameSite=Lax, not Strict: the callback is a top-level navigation coming from the provider's site.
    return Cookie(key=oidc.BINDING_COOKIE, value=value, path=_COOKIE_PATH, max_age=max_age, secure=secure,
                  httponly=True,
                  samesite="lax")


@get(f"{_PREFIX}/providers", tags=["auth"], summary="Login providers configured on this installation")
async def oidc_providers(kernel: KernelDep) -> list[ProviderOut]:
    return [ProviderOut(name, provider.title) for name, provider in sorted(kernel.settings.oidc.providers.items())]


@get(f"{_PREFIX}/{{provider:str}}/login", tags=["auth"], status_code=302,
     summary="Start a login with a provider: redirects to it",
     responses={302: ResponseSpec(None, description="Redirect to the provider"),
                404: ResponseSpec(None, description="No such provider")})
async def oidc_login(provider: FromPath[str], kernel: KernelDep, request: Request,
                     next: Annotated[str | None, QueryParameter(max_length=oidc.NEXT_MAX)] = None) -> Redirect:
    started = await oidc.start_login(kernel, provider, next, request.scope.get("state", {}).get("request_id"))
    return Redirect(started.location, status_code=302, cookies=[
        _binding_cookie(started.binding, kernel.settings.auth.cookie_secure, oidc.STATE_TTL_S)])


@get(f"{_PREFIX}/{{provider:str}}/callback", tags=["auth"], status_code=302,
     summary="Where the provider sends the browser back: logs in and redirects to the web UI",
     responses={302: ResponseSpec(None, description="Logged in; session cookies set"),
                403: ResponseSpec(None, description="Account disabled or registration closed"),
                404: ResponseSpec(None, description="No such provider"),
                409: ResponseSpec(None, description="An account with this unverified e-mail exists")})
async def oidc_callback(provider: FromPath[str], kernel: KernelDep, request: Request,
                        code: Annotated[str | None, QueryParameter(max_length=2048)] = None,
                        oauth_state: Annotated[str | None, QueryParameter(name="state", max_length=256)] = None,
                        error: Annotated[str | None, QueryParameter(max_length=256)] = None) -> Redirect:
    source = source_of(request)
    oidc.provider_config(kernel, provider, source.request_id)
    if error is not None:
        raise Problem(400, "oidc-denied", "The login provider did not authorize the login")
    identity, next_path = await oidc.identify(kernel, provider, code or "", oauth_state or "",
                                              request.cookies.get(oidc.BINDING_COOKIE), source.request_id)
    pair, _ = await oidc.link_and_login(kernel, identity, source, request.headers.get("user-agent"))
    cookies, _ = session_cookies(kernel.settings.auth, pair)
    secure = kernel.settings.auth.cookie_secure
    return Redirect(next_path, status_code=302, cookies=[*cookies, _binding_cookie("", secure, 0)])


def oidc_handlers() -> list:
    return [oidc_providers, oidc_login, oidc_callback]
