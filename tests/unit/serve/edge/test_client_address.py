"""The address the anonymous rate limit counts (serve/edge/client_address.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cluster.spec.config import ServeConfig
from serve.edge.client_address import client_address, trusted_networks

LB = trusted_networks(["10.0.0.0/24", "2001:db8::1"])


@pytest.mark.parametrize(("peer", "forwarded", "trusted", "counted"), [
    # No trusted proxies (the default): the peer, whatever a client writes (it was trusted from loopback).
    ("127.0.0.1", "1.2.3.4", [], "127.0.0.1"),
    ("203.0.113.9", "198.51.100.1, 1.2.3.4", [], "203.0.113.9"),
    # From a trusted load balancer: the nearest address it did not add itself, read from the right.
    ("10.0.0.7", "198.51.100.1", LB, "198.51.100.1"),
    ("10.0.0.7", "6.6.6.6, 198.51.100.1", LB, "198.51.100.1"),  # the client's own first entry is ignored
    ("10.0.0.7", "198.51.100.1, 10.0.0.8", LB, "198.51.100.1"),  # two load balancers deep
    ("2001:db8::1", "198.51.100.1", LB, "198.51.100.1"),
    # Not from a trusted proxy: its header is the sender's own words.
    ("203.0.113.9", "198.51.100.1", LB, "203.0.113.9"),
    # Garbage or nothing past the proxies: the proxy's own address.
    ("10.0.0.7", "not-an-address", LB, "10.0.0.7"),
    ("10.0.0.7", None, LB, "10.0.0.7"),
    ("10.0.0.7", "10.0.0.8", LB, "10.0.0.7"),
    (None, "1.2.3.4", LB, "unknown"),
])
def test_the_counted_address(peer, forwarded, trusted, counted):
    assert client_address(peer, forwarded, trusted) == counted


def test_rotating_the_header_from_loopback_spends_one_budget():
    addresses = {client_address("127.0.0.1", f"198.51.100.{i}", trusted_networks([])) for i in range(100)}
    assert addresses == {"127.0.0.1"}


def test_a_malformed_proxy_fails_at_load_naming_it():
    with pytest.raises(ValidationError, match="'10.0.0/33' is not an address or a network"):
        ServeConfig(trusted_proxies=["10.0.0/33"])
