"""Result storage on any fsspec filesystem: atomic writes, reads, and signed URLs that expire.

- Writes go to a temporary name beside the target and are renamed into place (local disk), or
  rely on the object store's all-or-nothing PUT (S3, GCS): no reader ever sees half a file.
- URLs live as long as they say. Local storage gets an HMAC-signed URL served by the ingress
  (`serve/edge/files.py`), checked with `verify()`. An object store presigns its own URLs
  (`fs.sign`) when the credentials that sign them outlive them (long-lived keys). When they are a
  session's (IRSA, an instance role: about an hour), a URL they sign would die with them, so the
  URL is the ingress's, HMAC-signed like a local one, and the ingress answers it with a redirect
  to a presigned URL of at most REDIRECT_S seconds, signed then with fresh credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
import os
import posixpath
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Iterator
from urllib.parse import urlencode

import fsspec

from cluster.storage.session_credentials import signs_with_session

_LOCAL_PROTOCOLS = {"file", "local"}
# How long the object store's URL behind one of our redirects lives: long enough to start a
# download, and well inside the 10 minutes botocore keeps before it refreshes a session.
REDIRECT_S = 300


class StorageError(Exception):
    """A path outside the storage root, or a filesystem failure."""


def safe_key(key: str) -> str:
    """Normalise a storage key; refuse absolute paths and `..` (path traversal)."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise StorageError(f"invalid storage key: {key!r}")
    normal = posixpath.normpath(key)
    if normal.startswith("..") or normal == "." or "/../" in f"/{normal}/":
        raise StorageError(f"invalid storage key: {key!r}")
    return normal


@dataclass
class Storage:
    """Files under `root` (a local path or fsspec URI)."""

    root: str
    signing_key: bytes = b""
    public_url: str = ""  # base URL of the ingress, for locally served files

    def __post_init__(self) -> None:
        self.fs, self._root = fsspec.core.url_to_fs(self.root)
        self.is_local = bool(set(_protocols(self.fs)) & _LOCAL_PROTOCOLS)
        if self.is_local:
            self.fs.makedirs(self._root, exist_ok=True)
        self._served_here: bool | None = None  # asked of the credentials once, on the first URL

    @property
    def served_here(self) -> bool:
        """Whether result URLs are the ingress's (local files; an object store whose signing
        credentials are a session's) rather than the object store's own presigned URLs."""
        if self._served_here is None:
            self._served_here = self.is_local or signs_with_session(self.fs)
        return self._served_here

    def path(self, key: str) -> str:
        return f"{self._root.rstrip('/')}/{safe_key(key)}"

    def write(self, key: str, data: bytes) -> None:
        """Write `data` at `key` atomically."""
        target = self.path(key)
        if not self.is_local:
            # Object stores: a PUT is all-or-nothing; S3 serves the type it was given (a browser
            # opening a presigned URL shows an image, not a download of octets).
            kwargs = {"ContentType": media_type(key)} if "s3" in _protocols(self.fs) else {}
            self.fs.pipe_file(target, data, **kwargs)
            return
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        staging = f"{posixpath.dirname(target)}/.{posixpath.basename(target)}.{uuid.uuid4().hex}.tmp"
        try:
            self.fs.pipe_file(staging, data)
            self.fs.mv(staging, target)
        finally:
            if self.fs.exists(staging):
                self.fs.rm(staging)

    @contextmanager
    def open_atomic(self, key: str) -> Iterator[IO[bytes]]:
        """A file to stream into `key`; it appears whole when the block ends, and not at all
        when the block raises (a staged local file renamed into place; an object store's upload
        completed on close, or discarded)."""
        target = self.path(key)
        if not self.is_local:
            f = self.fs.open(target, "wb")
            try:
                yield f
            except BaseException:
                if hasattr(f, "discard"):
                    f.discard()  # aborts the multipart upload: nothing is written
                raise
            f.close()
            return
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        staging = f"{posixpath.dirname(target)}/.{posixpath.basename(target)}.{uuid.uuid4().hex}.tmp"
        try:
            with open(staging, "wb") as f:
                yield f
            os.replace(staging, target)
        finally:
            if os.path.exists(staging):
                os.remove(staging)

    def remove_staging(self, folder: str = "") -> int:
        """Remove the hidden staging files (`.NAME.<uuid>.tmp`) that writers killed mid-write left
        directly in `folder` ("" the root); returns how many. Lists that one folder. Call it only
        when no writer of that folder can be running: a live writer's staging file looks the same.
        Object stores stage nothing (an upload appears whole or not at all)."""
        if not self.is_local:
            return 0
        path = self.path(folder) if folder else self._root
        if not self.fs.isdir(path):
            return 0
        stale = [entry for entry in self.fs.ls(path, detail=False)
                 if posixpath.basename(entry).startswith(".") and entry.endswith(".tmp")]
        for entry in stale:
            self.fs.rm(entry)
        return len(stale)

    def read(self, key: str) -> bytes:
        return self.fs.cat_file(self.path(key))

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def delete_prefix(self, prefix: str) -> None:
        path = self.path(prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    # --- signed URLs --------------------------------------------------------------------------

    def url(self, key: str, expires_in_s: int, base_url: str | None = None) -> str:
        """An absolute URL for `key`, valid for `expires_in_s` seconds. Local files are served
        by the ingress at `public_url` (or `base_url`, the address the client reached us at)."""
        return self.url_until(key, int(time.time()) + expires_in_s, base_url)

    def url_until(self, key: str, expires_at: int, base_url: str | None = None) -> str:
        """An absolute URL for `key`, valid until `expires_at` (Unix seconds). The same key and
        expiry give the same URL through the ingress in every answer."""
        if not self.served_here:
            return self.fs.sign(self.path(key), expiration=max(1, int(expires_at - time.time())))
        expires = int(expires_at)
        query = urlencode({"expires": expires, "signature": self._signature(safe_key(key), expires)})
        base = (self.public_url or base_url or "").rstrip("/")
        return f"{base}/files/{safe_key(key)}?{query}"

    def redirect_url(self, key: str, expires: int) -> str:
        """The object store's own URL for `key`, presigned now for at most REDIRECT_S seconds and
        never past `expires`: what the ingress redirects one of its URLs to."""
        return self.fs.sign(self.path(key), expiration=max(1, min(REDIRECT_S, int(expires - time.time()))))

    def verify(self, key: str, expires: int, signature: str) -> bool:
        """True when `signature` was made by `url()` for `key` and has not expired."""
        return self.url_problem(key, expires, signature) is None

    def url_problem(self, key: str, expires: int, signature: str) -> str | None:
        """Why a local URL is refused ("invalid": not signed by `url()` for this key and expiry;
        "expired": signed so, but past its expiry), or None. Only the holder of a URL we signed
        can learn that it expired."""
        if not signature.isascii():  # compare_digest takes ASCII text only: anything else is no signature of ours
            return "invalid"
        try:
            expected = self._signature(safe_key(key), expires)
        except StorageError:
            return "invalid"
        if not hmac.compare_digest(expected, signature):
            return "invalid"
        return "expired" if expires < time.time() else None

    def _signature(self, key: str, expires: int) -> str:
        if not self.signing_key:
            raise StorageError("no signing key configured for local result URLs")
        return hmac.new(self.signing_key, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()


def media_type(key: str) -> str:
    """The media type of a result file by its name (images by their extension)."""
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
