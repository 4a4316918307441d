"""Typed settings: one TOML file, then ``SYGMAX_<SECTION>_<KEY>`` environment overrides.

The file path comes from ``SYGMAX_CONFIG`` (default ``/etc/sygmax/sygmax.toml``). A missing
file is allowed (every key has a default or comes from the environment); a file that exists
but cannot be read or parsed is an error. Every problem is reported as ``section.key: what
is wrong`` so ``sygmax config check`` and ``sygmax run`` can name the exact key.

Plugins declare their own settings section (a pydantic model); :func:`load_settings` takes
those models so unknown keys in a plugin section are caught like kernel keys.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_CONFIG_PATH = "/etc/sygmax/sygmax.toml"
ENV_PREFIX = "SYGMAX_"


class Section(BaseModel):
    """Base for every settings section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=256)
    # "auto": each process profile's own choice (profiles/__init__.py: uvicorn for realtime,
    # granian otherwise); "granian" or "uvicorn" applies to every profile.
    asgi_server: Literal["auto", "granian", "uvicorn"] = "auto"
    max_request_body: int = Field(10 * 1024 * 1024, ge=1024, description="bytes; larger bodies get 413")
    public_url: str = "http://localhost:8000"
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="peers whose X-Forwarded-For is believed (Caddy on the same host)",
    )


