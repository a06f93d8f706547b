"""Each key's webhook secret (serve/tasks/webhooks/secrets.py): derived from the service's, one per
key, two while the service rotates, and weak service secrets refused by what they decode to."""

from __future__ import annotations

import base64
import os
from datetime import datetime

from standardwebhooks.webhooks import Webhook

from serve.tasks.webhooks.secrets import TenantSecrets, secret_problem


def whsec(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


CURRENT, PREVIOUS = whsec(os.urandom(32)), whsec(os.urandom(32))


def test_each_key_gets_its_own_secret_and_the_library_signs_with_it():
    secrets = TenantSecrets(CURRENT)
    [a], [b] = secrets.for_key("key-a"), secrets.for_key("key-b")
    assert a != b and a == TenantSecrets(CURRENT).for_key("key-a")[0]  # derived, so every ingress agrees
    signed = Webhook(a).sign("msg_1", datetime.now(), "{}")
    assert signed.startswith("v1,")
    assert secret_problem(a) is None


def test_a_rotation_gives_both_secrets_current_first_and_never_logs_them():
    rotating = TenantSecrets(CURRENT, PREVIOUS)
    current, previous = rotating.for_key("key-a")
    assert current == TenantSecrets(CURRENT).for_key("key-a")[0]
    assert previous == TenantSecrets(PREVIOUS).for_key("key-a")[0]
    assert CURRENT not in repr(rotating) and PREVIOUS not in repr(rotating) and "previous" in repr(rotating)


def test_weak_service_secrets_are_named_by_what_they_decode_to():
    assert "not whsec_" in secret_problem("whsec_not base64!")
    assert "16-byte key" in secret_problem(whsec(os.urandom(16)))
    assert "repeated bytes" in secret_problem(whsec(b"ab" * 16))
