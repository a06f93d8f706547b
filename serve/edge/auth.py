"""API keys.

Keys come from `$RAYDIANT_API_KEYS` (comma-separated) and the config, and are compared in
constant time. Records and logs only ever see a key's id (a hash prefix), never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os


def configured_keys(config_keys: list[str]) -> list[str]:
    from_env = [k.strip() for k in os.environ.get("RAYDIANT_API_KEYS", "").split(",") if k.strip()]
    return from_env + [k for k in config_keys if k]


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class ApiKeys:
    def __init__(self, keys: list[str]):
        self._keys = [k.encode() for k in keys]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def identify(self, authorization: str | None) -> str | None:
        """The key id for an `Authorization: Bearer <key>` header, or None when not a valid key."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        given = authorization[7:].strip().encode()
        # Compare against every key, always, so timing reveals neither which nor whether.
        matches = [hmac.compare_digest(given, key) for key in self._keys]
        return key_id(given.decode()) if any(matches) else None
