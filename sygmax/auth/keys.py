"""Signing keys and JWT access tokens.

Access tokens are JWTs signed with Ed25519 (JOSE ``EdDSA``): asymmetric, so a process or
service that only verifies never holds a key that can mint tokens, and small, fast
signatures. Keys live in ``auth.keys_dir``, one PKCS#8 PEM file per key, mode 0600 in a
0700 directory, named ``ed25519-<creation time in ns>.pem``. The newest key signs; every
key in the directory verifies, so rotation (``sygmax auth rotate-keys``) is: add a key,
keep the old one at least ``auth.access_token_ttl_s`` so tokens it signed run out
naturally, then remove it (``--keep``). The ``kid`` header is the key's RFC 7638 JWK
thumbprint, so a token names its key without revealing anything and verification never
tries keys blindly.

Verification accepts only ``alg: EdDSA`` with a known ``kid`` and requires ``exp``,
``iat``, ``iss`` (must equal ``auth.issuer``), ``sub`` and ``typ == "access"``, with a
few seconds of leeway for clock skew. Everything else (``alg: none``, HS256 keyed with
the public key, RS256, another key, expired, altered claims) is an :class:`InvalidAccessToken`.

Processes notice keys added by another process or by the CLI: the directory is re-read
when its modification time changes (checked at most every few seconds) and at once,
throttled, when a token names a ``kid`` not yet loaded.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sygmax.config import AuthSettings

ALGORITHM = "EdDSA"
LEEWAY_S = 5
_FILE = re.compile(r"^ed25519-(\d{19,20})\.pem$")
_RECHECK_S = 5.0
_UNKNOWN_KID_RELOAD_S = 1.0


class KeyDirectoryError(Exception):
    """The key directory cannot be used (permissions, unreadable or malformed key)."""


class InvalidAccessToken(Exception):
    """The token is not a valid access token of this installation; ``reason`` says why (for logs)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256) of an Ed25519 public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}, separators=(",", ":"),
                           sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True)
class SigningKey:
    kid: str
    created_ns: int
    path: Path
    private: Ed25519PrivateKey
    public: Ed25519PublicKey


