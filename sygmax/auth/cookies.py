"""The web UI's session cookies and their CSRF token.

After a cookie login (``POST /api/v1/auth/session``, or an OIDC login) the browser holds:

=================  =======================================  ===========================
cookie             attributes                               holds
=================  =======================================  ===========================
``sygmax_access``  HttpOnly; SameSite=Strict; Path=/;       the JWT access token
                   Max-Age=access_token_ttl_s
``sygmax_refresh`` HttpOnly; SameSite=Strict;               the refresh token
                   Path=/api/v1/auth; Max-Age=refresh ttl
``sygmax_csrf``    SameSite=Strict; Path=/ (readable by     the CSRF token
                   the page's JavaScript)
=================  =======================================  ===========================

all ``Secure`` unless ``auth.cookie_secure`` is false (plain-HTTP labs only). JavaScript
never sees a token; it copies ``sygmax_csrf`` into the ``X-CSRF-Token`` header of every
unsafe request (double submit). The CSRF value is derived from the access token
(:func:`sygmax.auth.tokens.csrf_for`), so a cookie planted by a sibling sub-domain
(cookie tossing) cannot be made to match; it changes at every refresh.
"""

from __future__ import annotations

from litestar.datastructures import Cookie

from sygmax.auth.sessions import TokenPair
from sygmax.auth.tokens import ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE, csrf_for
from sygmax.config import AuthSettings

REFRESH_PATH = "/api/v1/auth"


def session_cookies(settings: AuthSettings, pair: TokenPair) -> tuple[list[Cookie], str]:
    """The Set-Cookie values for a session and its CSRF token (also returned for the response body)."""
    csrf = csrf_for(pair.access_token)
    secure = settings.cookie_secure
    cookies = [
        Cookie(ACCESS_COOKIE, value=pair.access_token, path="/", max_age=settings.access_token_ttl_s, secure=secure,
               httponly=True, samesite="strict"),
        Cookie(REFRESH_COOKIE, value=pair.refresh_token, path=REFRESH_PATH, max_age=settings.refresh_token_ttl_s,
               secure=secure, httponly=True, samesite="strict"),
        Cookie(CSRF_COOKIE, value=csrf, path="/", max_age=settings.refresh_token_ttl_s, secure=secure, httponly=False,
               samesite="strict"),
    ]
    return cookies, csrf


def cleared_cookies(settings: AuthSettings) -> list[Cookie]:
    """Set-Cookie values that delete the session cookies (logout)."""
    secure = settings.cookie_secure
    return [
        Cookie(ACCESS_COOKIE, value="", path="/", max_age=0, secure=secure, httponly=True, samesite="strict"),
        Cookie(REFRESH_COOKIE, value="", path=REFRESH_PATH, max_age=0, secure=secure, httponly=True, samesite="strict"),
        Cookie(CSRF_COOKIE, value="", path="/", max_age=0, secure=secure, httponly=False, samesite="strict"),
    ]
