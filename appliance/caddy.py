"""Caddy, configured through its admin API (loopback only, on the node's own port).

The whole configuration is one JSON document built by :func:`desired_config` from the
node's state: one HTTPS server with the node's domain, TLS from Caddy's internal CA for
localhost/IP/private names and from ACME (Let's Encrypt) for a real domain, then routes:

- ``/ws/*`` -> the realtime processes (WebSocket upgrade passes through reverse_proxy);
- ``/static/*`` -> files under ``<prefix>/opt/sygmax/static`` with caching headers;
- everything else -> the api processes.

Both proxies balance over every process of their profile, probe each one's ``/healthz``
actively every 500 ms with the ``Sygmax-Upstream-Check`` header (to which a draining process
answers 503: see ``sygmax.app.healthz``), and retry a request on another process for up to 5 s
when one cannot be reached, so a process that dies or restarts costs no request. Applying the
document is idempotent (nothing is sent when Caddy already runs it) and graceful (Caddy swaps
configs without closing listeners), which is what makes ``sygmax scale`` drop no request.

A rolling restart (``sygmax upgrade``, ``--rollback``) never changes the document: the
upstream list always names every process of the profile, and a process leaves and rejoins
the rotation through its health answer alone (:func:`appliance.node.converge_programs`).
That matters because every configuration change makes Caddy close its idle keep-alive client
connections, and a request a client writes on one at that instant gets no answer.

caddy-api-client's helpers proxy one domain to one target; we need several upstreams with
health checks, so :class:`CaddyAdmin` adds raw config calls on top of its transport. It uses
blocking ``requests``: call it from threads, never from an event loop.
"""

from __future__ import annotations

import json
import socket
import ssl
from datetime import UTC, datetime

from caddy_api_client import CaddyAPIClient

from appliance.layout import ApplianceState
from profiles import PROFILES

SERVER = "sygmax"
STATIC_CACHE = "public, max-age=604800"
# The active check (see sygmax.app.healthz). A process's change of answer is seen by Caddy
# within one interval plus one timeout (a check slower than the timeout counts as failed).
UPSTREAM_CHECK_HEADER = "Sygmax-Upstream-Check"
CHECK_INTERVAL_S = 0.5
CHECK_TIMEOUT_S = 2.0
# Passive checks: a request that cannot reach a process keeps it out of rotation this long.
FAIL_DURATION_S = 5.0


class CaddyError(RuntimeError):
    pass


class CaddyAdmin(CaddyAPIClient):
    """The admin API of one Caddy, e.g. ``CaddyAdmin("http://127.0.0.1:8082")``."""

    def config(self, path: str = "") -> object:
        try:
            return self._make_request("GET", f"/config/{path}").json()
        except Exception as exc:  # caddy-api-client wraps every failure in a bare Exception
            raise CaddyError(f"cannot read Caddy's configuration at {self.base_url}: {exc}") from exc

    def load(self, document: dict) -> None:
        try:
            self._make_request("POST", "/load", data=document)
        except Exception as exc:
            raise CaddyError(f"Caddy refused the configuration: {exc}") from exc

    def upstreams(self) -> dict[str, dict]:
        """Caddy's live view of each upstream address (``127.0.0.1:8000``): ``num_requests`` (in
        flight now) and ``fails`` (passive failures not yet expired). Caddy 2.6 does not report
        the active checks' verdict here."""
        try:
            rows = self._make_request("GET", "/reverse_proxy/upstreams").json()
        except Exception as exc:
            raise CaddyError(f"cannot read Caddy's upstreams at {self.base_url}: {exc}") from exc
        return {row["address"]: row for row in rows or ()}

    def reachable(self) -> bool:
        try:
            self.config()
            return True
        except CaddyError:
            return False


def _proxy(state: ApplianceState, profile_name: str, handler_id: str) -> dict | None:
    upstreams = [{"dial": f"127.0.0.1:{port}"} for _, port in state.profile_processes(PROFILES[profile_name])]
    if not upstreams:
        return None
    return {
        "handler": "reverse_proxy",
        "@id": handler_id,
        "upstreams": upstreams,
        "load_balancing": {
            "selection_policy": {"policy": "least_conn"},
            "try_duration": "5s",
            "try_interval": "100ms",
        },
        "health_checks": {
            "active": {
                "uri": "/healthz",
                "headers": {UPSTREAM_CHECK_HEADER: ["1"]},
                "interval": f"{int(CHECK_INTERVAL_S * 1000)}ms",
                "timeout": f"{int(CHECK_TIMEOUT_S * 1000)}ms",
                "expect_status": 200,
            },
            "passive": {"fail_duration": f"{int(FAIL_DURATION_S)}s", "max_fails": 1},
        },
    }


def desired_config(state: ApplianceState) -> dict:
    """The node's Caddy document."""
    layout = state.layout
    routes: list[dict] = []
    realtime = _proxy(state, "realtime", "sygmax-realtime")
    if realtime is not None:
        routes.append({"match": [{"path": ["/ws/*"]}], "handle": [realtime], "terminal": True})
    routes.append(
        {
            "match": [{"path": ["/static/*"]}],
            "handle": [
                {"handler": "headers", "response": {"set": {"Cache-Control": [STATIC_CACHE]}}},
                {"handler": "file_server", "root": str(layout.opt)},
            ],
            "terminal": True,
        }
    )
    api = _proxy(state, "api", "sygmax-api")
    routes.append(
        {
            "handle": [
                {"handler": "encode", "encodings": {"zstd": {}, "gzip": {}}, "prefer": ["zstd", "gzip"]},
                api,
            ]
        }
    )
    site = {
        "match": [{"host": [state.domain]}],
        "handle": [{"handler": "subroute", "routes": routes}],
        "terminal": True,
    }
    if state.tls_internal:
        issuers = [{"module": "internal"}]
    else:
        issuers = [{"module": "acme", **({"email": state.email} if state.email else {})}]
    return {
        "admin": {"listen": f"127.0.0.1:{state.caddy_admin_port}", "config": {"persist": True}},
        "apps": {
            "http": {
                "http_port": state.http_port,
                "https_port": state.https_port,
                "servers": {SERVER: {"listen": [f":{state.https_port}"], "routes": [site]}},
            },
            "tls": {"automation": {"policies": [{"subjects": [state.domain], "issuers": issuers}]}},
            # Never touch the host's trust store; clients trust <data>/caddy/.../root.crt explicitly.
            "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
        },
    }


def apply(state: ApplianceState) -> bool:
    """Make Caddy run the node's configuration; True if anything changed."""
    admin = CaddyAdmin(state.caddy_admin_url)
    wanted = desired_config(state)
    if _normalise(admin.config()) == _normalise(wanted):
        return False
    admin.load(wanted)
    return True


def _normalise(document: object) -> str:
    return json.dumps(document, sort_keys=True)


def certificate_expiry(state: ApplianceState, timeout: float = 3.0) -> datetime | None:
    """notAfter of the certificate Caddy presents for the node's domain (None if unreachable)."""
    from cryptography import x509

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    server_name = None if _is_ip(state.domain) else state.domain
    try:
        with socket.create_connection(("127.0.0.1", state.https_port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    if not der:
        return None
    return x509.load_der_x509_certificate(der).not_valid_after_utc.astimezone(UTC)


def _is_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False