def _load_file(path: Path, created_ns: int) -> SigningKey:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyDirectoryError(f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise KeyDirectoryError(f"{path} is not a readable PEM private key: {exc}") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyDirectoryError(f"{path} is not an Ed25519 key")
    public = private.public_key()
    return SigningKey(thumbprint(public), created_ns, path, private, public)


def read_keys(directory: Path) -> list[SigningKey]:
    """Every key in ``directory``, oldest first (an absent directory has none)."""
    if not directory.is_dir():
        return []
    keys = []
    for entry in directory.iterdir():
        match = _FILE.match(entry.name)
        if match and entry.is_file():
            keys.append(_load_file(entry, int(match.group(1))))
    return sorted(keys, key=lambda key: key.created_ns)


def _write_key(directory: Path) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    created = time.time_ns()
    path = directory / f"ed25519-{created:020d}.pem"
    temporary = directory / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    public = private.public_key()
    return SigningKey(thumbprint(public), created, path, private, public)


class _DirectoryLock:
    """An exclusive flock on ``<dir>/.lock``: key creation by several processes at once stays orderly."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".lock"

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _prepare_directory(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = directory.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(directory, 0o700)


def ensure_key(directory: Path) -> list[SigningKey]:
    """The directory's keys, creating the first one if there is none (safe across processes)."""
    keys = read_keys(directory)
    if keys:
        return keys
    _prepare_directory(directory)
    with _DirectoryLock(directory):
        keys = read_keys(directory)
        if not keys:
            keys = [_write_key(directory)]
    return keys


def add_key(directory: Path, keep: int = 0) -> tuple[SigningKey, list[Path]]:
    """Add a new (newest, hence signing) key; with ``keep`` > 0 remove all but the newest ``keep``.

    Returns the new key and the paths removed.
    """
    _prepare_directory(directory)
    with _DirectoryLock(directory):
        new = _write_key(directory)
        removed: list[Path] = []
        if keep > 0:
            keys = read_keys(directory)
            for key in keys[:-keep]:
                key.path.unlink()
                removed.append(key.path)
    return new, removed


class KeyRing:
    """The keys of one directory as this process sees them, reloaded when the directory changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._keys: dict[str, SigningKey] = {}
        self._signing: SigningKey | None = None
        self._mtime: int | None = None
        self._checked = 0.0
        self._unknown_reload = 0.0

    def _reload(self, create: bool) -> None:
        with self._lock:
            keys = ensure_key(self.directory) if create else read_keys(self.directory)
            self._keys = {key.kid: key for key in keys}
            self._signing = keys[-1] if keys else None
            try:
                self._mtime = self.directory.stat().st_mtime_ns
            except FileNotFoundError:
                self._mtime = None
            self._checked = time.monotonic()

    def _maybe_reload(self, create: bool = False) -> None:
        now = time.monotonic()
        if self._signing is None and create:
            self._reload(create=True)
            return
        if now - self._checked < _RECHECK_S:
            return
        try:
            mtime = self.directory.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        self._checked = now
        if mtime != self._mtime:
            self._reload(create=False)

    def signing_key(self) -> SigningKey:
        self._maybe_reload(create=True)
        assert self._signing is not None
        return self._signing

    def public_key(self, kid: str) -> Ed25519PublicKey | None:
        self._maybe_reload()
        key = self._keys.get(kid)
        if key is None:
            now = time.monotonic()
            if now - self._unknown_reload >= _UNKNOWN_KID_RELOAD_S:
                self._unknown_reload = now
                self._reload(create=False)
                key = self._keys.get(kid)
        return key.public if key is not None else None

    def kids(self) -> list[str]:
        self._maybe_reload()
        return list(self._keys)


_RINGS: dict[str, KeyRing] = {}


def keyring(settings: AuthSettings) -> KeyRing:
    """The process-wide KeyRing of ``auth.keys_dir``."""
    ring = _RINGS.get(settings.keys_dir)
    if ring is None:
        ring = _RINGS.setdefault(settings.keys_dir, KeyRing(Path(settings.keys_dir)))
    return ring


def mint_access_token(settings: AuthSettings, claims: dict[str, Any], now: float | None = None) -> str:
    """Sign an access token carrying ``claims`` (``sub`` required) for ``auth.access_token_ttl_s``."""
    key = keyring(settings).signing_key()
    issued = int(now if now is not None else time.time())
    # jti: two tokens minted in the same second for the same session must still differ, because
    # the CSRF token is derived from the access token (sygmax.auth.tokens.csrf_for).
    payload = {**claims, "iss": settings.issuer, "iat": issued, "exp": issued + settings.access_token_ttl_s,
               "typ": "access", "jti": secrets.token_urlsafe(12)}
    return jwt.encode(payload, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})


_REQUIRED = {"require": ["exp", "iat", "iss", "sub"], "verify_signature": True, "verify_exp": True,
             "verify_iat": True, "verify_iss": True}


def verify_access_token(settings: AuthSettings, token: str) -> dict[str, Any]:
    """The claims of a valid access token, else :class:`InvalidAccessToken`."""
    if len(token) > 4096:
        raise InvalidAccessToken("token too long")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise InvalidAccessToken(f"malformed: {exc}") from exc
    if header.get("alg") != ALGORITHM:
        raise InvalidAccessToken(f"algorithm {str(header.get('alg'))[:20]!r} not accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or len(kid) > 100:
        raise InvalidAccessToken("no key id")
    public = keyring(settings).public_key(kid)
    if public is None:
        raise InvalidAccessToken("unknown key id")
    try:
        claims = jwt.decode(token, public, algorithms=[ALGORITHM], issuer=settings.issuer, leeway=LEEWAY_S,
                            options=_REQUIRED)
    except jwt.InvalidTokenError as exc:
        raise InvalidAccessToken(f"{type(exc).__name__}: {exc}"[:200]) from exc
    if claims.get("typ") != "access":
        raise InvalidAccessToken("not an access token")
    if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("sid"), str):
        raise InvalidAccessToken("malformed subject")
    return claims
