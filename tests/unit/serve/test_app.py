"""What `build_app` decides before anything starts (serve/app.py)."""

from __future__ import annotations

from cluster.spec.config import load_config
from serve.app import reachable_rules


def test_loopback_fetches_are_refused_once_bound_beyond_loopback():
    local = load_config()  # the local profile allows loopback targets (a developer's receiver)
    assert local.serve.fetch.allow_loopback and reachable_rules(local).serve.fetch.allow_loopback
    for host in ("0.0.0.0", "10.0.0.5", "raydiant.internal"):
        exposed = load_config()
        exposed.serve.host = host
        assert reachable_rules(exposed).serve.fetch.allow_loopback is False, host
