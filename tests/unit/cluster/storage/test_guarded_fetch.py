"""Address rules of server-side fetches (cluster/storage/guarded_fetch.py), against a real HTTP server on loopback.

No test sends traffic beyond loopback: addresses outside it are refused before any connection,
or reach only an in-process transport that records where it was asked to connect.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from cluster.storage.guarded_fetch import FetchError, FetchPolicy, check_image, fetch_image, refusal, request

CLUSTER = FetchPolicy()  # the cluster profile: loopback and private refused
LOCAL = FetchPolicy(allow_loopback=True)  # the local profile


def png(width=32, height=32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


class Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict, bytes]] = {}
    seen: list[str] = []

    def do_GET(self):  # noqa: N802
        self.seen.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {}, b"no"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = httpd.server_address[1]
    base = f"http://127.0.0.1:{port}"
    Handler.routes = {
        "/a.png": (200, {"Content-Type": "image/png"}, png()),
        "/huge.png": (200, {}, png(3000, 3000)),
        "/text": (200, {"Content-Type": "text/plain"}, b"hello, not an image"),
        "/gif": (200, {}, _gif()),
        "/to-private": (302, {"Location": "http://10.0.0.7/a.png"}, b""),
        "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
        "/to-a": (302, {"Location": "/a.png"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
    }
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield base
    httpd.shutdown()


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


def fetch(url, policy, max_bytes=1 << 20, max_pixels=4_000_000, **kwargs):
    return asyncio.run(fetch_image(url, policy, max_bytes, max_pixels, **kwargs))


@pytest.mark.parametrize(("address", "policy", "refused"), [
    ("93.184.216.34", CLUSTER, None),
    ("127.0.0.1", CLUSTER, "loopback"),
    ("::1", CLUSTER, "loopback"),
    ("::ffff:127.0.0.1", CLUSTER, "loopback"),
    ("127.0.0.1", LOCAL, None),
    ("10.1.2.3", CLUSTER, "non-public"),
    ("192.168.1.1", LOCAL, "non-public"),
    ("172.16.0.1", FetchPolicy(allow_private=True), None),
    ("169.254.169.254", FetchPolicy(allow_loopback=True, allow_private=True), "link-local/metadata"),
    ("fe80::1", FetchPolicy(allow_private=True), "link-local/metadata"),
    ("fd00:ec2::254", FetchPolicy(allow_private=True), "link-local/metadata"),
    # Reach this host when connected to: loopback, even under the local profile's rules for it.
    ("0.0.0.0", CLUSTER, "loopback"),
    ("0.1.2.3", CLUSTER, "loopback"),
    ("::", CLUSTER, "loopback"),
    ("0.0.0.0", LOCAL, None),
    # IPv6 addresses carrying an IPv4 one are judged by it too.
    ("64:ff9b::7f00:1", CLUSTER, "loopback"),  # NAT64 of 127.0.0.1
    ("64:ff9b::a00:1", LOCAL, "non-public"),  # NAT64 of 10.0.0.1
    ("64:ff9b:1::a9fe:a9fe", FetchPolicy(allow_private=True), "link-local/metadata"),  # local-use NAT64
    ("64:ff9b::5db8:d822", CLUSTER, None),  # NAT64 of a public address
    ("2002:a9fe:a9fe::", FetchPolicy(allow_private=True), "link-local/metadata"),  # 6to4 of 169.254.169.254
    ("2002:7f00:1::", CLUSTER, "loopback"),
    ("::127.0.0.1", CLUSTER, "loopback"),  # IPv4-compatible
    ("::a00:1", LOCAL, "non-public"),
    # Alibaba Cloud's metadata service: refused whatever the config allows.
    ("100.100.100.200", FetchPolicy(allow_loopback=True, allow_private=True), "link-local/metadata"),
])
def test_address_rules(address, policy, refused):
    problem = refusal(ipaddress.ip_address(address), policy)
    assert (problem is None) if refused is None else (refused in problem)
    assert problem is None or address not in problem  # the rule, never the address


def test_loopback_refused_under_the_cluster_profile_before_any_connection(server):
    Handler.seen.clear()
    with pytest.raises(FetchError, match="loopback"):
        fetch(f"{server}/a.png", CLUSTER)
    with pytest.raises(FetchError, match="loopback"):
        fetch(f"http://localhost:{server.rsplit(':', 1)[1]}/a.png", CLUSTER)
    assert Handler.seen == []


def test_local_profile_fetches_from_loopback(server):
    assert fetch(f"{server}/a.png", LOCAL) == png()


def test_redirects_are_checked_hop_by_hop(server):
    assert fetch(f"{server}/to-a", LOCAL) == png()
    with pytest.raises(FetchError, match="non-public address$"):
        fetch(f"{server}/to-private", LOCAL)
    with pytest.raises(FetchError, match="link-local/metadata"):
        fetch(f"{server}/to-metadata", FetchPolicy(allow_loopback=True, allow_private=True))
    with pytest.raises(FetchError, match="more than 3 redirects"):
        fetch(f"{server}/loop", LOCAL)


def test_size_type_and_pixel_caps(server):
    with pytest.raises(FetchError, match="larger than 40 bytes"):
        fetch(f"{server}/a.png", LOCAL, max_bytes=40)
    with pytest.raises(FetchError, match="not a PNG, JPEG or WebP"):
        fetch(f"{server}/text", LOCAL)
    with pytest.raises(FetchError, match="GIF"):
        fetch(f"{server}/gif", LOCAL)
    with pytest.raises(FetchError, match="3000x3000: more than 4000000 pixels"):
        fetch(f"{server}/huge.png", LOCAL)
    with pytest.raises(FetchError) as missing:
        fetch(f"{server}/missing", LOCAL)
    with pytest.raises(FetchError) as closed:  # nothing listens on port 1
        fetch(f"{server.rsplit(':', 1)[0]}:1/a.png", LOCAL)
    assert str(missing.value) == str(closed.value) == "the URL could not be fetched"  # no port oracle
    with pytest.raises(FetchError, match="data:image"):
        fetch("data:image/png,not-base64", LOCAL)
    with pytest.raises(FetchError, match="http"):
        fetch("file:///etc/passwd", LOCAL)


def test_a_decompression_bomb_is_named_from_its_header_alone():
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    # A PNG that says 50000x50000 (2.5 billion pixels) and holds no pixel data at all.
    header = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0))
    with pytest.raises(FetchError, match=r"says it has over \d+ pixels \(a decompression bomb\?\); at most "
                                         r"4000000 are taken"):
        check_image(header + chunk(b"IEND", b""), 4_000_000)


def test_connection_goes_to_the_checked_address_even_when_dns_changes(server):
    """A name that resolves to a public address at the check and to loopback a moment later
    (DNS rebinding) is resolved once: the connection goes to the address that was checked."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    asked: list[str] = []
    connected: list[tuple[str, str, str | None]] = []

    async def rebinding_resolver(host, port):
        asked.append(host)
        return next(answers)

    def transport(req: httpx.Request) -> httpx.Response:  # records, never connects
        connected.append((req.url.host, req.headers["host"], req.extensions.get("sni_hostname")))
        return httpx.Response(200, stream=httpx.ByteStream(png()))  # streamed, as from a socket

    Handler.seen.clear()
    image = fetch("https://images.example/cat.png", CLUSTER, resolver=rebinding_resolver,
                  transport=httpx.MockTransport(transport))
    assert image == png()
    assert asked == ["images.example"]  # resolved once
    assert connected == [("93.184.216.34", "images.example", "images.example")]  # TLS keeps the name
    assert Handler.seen == []  # the loopback answer was never used


