"""`TenantSecrets`: each API key's own webhook signing secret, and rotation.

One secret for every tenant would let any tenant sign deliveries that another tenant's receiver
accepts (each tenant knows the secret, to verify its own). So each key gets its own Standard
Webhooks secret, derived from the service's secret and the key's id (HMAC-SHA256), never stored:
every ingress derives the same one. A tenant reads its secret with its key
(`GET /api/v1/webhooks/secret`); it learns nothing of another's.

Rotation: with `webhooks.previous_secret` set, deliveries carry two signatures (Standard
Webhooks' space-separated list), one from the current secret and one from the previous, so a
receiver verifying with either accepts them while tenants move to the new secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

MIN_SECRET_BYTES = 24  # Standard Webhooks asks for 24 to 64 random bytes


def decoded_secret(secret: str) -> bytes:
    """A Standard Webhooks secret's key bytes (`whsec_` + base64, as the library reads it);
    raises ValueError when it is not base64."""
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise ValueError("is not whsec_ followed by base64") from None


def secret_problem(secret: str) -> str | None:
    """Why `secret` is too weak to sign with (measured on the key it decodes to), or None."""
    try:
        key = decoded_secret(secret)
    except ValueError as exc:
        return str(exc)
    if len(key) < MIN_SECRET_BYTES:
        return f"decodes to a {len(key)}-byte key (at least {MIN_SECRET_BYTES} random bytes)"
    if len(set(key)) < 8:
        return "decodes to a key of repeated bytes"
    return None


@dataclass(frozen=True)
class TenantSecrets:
    current: str
    previous: str | None = None

    def for_key(self, key_id: str) -> list[str]:
        """The key's secrets, current first (two while a rotation is under way)."""
        return [_derived(master, key_id) for master in (self.current, self.previous) if master]

    def __repr__(self) -> str:  # never in a log line or a traceback
        return "TenantSecrets(current" + (", previous)" if self.previous else ")")


def _derived(master: str, key_id: str) -> str:
    digest = hmac.new(decoded_secret(master), f"raydiant-webhook:{key_id}".encode(), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(digest).decode()
