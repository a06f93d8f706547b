"""Server-side requests to client-given URLs (input images, webhooks, LoRA adapters) that cannot be
turned inward. In the core, because both doors fetch: the service (images, webhooks, adapters in
its replicas) and the batch job (adapters named by its rows).

A client must not be able to make the service reach inside the cluster (metadata servers, the
Redis, the dashboard, a sidecar on loopback). Each rule below exists for one reason:

- The host name is resolved once and the connection goes to the address that was checked (the
  Host header and TLS SNI keep the name), so a DNS answer that changes between the check and
  the connection ("DNS rebinding") cannot redirect us.
- Every address of the answer must pass, not just the first, so a mixed answer cannot smuggle
  a private address in.
- Redirects are followed by hand, at most `max_redirects`, and each hop is checked like the
  first: a public URL cannot bounce us to a private one.
- Link-local addresses (169.254.0.0/16, fe80::/10), where cloud metadata services live, the
  EC2 IPv6 metadata address fd00:ec2::254 and Alibaba Cloud's 100.100.100.200 are refused
  always, whatever the config says. Loopback and private ranges are refused unless the config
  allows them (the local profile allows loopback, so a developer's own webhook receiver works).
  0.0.0.0/8 and `::` count as loopback (a connection to them reaches this host).
- An IPv6 address that carries an IPv4 one (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96
  and 64:ff9b:1::/48, 6to4 2002::/16, Teredo) is judged by the IPv4 address inside as well.
- No proxy from the environment is used (a proxy would connect where we did not check), and
  answers are asked for uncompressed and refused compressed: the byte cap counts what arrives.
- Bytes, time and decoded pixels are capped, and an input image must be a PNG, JPEG or WebP,
  so a hostile URL can exhaust neither memory nor a replica.
- Errors say which rule refused a URL, never an address, a port's state or a DNS answer: a
  client must not be able to map the inside through our error messages.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Awaitable, BinaryIO, Callable
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

ALWAYS_REFUSED = [ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128",
                                                    "100.100.100.200/32")]
THIS_HOST = [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "::/128")]  # reach loopback on connect
NAT64 = [ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48")]
IMAGE_FORMATS = {"PNG", "JPEG", "WEBP"}
REDIRECTS = {301, 302, 303, 307, 308}


class FetchError(Exception):
    """The URL is not allowed, not reachable, too large or not an image (message says which)."""


@dataclass(frozen=True)
class FetchPolicy:
    allow_loopback: bool = False
    allow_private: bool = False
    max_redirects: int = 3
    timeout_s: float = 20.0


@dataclass(frozen=True)
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (a connection to it may reach them)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        found += list(address.teredo)
    packed = address.packed
    if any(address in network for network in NAT64) or (packed[:12] == bytes(12) and int(address) > 1):
        found.append(ipaddress.IPv4Address(packed[12:]))  # NAT64, or IPv4-compatible ::a.b.c.d
    return found


def refusal(address: IPAddress, policy: FetchPolicy) -> str | None:
    """Why `address` may not be reached under `policy` (the rule, never the address), or None."""
    for inner in embedded_ipv4(address):
        if problem := refusal(inner, policy):
            return problem
    if any(address in network for network in ALWAYS_REFUSED):
        return "refusing to connect to a link-local/metadata address"
    if address.is_loopback or any(address in network for network in THIS_HOST):
        return None if policy.allow_loopback else "refusing to connect to a loopback address"
    if not address.is_global and not embedded_ipv4(address):
        return None if policy.allow_private else "refusing to connect to a non-public address"
    return None


async def checked_address(host: str, port: int, policy: FetchPolicy, resolver: Resolver) -> str:
    """The address to connect to: `host` resolved once, every answer checked."""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(a) for a in await resolver(host, port)]
        except (OSError, ValueError):
            raise FetchError("the URL's host name does not resolve") from None
    if not addresses:
        raise FetchError("the URL's host name does not resolve")
    for address in addresses:
        if problem := refusal(address, policy):
            raise FetchError(problem)
    return str(addresses[0])


async def request(method: str, url: str, policy: FetchPolicy, *, max_bytes: int, content: bytes | None = None,
                  headers: dict[str, str] | None = None, resolver: Resolver = system_resolver,
                  transport: httpx.AsyncBaseTransport | None = None, sink: BinaryIO | None = None) -> Answer:
    """One request under `policy`, following redirects (GET only) hop by hop. With `sink`, a 200
    answer's body is written there as it arrives (under the same cap) instead of held in memory."""
    try:
        # trust_env=False: no proxy from the environment (it would connect where we did not check).
        async with asyncio.timeout(policy.timeout_s), \
                httpx.AsyncClient(follow_redirects=False, transport=transport, timeout=policy.timeout_s,
                                  trust_env=False) as client:
            for _ in range(policy.max_redirects + 1):
                answer = await _one_hop(client, method, url, policy, max_bytes, content, headers or {}, resolver, sink)
                location = answer.headers.get("location")
                if method != "GET" or answer.status not in REDIRECTS or not location:
                    return answer
                url = urljoin(url, location)
            raise FetchError(f"more than {policy.max_redirects} redirects")
    except TimeoutError:
        raise FetchError(f"no complete answer within {policy.timeout_s:g}s") from None
    except httpx.HTTPError as exc:
        # Not the reason: "connection refused" and its kin tell a client which ports are open.
        log.info("fetch of %s failed: %s", url, exc)
        raise FetchError("the URL could not be fetched") from None


