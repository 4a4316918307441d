"""A small but real OpenID Connect provider for the tests, served over HTTP on a free port.

Discovery, an authorize endpoint that approves at once (302 back with a code), a token
endpoint that checks the client secret, the redirect URI and the PKCE S256 verifier and
signs an RS256 ID token with a key generated here, a JWKS endpoint and userinfo. The same
server also plays a plain OAuth2 provider in GitHub's style (``/oauth/authorize``,
``/oauth/token``, ``/user`` with a numeric ``id`` and no ``email_verified``).

``misbehave`` makes the next ID tokens wrong in one way (nonce, audience, expiry, key,
algorithm, issuer) so the tests can check each refusal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar import Litestar, Request, get, post
from litestar.response import Redirect, Response

from tests.servers import free_port

CLIENT_ID = "sygmax-test"
CLIENT_SECRET = "test-client-secret"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class OidcProviderServer:
    port: int = field(default_factory=free_port)
    key: Any = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))
    other_key: Any = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))
    kid: str = "test-key-1"
    user: dict[str, Any] = field(default_factory=dict)
    misbehave: set[str] = field(default_factory=set)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def provider_config(self, title: str = "Test IdP") -> dict[str, Any]:
        return {"title": title, "issuer": self.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}

    def oauth2_config(self, title: str = "Test Hub") -> dict[str, Any]:
        return {"title": title, "issuer": self.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "scopes": ["read:user", "user:email"], "authorization_endpoint": self.issuer + "/oauth/authorize",
                "token_endpoint": self.issuer + "/oauth/token", "userinfo_endpoint": self.issuer + "/user"}

    # --- the provider's endpoints -------------------------------------------------------------

    def app(self) -> Litestar:
        provider = self

        @get("/.well-known/openid-configuration", sync_to_thread=False)
        def discovery() -> dict[str, Any]:
            base = provider.issuer
            return {"issuer": base, "authorization_endpoint": base + "/authorize", "token_endpoint": base + "/token",
                    "jwks_uri": base + "/jwks", "userinfo_endpoint": base + "/userinfo",
                    "response_types_supported": ["code"], "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "code_challenge_methods_supported": ["S256"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"]}

        @get("/jwks", sync_to_thread=False)
        def jwks() -> dict[str, Any]:
            public = jwt.algorithms.RSAAlgorithm.to_jwk(provider.key.public_key(), as_dict=True)
            return {"keys": [{**public, "kid": provider.kid, "use": "sig", "alg": "RS256"}]}

        def authorize(request: Request, oauth2: bool) -> Response:
            query = dict(request.query_params)
            provider.requests.append(("authorize", query))
            if query.get("client_id") != CLIENT_ID or query.get("response_type") != "code":
                return Response({"error": "unauthorized_client"}, status_code=400)
            if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
                return Response({"error": "invalid_request", "error_description": "PKCE S256 required"},
                                status_code=400)
            code = secrets.token_urlsafe(16)
            provider.codes[code] = {"redirect_uri": query["redirect_uri"], "nonce": query.get("nonce"),
                                    "challenge": query["code_challenge"], "user": dict(provider.user),
                                    "oauth2": oauth2}
            target = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query.get("state", "")})
            return Redirect(target, status_code=302)

        @get("/authorize", sync_to_thread=False)
        def authorize_oidc(request: Request) -> Response:
            return authorize(request, oauth2=False)

        @get("/oauth/authorize", sync_to_thread=False)
        def authorize_oauth2(request: Request) -> Response:
            return authorize(request, oauth2=True)

        async def token(request: Request) -> Response:
            form = dict(await request.form())
            provider.requests.append(("token", {**form, "authorization": request.headers.get("authorization")}))
            client_id, secret = form.get("client_id"), form.get("client_secret")
            basic = request.headers.get("authorization", "")
            if basic.startswith("Basic "):
                client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
            if client_id != CLIENT_ID or secret != CLIENT_SECRET:
                return Response({"error": "invalid_client"}, status_code=401)
            grant = provider.codes.pop(form.get("code", ""), None)
            if grant is None or form.get("grant_type") != "authorization_code" \
                    or form.get("redirect_uri") != grant["redirect_uri"]:
                return Response({"error": "invalid_grant"}, status_code=400)
            verifier = form.get("code_verifier", "")
            if _b64url(hashlib.sha256(verifier.encode()).digest()) != grant["challenge"]:
                return Response({"error": "invalid_grant", "error_description": "PKCE verification failed"},
                                status_code=400)
            access = secrets.token_urlsafe(24)
            provider.tokens[access] = grant["user"]
            body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": 3600}
            if not grant["oauth2"]:
                body["id_token"] = provider.id_token(grant["user"], grant["nonce"])
            return Response(body)

        @post("/token", status_code=200)
        async def token_oidc(request: Request) -> Response:
            return await token(request)

        @post("/oauth/token", status_code=200)
        async def token_oauth2(request: Request) -> Response:
            return await token(request)

        @get("/userinfo", sync_to_thread=False)
        def userinfo(request: Request) -> Response:
            user = provider.tokens.get(request.headers.get("authorization", "").removeprefix("Bearer "))
            if user is None:
                return Response({"error": "invalid_token"}, status_code=401)
            return Response(dict(user))

        @get("/user", sync_to_thread=False)
        def github_user(request: Request) -> Response:
            user = provider.tokens.get(request.headers.get("authorization", "").removeprefix("Bearer "))
            if user is None:
                return Response({"message": "Bad credentials"}, status_code=401)
            return Response({"id": user["id"], "login": user.get("login"), "name": user.get("name"),
                             "email": user.get("email")})

        return Litestar([discovery, jwks, authorize_oidc, authorize_oauth2, token_oidc, token_oauth2, userinfo,
                         github_user], debug=False)

    def id_token(self, user: dict[str, Any], nonce: str | None) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user["sub"], "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                  "nonce": nonce, **{k: v for k, v in user.items() if k != "sub"}}
        if "id-token-without-email" in self.misbehave:
            claims = {k: v for k, v in claims.items() if k not in ("email", "email_verified", "name")}
        if "wrong-nonce" in self.misbehave:
            claims["nonce"] = "not-the-nonce"
        if "no-nonce" in self.misbehave:
            claims.pop("nonce")
        if "wrong-audience" in self.misbehave:
            claims["aud"] = "some-other-client"
        if "extra-audience" in self.misbehave:
            claims["aud"] = [CLIENT_ID, "some-other-client"]
        if "wrong-issuer" in self.misbehave:
            claims["iss"] = "http://127.0.0.1:1"
        if "expired" in self.misbehave:
            claims["iat"], claims["exp"] = now - 7200, now - 3600
        headers = {"kid": self.kid}
        if "unknown-key" in self.misbehave:
            return jwt.encode(claims, self.other_key, algorithm="RS256", headers={"kid": "rotated-away"})
        if "bad-signature" in self.misbehave:
            return jwt.encode(claims, self.other_key, algorithm="RS256", headers=headers)
        if "hs256" in self.misbehave:
            return jwt.encode(claims, CLIENT_SECRET * 2, algorithm="HS256", headers=headers)
        if "alg-none" in self.misbehave:
            head = _b64url(b'{"alg":"none","typ":"JWT","kid":"%s"}' % self.kid.encode())
            body = _b64url(json.dumps(claims).encode())
            return f"{head}.{body}."
        return jwt.encode(claims, self.key, algorithm="RS256", headers=headers)

    # --- serving ------------------------------------------------------------------------------

    def start(self) -> "OidcProviderServer":
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off",
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="oidc-provider", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test OIDC provider did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
