"""API keys.

Keys come from `$RAYDIANT_API_KEYS` (comma-separated) and the config, and are compared in
constant time. Records and logs only ever see a key's id (a hash prefix), never the key. A
service that others can reach refuses to start with short or placeholder keys (a loopback-only
local run keeps the short keys of the README's examples).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os

MIN_KEY_LENGTH = 16  # API keys: guessable below this
MIN_SIGNING_KEY_LENGTH = 32  # HMAC keys of result URLs and webhooks
# Values people copy from examples (infra/k8s/secret.example.yaml, the README) and forget.
PLACEHOLDERS = ("key-for-app", "random hex characters", "whsec_...", "...", "changeme", "change-me", "example",
                "secret", "password", "local-key", "test-key")


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


def listens_beyond_loopback(host: str) -> bool:
    """Whether a server bound to `host` can be reached from other machines."""
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"  # a name: assume it is reachable


def weak_secrets(api_keys: list[str], signing_key: str, webhook_secret: str) -> list[str]:
    """Why these secrets are not fit for a service others can reach (the secrets never appear).
    The webhook secret is judged by the key it decodes to, not by its length as text."""
    from serve.tasks.webhooks.secrets import secret_problem

    problems = []
    for position, key in enumerate(api_keys, 1):
        if len(key) < MIN_KEY_LENGTH:
            problems.append(f"API key {position} is shorter than {MIN_KEY_LENGTH} characters")
        elif _placeholder(key):
            problems.append(f"API key {position} is a placeholder")
    if len(signing_key) < MIN_SIGNING_KEY_LENGTH:
        problems.append(f"the signing key is shorter than {MIN_SIGNING_KEY_LENGTH} characters")
    elif _placeholder(signing_key):
        problems.append("the signing key is a placeholder")
    if _placeholder(webhook_secret):
        problems.append("the webhook secret is a placeholder")
    elif problem := secret_problem(webhook_secret):
        problems.append(f"the webhook secret {problem}")
    return problems


def placeholders(api_keys: list[str], signing_key: str, webhook_secret: str) -> list[str]:
    """Which secrets are placeholders (a template's value, or too few distinct characters): wrong
    wherever the service listens, where short ones are fine on loopback."""
    problems = [f"API key {position} is a placeholder" for position, key in enumerate(api_keys, 1)
                if _placeholder(key)]
    if _placeholder(signing_key):
        problems.append("the signing key is a placeholder")
    if _placeholder(webhook_secret):
        problems.append("the webhook secret is a placeholder")
    return problems


def _placeholder(value: str) -> bool:
    lowered = value.lower()
    return any(p in lowered for p in PLACEHOLDERS) or len(set(value)) < 6