class DatabaseSettings(Section):
    url: str = "postgresql://sygmax@127.0.0.1:5432/sygmax"
    pool_min: int = Field(2, ge=1, le=100)
    pool_max: int = Field(20, ge=1, le=500)
    statement_timeout_ms: int = Field(30_000, ge=100)

    @field_validator("url")
    @classmethod
    def _postgres_only(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(f"unsupported scheme {scheme!r}: use postgresql://USER:PASSWORD@HOST:PORT/DB")
        return value


class RedisSettings(Section):
    url: str = "redis://127.0.0.1:6379/0"
    max_connections: int = Field(100, ge=1)

    @field_validator("url")
    @classmethod
    def _redis_only(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported scheme {scheme!r}: use redis://, rediss:// or unix://")
        return value


@dataclass(frozen=True)
class StorageLocation:
    """A parsed storage URL: either a local directory or an S3 bucket."""

    kind: Literal["file", "s3"]
    path: str = ""
    endpoint: str = ""
    bucket: str = ""
    access_key: str = ""
    secret_key: str = ""
    secure: bool = False
    region: str | None = None


def parse_storage_url(url: str) -> StorageLocation:
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("file URLs take an absolute path: file:///var/lib/sygmax/objects")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ValueError("file URLs take an absolute path: file:///var/lib/sygmax/objects")
        return StorageLocation(kind="file", path=path)
    if parts.scheme == "s3":
        if not parts.hostname:
            raise ValueError("s3 URL needs a host: s3://ACCESS:SECRET@host:port/bucket")
        bucket = parts.path.strip("/")
        if not bucket or "/" in bucket:
            raise ValueError("s3 URL needs exactly one bucket name in the path: s3://ACCESS:SECRET@host:port/bucket")
        if not parts.username or not parts.password:
            raise ValueError("s3 URL needs credentials: s3://ACCESS:SECRET@host:port/bucket")
        query = parse_qs(parts.query)
        unknown = set(query) - {"secure", "region"}
        if unknown:
            raise ValueError(f"unknown s3 URL option(s) {sorted(unknown)}: allowed are secure, region")
        secure_text = query.get("secure", ["false"])[0].lower()
        if secure_text not in ("true", "false", "1", "0"):
            raise ValueError("s3 URL option secure must be true or false")
        endpoint = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        return StorageLocation(
            kind="s3",
            endpoint=endpoint,
            bucket=bucket,
            access_key=unquote(parts.username),
            secret_key=unquote(parts.password),
            secure=secure_text in ("true", "1"),
            region=query.get("region", [None])[0],
        )
    raise ValueError(
        f"unsupported scheme {parts.scheme!r}: use file:///absolute/path or s3://ACCESS:SECRET@host:port/bucket"
    )


class StorageSettings(Section):
    url: str = "file:///var/lib/sygmax/objects"
    max_object_size: int = Field(5 * 1024**3, ge=1, description="bytes; larger uploads are refused")
    multipart_threshold: int = Field(16 * 1024**2, ge=5 * 1024**2)
    presign_secret: str = Field("", description="HMAC key for local-disk presigned URLs (generated at install)")

    @field_validator("url")
    @classmethod
    def _parseable(cls, value: str) -> str:
        parse_storage_url(value)
        return value

    @property
    def location(self) -> StorageLocation:
        return parse_storage_url(self.url)


class EventSettings(Section):
    stream_prefix: str = "sygmax:events"
    max_attempts: int = Field(5, ge=1, le=100, description="deliveries before an event goes to the dead-letter stream")
    retry_base_ms: int = Field(200, ge=1)
    retry_max_ms: int = Field(60_000, ge=1)
    claim_idle_ms: int = Field(30_000, ge=100, description="pending this long on a dead consumer -> reclaimed")
    batch_size: int = Field(100, ge=1, le=10_000)
    stream_max_len: int = Field(1_000_000, ge=1000)
    dedupe_ttl_s: int = Field(7 * 86400, ge=60)


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
    access_log: bool = True


class RateLimitSettings(Section):
    enabled: bool = True
    per_ip_per_minute: int = Field(1000, ge=1)
    per_user_per_minute: int = Field(1000, ge=1, description="per authenticated user, across all routes")
    # "[METHOD ]/route/template" (exact) or "[METHOD ]/prefix/*" -> requests per minute per caller
    # (user when the route authenticates, else client IP), on top of the per-IP and per-user limits.
    routes: dict[str, int] = Field(default_factory=dict)

    @field_validator("routes")
    @classmethod
    def _route_keys(cls, value: dict[str, int]) -> dict[str, int]:
        for key, limit in value.items():
            method, _, path = key.rpartition(" ")
            if not path.startswith("/") or (method and not method.isalpha()):
                raise ValueError(f"route {key!r}: use '/api/v1/path/{{param}}', '/api/v1/prefix/*' "
                                 f"or 'POST /api/v1/path'")
            if limit < 1:
                raise ValueError(f"route {key!r}: the limit must be at least 1 request per minute")
        return value


class AuthSettings(Section):
    """Accounts, sessions and tokens (identity core)."""

    registration: Literal["open", "invite", "closed"] = "invite"
    access_token_ttl_s: int = Field(900, ge=60, le=86400)
    refresh_token_ttl_s: int = Field(30 * 86400, ge=3600)
    keys_dir: str = Field("/var/lib/sygmax/keys", description="JWT signing keys (generated at install)")
    issuer: str = "sygmax"
    cookie_secure: bool = True
    login_failures_before_lockout: int = Field(10, ge=3)
    lockout_s: int = Field(900, ge=10)
    login_per_ip_per_minute: int = Field(20, ge=1)
    verification_link_ttl_s: int = Field(86400, ge=300)
    reset_link_ttl_s: int = Field(3600, ge=300)
    # argon2id cost (OWASP Password Storage Cheat Sheet: m=19 MiB, t=2, p=1). Raising them
    # re-hashes each password at its owner's next login.
    argon2_time_cost: int = Field(2, ge=1, le=20)
    argon2_memory_kib: int = Field(19456, ge=8192, le=4 * 1024 * 1024)
    argon2_parallelism: int = Field(1, ge=1, le=16)


class SmtpSettings(Section):
    """Relay for outgoing mail (verification links, invitations, digests)."""

    host: str = "127.0.0.1"
    port: int = Field(25, ge=1, le=65535)
    username: str = ""
    password: str = ""
    starttls: bool = False
    use_tls: bool = False
    sender: str = "Sygmax <sygmax@localhost>"
    timeout_s: float = Field(10, gt=0)


class OidcProvider(Section):
    """One OpenID Connect (or OAuth2) login provider."""

    title: str
    issuer: str = Field(description="e.g. https://keycloak.example.org/realms/main")
    client_id: str
    client_secret: str = ""
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    # Plain OAuth2 providers without discovery (GitHub) set their endpoints explicitly.
    authorization_endpoint: str = ""
    token_endpoint: str = ""
    userinfo_endpoint: str = ""


class OidcSettings(Section):
    providers: dict[str, OidcProvider] = Field(default_factory=dict)
    allow_insecure_http: bool = Field(False, description="tests and labs only: accept http:// issuers")
    timeout_s: float = Field(10, gt=0, le=60, description="each call to a provider")

    @model_validator(mode="after")
    def _providers_usable(self) -> "OidcSettings":
        for name, provider in self.providers.items():
            if not re.match(r"^[a-z][a-z0-9_-]{0,31}$", name):
                raise ValueError(f"provider name {name!r}: 1-32 characters of a-z, 0-9, '_', '-'")
            explicit = [provider.authorization_endpoint, provider.token_endpoint, provider.userinfo_endpoint]
            if any(explicit) and not all(explicit):
                raise ValueError(f"provider {name}: set all of authorization_endpoint, token_endpoint and "
                                 f"userinfo_endpoint (plain OAuth2), or none of them (OpenID Connect discovery)")
            for url in [provider.issuer, *explicit]:
                if not url:
                    continue
                scheme = urlsplit(url).scheme
                if scheme != "https" and not (scheme == "http" and self.allow_insecure_http):
                    raise ValueError(f"provider {name}: {url} must be an https:// URL")
        return self


class CorsSettings(Section):
    allow_origins: list[str] = Field(default_factory=list, description="exact origins; empty: same-origin only")
    allow_credentials: bool = True
    max_age_s: int = Field(600, ge=0)

    @field_validator("allow_origins")
    @classmethod
    def _exact_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or origin.rstrip("/") != \
                    f"{parts.scheme}://{parts.netloc}" or "*" in origin:
                raise ValueError(f"{origin!r} is not an exact origin like https://app.example.org (no paths, "
                                 f"no wildcards)")
        return [origin.rstrip("/") for origin in value]


class GatewaySettings(Section):
    """API gateway: versions and canary routing, security headers, feature flags, GraphQL limits."""

    # API version -> the date it was deprecated; its responses carry Deprecation/Sunset headers
    # and, one month after that date (the sunset), routes that have a successor answer 410.
    deprecated_versions: dict[str, date] = Field(default_factory=dict)
    canary_percent: int = Field(10, ge=0, le=100, description="users routed to the newer version of an endpoint")
    content_security_policy: str = ("default-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
                                    "form-action 'self'; object-src 'none'")
    hsts_max_age_s: int = Field(31_536_000, ge=0)
    flag_cache_s: float = Field(5.0, ge=0, le=300, description="how long a process reuses feature flags")
    graphql_max_depth: int = Field(8, ge=1, le=50)
    graphql_max_tokens: int = Field(2000, ge=50)
    graphql_max_aliases: int = Field(20, ge=1)

    @field_validator("deprecated_versions")
    @classmethod
    def _version_names(cls, value: dict[str, date]) -> dict[str, date]:
        for name in value:
            if not (name.startswith("v") and name[1:].isdigit()):
                raise ValueError(f"{name!r} is not an API version name like 'v1'")
        return value


class PluginSettings(Section):
    """Which plugins run. ``enabled`` empty means every installed plugin not in ``disabled``."""

    enabled: list[str] = Field(default_factory=list)
    disabled: list[str] = Field(default_factory=list)

    def is_enabled(self, name: str) -> bool:
        if name in self.disabled:
            return False
        return not self.enabled or name in self.enabled


KERNEL_SECTIONS: dict[str, type[Section]] = {
    "server": ServerSettings,
    "database": DatabaseSettings,
    "redis": RedisSettings,
    "storage": StorageSettings,
    "events": EventSettings,
    "log": LogSettings,
    "rate_limit": RateLimitSettings,
    "auth": AuthSettings,
    "smtp": SmtpSettings,
    "oidc": OidcSettings,
    "cors": CorsSettings,
    "gateway": GatewaySettings,
    "plugins": PluginSettings,
}


class ConfigError(Exception):
    """Configuration is invalid; ``problems`` lists ``(key, message)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"invalid configuration ({self.source}):"]
        lines += [f"  {key}: {message}" for key, message in self.problems]
        return "\n".join(lines)


@dataclass(frozen=True)
class Settings:
    """All validated sections; plugin sections live in ``plugin_sections``."""

    server: ServerSettings
    database: DatabaseSettings
    redis: RedisSettings
    storage: StorageSettings
    events: EventSettings
    log: LogSettings
    rate_limit: RateLimitSettings
    auth: AuthSettings
    smtp: SmtpSettings
    oidc: OidcSettings
    cors: CorsSettings
    gateway: GatewaySettings
    plugins: PluginSettings
    plugin_sections: Mapping[str, Section]
    source: str

    def section(self, name: str) -> Section:
        if name in KERNEL_SECTIONS:
            return getattr(self, name)
        return self.plugin_sections[name]


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("SYGMAX_CONFIG", DEFAULT_CONFIG_PATH))


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [("<file>", f"cannot read: {exc}")]) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [("<file>", f"not valid TOML: {exc}")]) from exc


def _env_value(raw: str, field_info: Any) -> Any:
    """Environment values are strings; lists may be JSON or comma-separated."""
    annotation = getattr(field_info, "annotation", None)
    if annotation is not None and getattr(annotation, "__origin__", None) is dict:
        return json.loads(raw)
    if annotation is not None and getattr(annotation, "__origin__", None) is list:
        stripped = raw.strip()
        if stripped.startswith("["):
            return json.loads(stripped)
        return [item.strip() for item in stripped.split(",") if item.strip()]
    return raw


def _apply_env(
    data: dict[str, Any], models: Mapping[str, type[Section]], environ: Mapping[str, str]
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    # Longest section names first so SYGMAX_RATE_LIMIT_X maps to [rate_limit] x, not [rate] limit_x.
    sections = sorted(models, key=len, reverse=True)
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "SYGMAX_CONFIG" or name == "SYGMAX_PROFILES":
            continue
        rest = name[len(ENV_PREFIX):].lower()
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        if section is None:
            problems.append((name, f"unknown section; known sections: {', '.join(sorted(models))}"))
            continue
        key = rest[len(section) + 1:]
        field_info = models[section].model_fields.get(key)
        if field_info is None:
            problems.append((name, f"unknown key {section}.{key}"))
            continue
        try:
            data.setdefault(section, {})[key] = _env_value(raw, field_info)
        except ValueError as exc:
            problems.append((name, f"cannot parse {field_info.annotation}: {exc}"))
    return problems


def _sensitive(key: str) -> bool:
    """URLs carry credentials and secrets are secrets: never echo their values."""
    return any(word in key for word in ("url", "secret", "password", "key", "token"))


def load_settings(
    path: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    plugin_sections: Mapping[str, type[Section]] | None = None,
) -> Settings:
    """Read, merge and validate configuration; raise :class:`ConfigError` naming every bad key."""
    environ = os.environ if environ is None else environ
    path = Path(path) if path is not None else config_path(environ)
    data = _read_file(path)
    models: dict[str, type[Section]] = {**KERNEL_SECTIONS, **(plugin_sections or {})}
    problems: list[tuple[str, str]] = []
    for section, value in list(data.items()):
        if section not in models:
            problems.append((section, f"unknown section; known sections: {', '.join(sorted(models))}"))
            del data[section]
        elif not isinstance(value, dict):
            problems.append((section, f"must be a table ([{section}]), not {type(value).__name__}"))
            del data[section]
    problems += _apply_env(data, models, environ)
    validated: dict[str, Section] = {}
    for section, model in models.items():
        try:
            validated[section] = model.model_validate(data.get(section, {}))
        except ValidationError as exc:
            for error in exc.errors():
                key = ".".join([section, *(str(part) for part in error["loc"])])
                message = error["msg"]
                if error["type"] == "extra_forbidden":
                    message = "unknown key"
                elif "input" in error and error["type"] != "missing" and not _sensitive(key):
                    message = f"{message} (got {error['input']!r})"
                problems.append((key, message))
    if problems:
        raise ConfigError(str(path), problems)
    kernel = {name: validated[name] for name in KERNEL_SECTIONS}
    plugins = {name: validated[name] for name in (plugin_sections or {})}
    return Settings(**kernel, plugin_sections=plugins, source=str(path))
