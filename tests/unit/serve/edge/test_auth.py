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
