"""Password hashing (argon2id) and the password policy.

Parameters come from ``[auth]`` (defaults: the OWASP Password Storage Cheat Sheet's first
argon2id configuration, m=19456 KiB, t=2, p=1): about 20-40 ms and 19 MiB per hash on a
current server core, which costs an attacker with a stolen table the same per guess while
keeping a login cheap. One lane (p=1) because the server handles many logins at once: it
parallelises across requests, not within one. Hashing and verifying are CPU-bound and run
in worker threads (argon2-cffi releases the GIL) of a dedicated pool with one thread per
CPU, so a login flood queues instead of allocating 19 MiB per waiting request, and other
thread work (file I/O) is never starved by it. When the configured
parameters change, a successful login re-hashes the password (``check_needs_rehash``).

Unknown accounts are verified against a dummy hash made with the same parameters, so a
login for an address that has no account takes as long as one with a wrong password.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import unicodedata
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from sygmax.config import AuthSettings
from sygmax.errors import Problem

MIN_LENGTH = 10
MAX_LENGTH = 256
PASSWORD_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"  # no control characters (JSON-schema form of the rule)

_hashers: dict[tuple[int, int, int], tuple[PasswordHasher, str]] = {}
_pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="argon2")


def hasher_for(settings: AuthSettings) -> PasswordHasher:
    return _hasher_and_dummy(settings)[0]


def _hasher_and_dummy(settings: AuthSettings) -> tuple[PasswordHasher, str]:
    key = (settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
    entry = _hashers.get(key)
    if entry is None:
        hasher = PasswordHasher(time_cost=key[0], memory_cost=key[1], parallelism=key[2], hash_len=32,
                                salt_len=16, type=Type.ID)
        entry = _hashers.setdefault(key, (hasher, hasher.hash(secrets.token_urlsafe(24))))
    return entry


async def _in_pool(function, *args):
    return await asyncio.get_running_loop().run_in_executor(_pool, function, *args)


def check_password_policy(password: str, email: str | None = None, field: str = "password") -> None:
    """400 ``weak-password`` unless 10..256 characters, no control characters, not the e-mail address."""
    if len(password) < MIN_LENGTH:
        raise Problem(400, "weak-password", f"{field}: at least {MIN_LENGTH} characters", field=field)
    if len(password) > MAX_LENGTH:
        raise Problem(400, "weak-password", f"{field}: at most {MAX_LENGTH} characters", field=field)
    if any(unicodedata.category(char) == "Cc" for char in password):
        raise Problem(400, "weak-password", f"{field}: control characters are not allowed", field=field)
    if email is not None and password.strip().casefold() == email.strip().casefold():
        raise Problem(400, "weak-password", f"{field}: must not be your e-mail address", field=field)


async def hash_password(settings: AuthSettings, password: str) -> str:
    return await _in_pool(hasher_for(settings).hash, password)


def _verify(hasher: PasswordHasher, stored: str, password: str) -> bool:
    try:
        return hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(settings: AuthSettings, stored: str | None, password: str) -> tuple[bool, str | None]:
    """(matches, new hash if the stored one should be upgraded). ``stored`` None: verify a dummy, fail."""
    hasher, dummy = _hasher_and_dummy(settings)
    ok = await _in_pool(_verify, hasher, stored or dummy, password)
    if not ok or stored is None:
        return False, None
    if hasher.check_needs_rehash(stored):
        return True, await _in_pool(hasher.hash, password)
    return True, None


__all__ = ["check_password_policy", "hash_password", "verify_password", "hasher_for", "MIN_LENGTH", "MAX_LENGTH"]