async def _one_hop(client: httpx.AsyncClient, method: str, url: str, policy: FetchPolicy, max_bytes: int,
                   content: bytes | None, headers: dict[str, str], resolver: Resolver,
                   sink: BinaryIO | None = None) -> Answer:
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port out of range, a broken IPv6 literal
        raise FetchError("URL is not a valid http(s) URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError("URL must be http(s)://")
    address = await checked_address(parts.hostname, port, policy, resolver)
    literal = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    outgoing = client.build_request(method, pinned, content=content, extensions=extensions,
                                    headers=headers | {"Host": host_header, "Accept-Encoding": "identity"})
    response = await client.send(outgoing, stream=True)
    try:
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise FetchError("compressed answers are refused (asked for identity encoding)")
        body, received = bytearray(), 0
        streamed = sink is not None and response.status_code == 200
        async for chunk in response.aiter_raw():  # the bytes as they arrive: the cap counts them
            received += len(chunk)
            if received > max_bytes:
                raise FetchError(f"answer is larger than {max_bytes} bytes")
            if streamed:
                sink.write(chunk)
            else:
                body += chunk
        return Answer(response.status_code, response.headers, bytes(body))
    finally:
        await response.aclose()


# --- input images -------------------------------------------------------------------------------


async def fetch_image(url: str, policy: FetchPolicy, max_bytes: int, max_pixels: int,
                      resolver: Resolver = system_resolver,
                      transport: httpx.AsyncBaseTransport | None = None) -> bytes:
    """An input image from an http(s) URL or a `data:` URI, checked to be a bounded image."""
    if url.startswith("data:"):
        data = decode_data_uri(url)
        if len(data) > max_bytes:
            raise FetchError(f"image is larger than {max_bytes} bytes")
    else:
        answer = await request("GET", url, policy, max_bytes=max_bytes, resolver=resolver, transport=transport)
        if answer.status != 200:
            # The same words as a URL that cannot be reached: "answered HTTP 404" against "could not
            # be fetched" would tell a caller which ports answer behind us.
            raise FetchError("the URL could not be fetched")
        data = answer.body
    check_image(data, max_pixels)
    return data


def decode_data_uri(url: str) -> bytes:
    try:
        header, payload = url.split(",", 1)
        if not header.endswith(";base64"):
            raise ValueError
        return base64.b64decode(payload, validate=True)
    except (ValueError, binascii.Error):
        raise FetchError("image data URI must be data:image/...;base64,<base64>") from None


def check_image(data: bytes, max_pixels: int) -> tuple[int, int]:
    """The size of a PNG, JPEG or WebP of at most `max_pixels` pixels (checked from its header,
    before any decoding, so a decompression bomb is refused without being expanded)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind, (width, height) = image.format, image.size
    except Image.DecompressionBombError:  # Pillow's own cap, far above ours: its header says so
        raise FetchError(f"input image says it has over {2 * Image.MAX_IMAGE_PIXELS} pixels (a decompression "
                         f"bomb?); at most {max_pixels} are taken") from None
    except (UnidentifiedImageError, OSError):
        raise FetchError("input is not a PNG, JPEG or WebP image") from None
    if kind not in IMAGE_FORMATS:
        raise FetchError(f"input image is {kind}; PNG, JPEG or WebP expected")
    if width * height > max_pixels:
        raise FetchError(f"input image is {width}x{height}: more than {max_pixels} pixels")
    return width, height