def test_a_mixed_dns_answer_is_refused():
    async def mixed(host, port):
        return ["93.184.216.34", "10.0.0.9"]

    with pytest.raises(FetchError, match="non-public address$"):
        fetch("http://mixed.example/a.png", CLUSTER, resolver=mixed)


def test_webhook_style_post_is_not_redirected(server):
    answer = asyncio.run(request("POST", f"{server}/to-a", FetchPolicy(allow_loopback=True, max_redirects=0),
                                 max_bytes=1024, content=b"{}"))
    assert answer.status in (302, 501)  # http.server has no POST: either way no redirect was followed


def test_errors_never_tell_which_ports_are_open_or_where_names_resolve(server):
    closed = server.rsplit(":", 1)[0] + ":1"  # nothing listens on port 1
    with pytest.raises(FetchError) as refused_port:
        fetch(f"{closed}/a.png", LOCAL)

    async def nowhere(host, port):
        raise OSError("Name or service not known")

    with pytest.raises(FetchError) as unknown:
        fetch("http://inside.example/a.png", CLUSTER, resolver=nowhere)
    assert str(refused_port.value) == "the URL could not be fetched"  # not "connection refused"
    assert str(unknown.value) == "the URL's host name does not resolve"


def test_a_compressed_answer_is_refused_before_it_is_expanded():
    sent: list[str] = []

    def gzip_bomb(req: httpx.Request) -> httpx.Response:
        sent.append(req.headers["accept-encoding"])
        return httpx.Response(200, headers={"content-encoding": "gzip"}, stream=httpx.ByteStream(b"\x1f\x8b" + bytes(64)))

    async def public(host, port):
        return ["93.184.216.34"]

    with pytest.raises(FetchError, match="compressed answers are refused"):
        fetch("http://images.example/a.png", CLUSTER, resolver=public, transport=httpx.MockTransport(gzip_bomb))
    assert sent == ["identity"]


def test_proxies_from_the_environment_are_not_used(server, monkeypatch):
    """A proxy would make the connection to wherever it likes: the checked address must be the
    one connected to. With a proxy variable pointing at a closed port, the fetch still works."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:1")
    assert fetch(f"{server}/a.png", LOCAL) == png()
