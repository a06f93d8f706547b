"""The client address a request is counted by (the anonymous rate limit's key).

`X-Forwarded-For` is written by whoever sends the request, so it is believed only from a peer
that is one of the configured `serve.trusted_proxies` (the load balancer in front of the
service), and then only up to the first address that is not itself a trusted proxy, read from
the right (what the load balancers appended), never the left (what the client wrote). With no
trusted proxies (the default) the peer's own address counts, whatever the headers say.
Serve's HTTP proxy is started with `FORWARDED_ALLOW_IPS` empty (cluster/runtime/local_ray.py, the
container image), so the peer address reaching here is the real one.
"""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(proxies: list[str]) -> list[Network]:
    """The configured proxies as networks; raises ValueError naming a malformed one."""
    networks = []
    for proxy in proxies:
        try:
            networks.append(ipaddress.ip_network(proxy.strip(), strict=False))
        except ValueError:
            raise ValueError(f"serve.trusted_proxies: {proxy!r} is not an address or network") from None
    return networks


def client_address(peer: str | None, forwarded_for: str | None, trusted: list[Network]) -> str:
    """The address to count a request by."""
    if peer is None:
        return "unknown"
    if not trusted or not _trusted(peer, trusted) or not forwarded_for:
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",")[-32:] if hop.strip()]  # bounded
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop if _address(hop) is not None else peer  # garbage from a proxy: its own address
    return peer


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(text: str, trusted: list[Network]) -> bool:
    address = _address(text)
    return address is not None and any(address in network for network in trusted)
