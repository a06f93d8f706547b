"""API keys (serve/edge/auth.py): who a bearer header names, and what records may see of a key."""

from __future__ import annotations

import pytest

from serve.edge.auth import ApiKeys, configured_keys, key_id


def test_a_configured_key_is_identified_by_its_id_never_itself():
    keys = ApiKeys(["k-alpha-0123456789", "k-beta-0123456789"])
    assert keys.identify("Bearer k-beta-0123456789") == key_id("k-beta-0123456789")
    assert keys.identify("bearer   k-alpha-0123456789  ") == key_id("k-alpha-0123456789")  # scheme any case
    assert "k-beta" not in key_id("k-beta-0123456789") and len(key_id("k-beta-0123456789")) == 16


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic k-alpha-0123456789",
                                    "Bearer k-alpha-012345678", "Bearer k-alpha-0123456789x", "k-alpha-0123456789"])
def test_anything_but_a_configured_bearer_key_is_refused(header):
    assert ApiKeys(["k-alpha-0123456789"]).identify(header) is None


def test_no_keys_is_falsy_and_refuses_all():
    keys = ApiKeys([])
    assert not keys and keys.identify("Bearer anything") is None


def test_keys_come_from_the_environment_then_the_config(monkeypatch):
    monkeypatch.setenv("RAYDIANT_API_KEYS", " env-1 , ,env-2")
    assert configured_keys(["cfg-1", ""]) == ["env-1", "env-2", "cfg-1"]
    monkeypatch.delenv("RAYDIANT_API_KEYS")
    assert configured_keys(["cfg-1"]) == ["cfg-1"]


def test_a_service_others_can_reach_refuses_short_or_placeholder_secrets():
    from serve.edge.auth import listens_beyond_loopback, weak_secrets
    from serve.secrets import new_signing_key, new_webhook_secret

    strong = ["k3Jq8vT2mXw9Lp4Z", "Z9x8c7v6b5n4m3l2k1"]
    assert weak_secrets(strong, new_signing_key(), new_webhook_secret()) == []
    problems = weak_secrets(["short-key", "key-for-app-1-xxxxxxxx", "aaaaaaaaaaaaaaaaaaaaa"],
                            "64 random hex characters", "whsec_...")
    assert problems == ["API key 1 is shorter than 16 characters", "API key 2 is a placeholder",
                        "API key 3 is a placeholder", "the signing key is shorter than 32 characters",
                        "the webhook secret is a placeholder"]
    # Judged by the key it decodes to: 40 characters of text that are a 3-byte key are weak.
    import base64

    three_bytes = "whsec_" + base64.b64encode(b"k3y").decode() + "=" * 0
    assert weak_secrets(strong, new_signing_key(), three_bytes) == [
        "the webhook secret decodes to a 3-byte key (at least 24 random bytes)"]
    assert weak_secrets(strong, new_signing_key(), "whsec_" + "QUJD" * 10) == [
        "the webhook secret decodes to a key of repeated bytes"]
    assert weak_secrets(strong, new_signing_key(), "whsec_not base64!" + "x" * 30) == [
        "the webhook secret is not whsec_ followed by base64"]
    assert not any("short-key" in p or "key-for-app" in p for p in problems)  # never the secret itself
    assert listens_beyond_loopback("0.0.0.0") and listens_beyond_loopback("10.0.0.5")
    assert listens_beyond_loopback("raydiant.internal")
    assert not listens_beyond_loopback("127.0.0.1") and not listens_beyond_loopback("::1")
    assert not listens_beyond_loopback("localhost")
