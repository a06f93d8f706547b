"""Server-side fetches of client-given URLs (input images), refusing private addresses.

A client must not be able to make the service read from inside the cluster (metadata servers,
the Redis, the dashboard): unless the config allows it, every address the host name resolves
to must be public. `data:` URIs are decoded locally.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from urllib.parse import urlparse

import httpx


class FetchError(Exception):
    """The URL is not allowed, not reachable, or too large (message says which)."""


def _check_public(host: str) -> None:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        raise FetchError(f"cannot resolve host {host}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise FetchError(f"refusing to fetch from non-public address {address} ({host})")


async def fetch_image(url: str, max_bytes: int, allow_private: bool = False, timeout_s: float = 20) -> bytes:
    if url.startswith("data:"):
        try:
            header, payload = url.split(",", 1)
            data = base64.b64decode(payload, validate=True) if header.endswith(";base64") else payload.encode()
        except (ValueError, binascii.Error):
            raise FetchError("image data URI is not valid base64") from None
        if len(data) > max_bytes:
            raise FetchError(f"image is larger than {max_bytes} bytes")
        return data
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise FetchError("image URL must be http(s):// or a data: URI")
    if not allow_private:
        await asyncio.to_thread(_check_public, parsed.hostname)
    try:
        # No redirects: a public URL could otherwise redirect to a private address.
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise FetchError(f"image URL answered HTTP {response.status_code}")
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        raise FetchError(f"image is larger than {max_bytes} bytes")
                return bytes(data)
    except httpx.HTTPError as exc:
        raise FetchError(f"cannot fetch image: {exc}") from None
