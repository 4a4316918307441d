"""Login with an OpenID Connect provider (Keycloak, Google, ...) or a plain OAuth2 one (GitHub).

The authorization-code flow with PKCE (S256), ``state`` and ``nonce``:

1. ``GET /api/v1/auth/oidc/{provider}/login``: make ``state``, ``nonce`` and a PKCE verifier,
   keep them in Redis for :data:`STATE_TTL_S` seconds under the state, bound to this browser
   by a random value whose SHA-256 is stored with them and whose plaintext goes into an
   HttpOnly cookie; redirect (302) to the provider.
2. ``GET /api/v1/auth/oidc/{provider}/callback?code&state``: take the state record out of
   Redis (``GETDEL``: a state works once), check the provider and the browser binding,
   exchange the code (with the verifier) at the token endpoint, then identify the user:

   * OpenID Connect (discovery at ``{issuer}/.well-known/openid-configuration``): the
     ``id_token`` is verified with PyJWT against the provider's JWKS (fetched with httpx and
     cached; re-fetched, throttled, when a token names an unknown key): asymmetric algorithms
     only, signature, ``iss``, ``aud`` (and ``azp`` with several audiences), ``exp``/``iat``
     with 60 s of leeway, and ``nonce`` equal to the stored one. Missing e-mail claims are
     completed from the userinfo endpoint, whose ``sub`` must match.
   * Plain OAuth2 (explicit endpoints in the config): the user is what the userinfo endpoint
     says with the access token just obtained (``sub`` or ``id``); GitHub-style answers carry
     no ``email_verified``, so their e-mail never links an existing account.

3. Link: an existing (provider, subject) link wins; else an account whose e-mail equals a
   *verified* provider e-mail (``email_verified`` true) is linked; else, when
   ``auth.registration`` is ``open``, an account is created. Then a session is issued
   (:func:`sygmax.auth.sessions.issue_session`) in the same transaction as the link and its
   audit rows, and the caller is sent back to the web UI with the session cookies set.

Why not authlib: the flow is a handful of HTTP calls and one JWT verification; PyJWT
(already a dependency for access tokens) verifies JWS against a JWK set, httpx makes the
calls asynchronously with timeouts, and nothing else is needed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import jwt
import structlog
from redis.exceptions import RedisError

from sygmax.auth import audit
from sygmax.auth.accounts import REGISTRATION_LOCK_KEY, check_name, normalize_email
from sygmax.auth.audit import Source
from sygmax.auth.sessions import TokenPair, issue_session
from sygmax.config import OidcProvider
from sygmax.errors import Problem

if TYPE_CHECKING:
    from sygmax.kernel import Kernel

log = structlog.get_logger("sygmax.auth.oidc")

STATE_TTL_S = 600
STATE_PREFIX = "sygmax:oidc:state:"
BINDING_COOKIE = "sygmax_oidc"
METADATA_TTL_S = 3600
JWKS_TTL_S = 3600
JWKS_REFRESH_MIN_S = 30
LEEWAY_S = 60
MAX_RESPONSE_BYTES = 512 * 1024
ASYMMETRIC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                             "EdDSA"})
NEXT_MAX = 512


def callback_path(provider: str) -> str:
    return f"/api/v1/auth/oidc/{provider}/callback"


def redirect_uri(kernel: "Kernel", provider: str) -> str:
    return kernel.settings.server.public_url.rstrip("/") + callback_path(provider)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_challenge(verifier: str) -> str:
    return _b64url(hashlib.sha256(verifier.encode()).digest())


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _refuse(status: int, slug: str, detail: str, reason: str, request_id: str | None, **context: Any) -> Problem:
    log.warning("auth_denied", reason=reason, request_id=request_id, **context)
    return Problem(status, slug, detail)


def safe_next(value: str | None) -> str:
    """Where to send the browser after login: a path on this site only (no scheme, no //host)."""
    if not value or len(value) > NEXT_MAX or not value.startswith("/") or value.startswith("//") \
            or "\\" in value or any(ord(char) < 0x20 or ord(char) == 0x7f for char in value):
        return "/"
    return value


@dataclass
class ProviderMeta:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str | None
    jwks_uri: str | None
    algorithms: list[str]
    token_auth: str  # "client_secret_basic" | "client_secret_post"
    oidc: bool


@dataclass
class _Cached:
    value: Any
    at: float


@dataclass
class OidcClient:
    """Per-process caches of provider metadata and key sets."""

    metadata: dict[str, _Cached] = field(default_factory=dict)
    jwks: dict[str, _Cached] = field(default_factory=dict)


_clients: "weakref.WeakKeyDictionary[Any, OidcClient]" = weakref.WeakKeyDictionary()


def client_of(kernel: "Kernel") -> OidcClient:
    client = _clients.get(kernel)
    if client is None:
        client = _clients[kernel] = OidcClient()
    return client


def provider_config(kernel: "Kernel", name: str, request_id: str | None = None) -> OidcProvider:
    provider = kernel.settings.oidc.providers.get(name)
    if provider is None:
        raise _refuse(404, "not-found", f"No login provider named {name!r}", "oidc-unknown-provider", request_id)
    return provider


async def _fetch_json(http: httpx.AsyncClient, method: str, url: str, what: str, request_id: str | None,
                      **kwargs: Any) -> tuple[int, Any]:
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        log.warning("oidc_provider_unreachable", what=what, error=type(exc).__name__, request_id=request_id)
        raise Problem(502, "oidc-provider-unavailable", f"The login provider did not answer ({what})") from None
    if len(response.content) > MAX_RESPONSE_BYTES:
        raise Problem(502, "oidc-provider-error", f"The login provider's {what} answer is too large")
    try:
        return response.status_code, response.json()
    except ValueError:
        log.warning("oidc_provider_bad_answer", what=what, status=response.status_code, request_id=request_id)
        raise Problem(502, "oidc-provider-error", f"The login provider's {what} answer is not JSON") from None


async def provider_metadata(kernel: "Kernel", name: str, provider: OidcProvider, http: httpx.AsyncClient,
                            request_id: str | None = None) -> ProviderMeta:
    if provider.authorization_endpoint:
        return ProviderMeta(provider.issuer, provider.authorization_endpoint, provider.token_endpoint,
                            provider.userinfo_endpoint, None, [], "client_secret_post", oidc=False)
    cache = client_of(kernel).metadata
    cached = cache.get(name)
    if cached is not None and time.monotonic() - cached.at < METADATA_TTL_S:
        return cached.value
    url = provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
    status, document = await _fetch_json(http, "GET", url, "discovery", request_id)
    if status != 200 or not isinstance(document, dict):
        raise Problem(502, "oidc-provider-error", f"The login provider's discovery document is unavailable ({status})")
    allow_http = kernel.settings.oidc.allow_insecure_http
    try:
        issuer = document["issuer"]
        endpoints = [document["authorization_endpoint"], document["token_endpoint"], document["jwks_uri"]]
        userinfo = document.get("userinfo_endpoint")
        for url_value in [*endpoints, *([userinfo] if userinfo else [])]:
            if not isinstance(url_value, str) or not (url_value.startswith("https://") or
                                                      (allow_http and url_value.startswith("http://"))):
                raise ValueError(f"endpoint {url_value!r} is not https")
        if issuer.rstrip("/") != provider.issuer.rstrip("/"):
            raise ValueError(f"issuer {issuer!r} differs from the configured one")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("oidc_provider_bad_discovery", provider=name, error=str(exc)[:200], request_id=request_id)
        raise Problem(502, "oidc-provider-error", "The login provider's discovery document is invalid") from None
    offered = document.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = [alg for alg in offered if isinstance(alg, str) and alg in ASYMMETRIC_ALGS] or ["RS256"]
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    token_auth = "client_secret_basic" if "client_secret_basic" in methods else "client_secret_post"
    meta = ProviderMeta(issuer, endpoints[0], endpoints[1], userinfo, endpoints[2], algorithms, token_auth, oidc=True)
    cache[name] = _Cached(meta, time.monotonic())
    return meta


async def _key_set(kernel: "Kernel", name: str, meta: ProviderMeta, http: httpx.AsyncClient, request_id: str | None,
                   refresh: bool = False) -> list[dict[str, Any]]:
    """The provider's signing keys (JWK dicts), cached; ``refresh`` re-fetches (at most every 30 s)."""
    cache = client_of(kernel).jwks
    cached = cache.get(name)
    now = time.monotonic()
    if cached is not None and now - cached.at < (JWKS_REFRESH_MIN_S if refresh else JWKS_TTL_S):
        return cached.value
    status, document = await _fetch_json(http, "GET", meta.jwks_uri, "jwks", request_id)
    keys = document.get("keys") if isinstance(document, dict) else None
    if status != 200 or not isinstance(keys, list):
        raise Problem(502, "oidc-provider-error", f"The login provider's key set is unavailable ({status})")
    usable = [key for key in keys if isinstance(key, dict) and key.get("use", "sig") == "sig"]
    cache[name] = _Cached(usable, now)
    return usable


def _find_key(keys: list[dict[str, Any]], kid: str | None, alg: str) -> jwt.PyJWK | None:
    """The JWK the token names (by ``kid``; without one, the only key), bound to the token's algorithm."""
    candidates = [key for key in keys if kid is None or key.get("kid") == kid]
    if len(candidates) != 1 or candidates[0].get("alg", alg) != alg:
        return None
    try:
        return jwt.PyJWK(candidates[0], algorithm=alg)
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return None


async def verify_id_token(kernel: "Kernel", name: str, provider: OidcProvider, meta: ProviderMeta, token: str,
                          nonce: str, http: httpx.AsyncClient, request_id: str | None) -> dict[str, Any]:
    """Check signature, issuer, audience, expiry and nonce; return the claims."""
    def bad(reason: str) -> Problem:
        return _refuse(400, "oidc-invalid-token", "The login provider's ID token is not valid for this login",
                       reason, request_id, provider=name)

    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise bad("id-token-malformed") from None
    alg = header.get("alg")
    if alg not in meta.algorithms:
        raise bad("id-token-algorithm")
    kid = header.get("kid")
    key = _find_key(await _key_set(kernel, name, meta, http, request_id), kid, alg)
    if key is None:  # a rotated key: fetch the set again (throttled)
        key = _find_key(await _key_set(kernel, name, meta, http, request_id, refresh=True), kid, alg)
    if key is None:
        raise bad("id-token-unknown-key")
    try:
        claims = jwt.decode(token, key=key, algorithms=[alg], audience=provider.client_id, issuer=meta.issuer,
                            leeway=LEEWAY_S, options={"require": ["exp", "iat", "iss", "aud", "sub"]})
    except jwt.ExpiredSignatureError:
        raise bad("id-token-expired") from None
    except jwt.InvalidAudienceError:
        raise bad("id-token-audience") from None
    except jwt.InvalidIssuerError:
        raise bad("id-token-issuer") from None
    except jwt.PyJWTError as exc:
        raise bad(f"id-token-invalid:{type(exc).__name__}") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != provider.client_id:
        raise bad("id-token-azp")
    if not isinstance(claims.get("nonce"), str) or not hmac.compare_digest(claims["nonce"].encode(), nonce.encode()):
        raise bad("id-token-nonce")
    if not isinstance(claims["sub"], str) or not claims["sub"] or len(claims["sub"]) > 255:
        raise bad("id-token-subject")
    return claims


@dataclass(frozen=True)
class ExternalIdentity:
    provider: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None


def _clean_email(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > 254 or "@" not in value or any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        return None
    return value


def _clean_name(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = "".join(ch for ch in value if ch.isprintable() and ch not in "<>").strip()
    return value[:100] or None


def _verified(value: Any) -> bool:
    return value is True or value == "true"


# ---------------------------------------------------------------------------------------------
# The two steps


@dataclass(frozen=True)
class LoginStart:
    location: str
    binding: str  # the cookie value


async def start_login(kernel: "Kernel", name: str, next_path: str | None, request_id: str | None) -> LoginStart:
    provider = provider_config(kernel, name, request_id)
    async with httpx.AsyncClient(timeout=kernel.settings.oidc.timeout_s, follow_redirects=False) as http:
        meta = await provider_metadata(kernel, name, provider, http, request_id)
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    verifier, binding = secrets.token_urlsafe(64), secrets.token_urlsafe(32)
    record = {"provider": name, "nonce": nonce, "verifier": verifier, "binding": _digest(binding),
              "next": safe_next(next_path)}
    try:
        await kernel.redis.set(STATE_PREFIX + state, json.dumps(record), ex=STATE_TTL_S)
    except RedisError as exc:
        log.warning("oidc_state_store_unavailable", error=str(exc), request_id=request_id)
        raise Problem(503, "unavailable", "Login with an external provider is unavailable right now") from None
    query = {"response_type": "code", "client_id": provider.client_id, "redirect_uri": redirect_uri(kernel, name),
             "scope": " ".join(provider.scopes), "state": state, "code_challenge": pkce_challenge(verifier),
             "code_challenge_method": "S256"}
    if meta.oidc:
        query["nonce"] = nonce
    separator = "&" if "?" in meta.authorization_endpoint else "?"
    return LoginStart(meta.authorization_endpoint + separator + urlencode(query), binding)


async def _take_state(kernel: "Kernel", name: str, state: str, binding: str | None,
                      request_id: str | None) -> dict[str, Any]:
    def bad(reason: str) -> Problem:
        return _refuse(400, "oidc-invalid-state",
                       "This login link is unknown, expired or already used; start the login again",
                       reason, request_id, provider=name)

    if not state or len(state) > 128:
        raise bad("state-malformed")
    try:
        raw = await kernel.redis.getdel(STATE_PREFIX + state)
    except RedisError as exc:
        log.warning("oidc_state_store_unavailable", error=str(exc), request_id=request_id)
        raise Problem(503, "unavailable", "Login with an external provider is unavailable right now") from None
    if raw is None:
        raise bad("state-unknown")
    record = json.loads(raw)
    if record.get("provider") != name:
        raise bad("state-provider")
    if not binding or not hmac.compare_digest(_digest(binding).encode(), record["binding"].encode()):
        raise bad("state-binding")
    return record


async def _exchange(provider: OidcProvider, meta: ProviderMeta, code: str, verifier: str, redirect: str,
                    http: httpx.AsyncClient, name: str, request_id: str | None) -> dict[str, Any]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect, "code_verifier": verifier}
    auth = None
    if provider.client_secret and meta.token_auth == "client_secret_basic":
        auth = httpx.BasicAuth(provider.client_id, provider.client_secret)
    else:
        form["client_id"] = provider.client_id
        if provider.client_secret:
            form["client_secret"] = provider.client_secret
    status, body = await _fetch_json(http, "POST", meta.token_endpoint, "token", request_id, data=form, auth=auth,
                                     headers={"Accept": "application/json"})
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str) \
            or "error" in body:
        error = body.get("error") if isinstance(body, dict) else None
        raise _refuse(400, "oidc-exchange-failed", "The login provider refused the authorization code",
                      "code-exchange-refused", request_id, provider=name, provider_status=status,
                      error=str(error)[:64] if error else None)
    return body


async def _userinfo(meta: ProviderMeta, access_token: str, http: httpx.AsyncClient, name: str,
                    request_id: str | None) -> dict[str, Any]:
    status, body = await _fetch_json(http, "GET", meta.userinfo_endpoint, "userinfo", request_id,
                                     headers={"Authorization": f"Bearer {access_token}",
                                              "Accept": "application/json"})
    if status != 200 or not isinstance(body, dict):
        raise _refuse(400, "oidc-exchange-failed", "The login provider did not say who you are",
                      "userinfo-refused", request_id, provider=name, provider_status=status)
    return body


async def identify(kernel: "Kernel", name: str, code: str, state: str, binding: str | None,
                   request_id: str | None) -> tuple[ExternalIdentity, str]:
    """Check the state, exchange the code, verify the answer: who the provider says this is (and next)."""
    provider = provider_config(kernel, name, request_id)
    record = await _take_state(kernel, name, state, binding, request_id)
    if not code or len(code) > 2048:
        raise _refuse(400, "validation-error", "code: missing or too long", "code-malformed", request_id)
    async with httpx.AsyncClient(timeout=kernel.settings.oidc.timeout_s, follow_redirects=False) as http:
        meta = await provider_metadata(kernel, name, provider, http, request_id)
        tokens = await _exchange(provider, meta, code, record["verifier"], redirect_uri(kernel, name), http, name,
                                 request_id)
        if meta.oidc:
            id_token = tokens.get("id_token")
            if not isinstance(id_token, str):
                raise _refuse(400, "oidc-invalid-token", "The login provider sent no ID token",
                              "id-token-missing", request_id, provider=name)
            claims = await verify_id_token(kernel, name, provider, meta, id_token, record["nonce"], http, request_id)
            if "email" not in claims and meta.userinfo_endpoint:
                info = await _userinfo(meta, tokens["access_token"], http, name, request_id)
                if info.get("sub") != claims["sub"]:
                    raise _refuse(400, "oidc-invalid-token", "The login provider's answers disagree",
                                  "userinfo-subject", request_id, provider=name)
                claims = {**info, **claims}
            subject = claims["sub"]
        else:
            claims = await _userinfo(meta, tokens["access_token"], http, name, request_id)
            raw_subject = claims.get("sub", claims.get("id"))
            if isinstance(raw_subject, bool) or not isinstance(raw_subject, (str, int)) or not str(raw_subject) \
                    or len(str(raw_subject)) > 255:
                raise _refuse(400, "oidc-invalid-token", "The login provider did not say who you are",
                              "userinfo-no-subject", request_id, provider=name)
            subject = str(raw_subject)
    identity = ExternalIdentity(name, subject, _clean_email(claims.get("email")),
                                _verified(claims.get("email_verified")),
                                _clean_name(claims.get("name") or claims.get("preferred_username")
                                            or claims.get("login")))
    return identity, record["next"]


# ---------------------------------------------------------------------------------------------
# Linking and the session


def _display_name(identity: ExternalIdentity) -> str:
    for candidate in (identity.name, (identity.email or "").partition("@")[0]):
        if candidate:
            try:
                return check_name(candidate)
            except Problem:
                continue
    return "User"


async def _create_account(connection, kernel: "Kernel", identity: ExternalIdentity, email: str | None,
                          source: Source, request_id: str | None) -> uuid.UUID:
    """A new account for this identity (the caller holds the registration lock)."""
    first = not await connection.fetchval("SELECT EXISTS (SELECT 1 FROM sygmax_user)")
    if not first and kernel.settings.auth.registration != "open":
        raise _refuse(403, "registration-closed",
                      "There is no account for this login and this installation does not let anyone sign up; "
                      "ask an administrator for an invitation", "registration-closed", request_id,
                      provider=identity.provider)
    if email is None:
        raise _refuse(400, "oidc-no-email", "The login provider did not share a usable e-mail address",
                      "no-email", request_id, provider=identity.provider)
    user_id = uuid.uuid4()
    await connection.execute(
        """INSERT INTO sygmax_user (id, email, display_name, is_admin, is_owner, email_verified_at)
           VALUES ($1, $2, $3, $4, $4, CASE WHEN $5 THEN now() END)""",
        user_id, email, _display_name(identity), first, identity.email_verified)
    await audit.record(connection, actor_id=user_id, action="user.register", object_type="user", object_id=user_id,
                       source=source, details={"owner": first, "mode": kernel.settings.auth.registration,
                                               "method": f"oidc:{identity.provider}",
                                               "email_verified": identity.email_verified})
    return user_id


_IDENTITY = "SELECT user_id FROM sygmax_oidc_identity WHERE provider = $1 AND subject = $2"


async def link_and_login(kernel: "Kernel", identity: ExternalIdentity, source: Source,
                         user_agent: str | None = None) -> tuple[TokenPair, uuid.UUID]:
    """Find or link (or create) the local account, then start its session: one transaction."""
    request_id = source.request_id
    try:
        email = normalize_email(identity.email) if identity.email else None
    except Problem:
        email = None
    async with kernel.db.pool.acquire() as connection, connection.transaction():
        user_id = await connection.fetchval(_IDENTITY, identity.provider, identity.subject)
        if user_id is None:
            # New links and new accounts are serialised with registrations (first owner, unique e-mail).
            await connection.execute("SELECT pg_advisory_xact_lock($1)", REGISTRATION_LOCK_KEY)
            user_id = await connection.fetchval(_IDENTITY, identity.provider, identity.subject)
        if user_id is not None:
            await connection.execute(
                "UPDATE sygmax_oidc_identity SET last_login_at = now(), email = $3 "
                "WHERE provider = $1 AND subject = $2", identity.provider, identity.subject, email)
        else:
            existing = None
            if email is not None:
                existing = await connection.fetchrow(
                    "SELECT id, erased_at FROM sygmax_user WHERE lower(email) = $1", email)
            if existing is not None:
                if not identity.email_verified or existing["erased_at"] is not None:
                    raise _refuse(
                        409, "oidc-email-unverified",
                        "An account with this e-mail address already exists, and the login provider has not "
                        "verified that the address is yours: log in with your password instead",
                        "unverified-email-matches-account", request_id, provider=identity.provider)
                user_id, how = existing["id"], "verified-email"
            else:
                user_id = await _create_account(connection, kernel, identity, email, source, request_id)
                how = "new-account"
            await connection.execute(
                "INSERT INTO sygmax_oidc_identity (provider, subject, user_id, email) VALUES ($1, $2, $3, $4)",
                identity.provider, identity.subject, user_id, email)
            await audit.record(connection, actor_id=user_id, action="oidc.link", object_type="oidc_identity",
                               object_id=f"{identity.provider}:{identity.subject}"[:255], source=source,
                               details={"provider": identity.provider, "matched_by": how})
        pair = await issue_session(kernel, connection, user_id, source, method=f"oidc:{identity.provider}",
                                   user_agent=user_agent)
    return pair, user_id
