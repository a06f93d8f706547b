"""`fetch`: a pipeline's weights copied from an fsspec source once for a whole cluster, into a
cache folder that many processes on many nodes share (`RAYDIANT_CACHE` on a ReadWriteMany
volume, or one machine's disk).

Guarantees, and their limits:

- **One download per version.** A version is the source's listing hashed: names, sizes, and each
  file's ETag or modification time where the filesystem gives one. The first process that wants
  a version takes its lease (a lock file created with O_EXCL: atomic on local filesystems and
  NFSv3 or later) and downloads; every other process waits for the version to appear, reporting
  the downloader's progress now and then.
- **A dead downloader loses its lease.** The owner renews it every `LEASE_S / 3` while it works;
  a lease not renewed for `LEASE_S` is taken over (the stale lock file renamed away, which one
  process alone can do) and the download resumes where it stopped. Files finished before are
  kept (their sizes checked), so a downloader killed mid-download costs at most the files it was
  on. An owner that finds its lease taken stops; each file is written under a name of its own
  writer and renamed into place, so two writers never mix one file.
- **A version is never renamed or deleted while a process may load it.** It is its own folder,
  `versions/<id>`, that appears whole (renamed from staging once every file is verified) and is
  never touched again. A source updated while another process loads the old version leaves
  that version in place: both load what they asked for. Old versions are not collected yet: a
  loaded pipeline may keep memory-mapping its files, and a version's last reader is not known
  across nodes.
- **Verified** by each file's size against the listing. Checksums are not compared (S3's ETag is
  an MD5 only for single-part uploads).
- Lease expiry compares wall clocks of different nodes: they must agree within seconds (NTP).

Files are fetched `_PARALLEL_FILES` at a time (a pipeline's components are separate files);
ranged reads within one file are the filesystem's own (s3fs reads in blocks).

Layout, per source (a hash of its URI) under the cache root:

    <source>/versions/<id>/   a complete copy, with `.complete` (the listing it was fetched for)
    <source>/staging/<id>/    the download in progress: whole files, and `*.partial-<owner>` ones
    <source>/<id>.lease       the downloader's lease: owner, expiry, bytes done of the total
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import shutil
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import fsspec

LEASE_S = float(os.environ.get("RAYDIANT_CACHE_LEASE_S", "60"))
_PARALLEL_FILES = 8
_POLL_S = 0.25
_REPORT_EVERY_S = 5.0
_COMPLETE = ".complete"

log = logging.getLogger(__name__)
Listing = dict[str, tuple[int, str]]  # relative path -> (size, ETag or mtime: "" when unknown)


class CacheError(Exception):
    """The source could not be listed or copied, or the cache not written; the message says which."""


class LeaseLost(Exception):
    """Another process took this download over (this one was too slow to renew its lease)."""


@dataclass(frozen=True)
class Fetched:
    path: Path  # the version's folder: complete, and never changed again
    fetched_bytes: int  # by this call: 0 when another process (or an earlier call) fetched it
    waited_s: float  # spent waiting for another process's download


def list_source(uri: str) -> Listing:
    """What `uri` holds now (a `CacheError` says why it cannot be listed): its files' sizes and tags."""
    fs, base = _open(uri)
    return _listing(fs, base, uri)


def fetch(uri: str, root: Path, on_wait: Callable[[str], None] = log.info) -> Fetched:
    """The folder of `uri`'s current version under `root`, fetched by this process or another."""
    fs, base = _open(uri)
    listing = _listing(fs, base, uri)
    version = hashlib.sha256(json.dumps(sorted(listing.items())).encode()).hexdigest()[:16]
    source = root / hashlib.sha256(uri.encode()).hexdigest()[:24]
    done, staging = source / "versions" / version, source / "staging" / version
    fetched, waited = 0, 0.0
    try:
        source.mkdir(parents=True, exist_ok=True)
        while not (done / _COMPLETE).exists():
            lease = Lease(source / f"{version}.lease")
            if lease.acquire():
                try:
                    fetched += _download(fs, base, listing, staging, lease)
                    _publish(staging, done, listing)
                except LeaseLost:
                    continue  # the new owner finishes it; wait for it as anyone would
                finally:
                    lease.release()
            else:
                waited += lease.wait(uri, on_wait)
    except OSError as exc:
        raise CacheError(f"cannot write the weights cache {root}: {exc}") from exc
    return Fetched(done, fetched, waited)


def _open(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        fs, base = fsspec.core.url_to_fs(uri)
    except Exception as exc:  # noqa: BLE001 - an unknown protocol, a missing driver
        raise CacheError(f"cannot open {uri}: {exc}") from exc
    return fs, base.rstrip("/")


def _listing(fs: fsspec.AbstractFileSystem, base: str, uri: str) -> Listing:
    try:
        found = fs.find(base, detail=True)
    except Exception as exc:  # noqa: BLE001 - any filesystem failure: credentials, a missing bucket
        raise CacheError(f"cannot list weights at {uri}: {exc}") from exc
    listing = {posixpath.relpath(path, base): (int(info.get("size") or 0), _tag(info)) for path, info in found.items()}
    if not listing:
        raise CacheError(f"no files at {uri}")
    return listing


def _tag(info: dict[str, Any]) -> str:
    """What changes when a file's content does, beside its size."""
    for key in ("ETag", "etag", "md5Hash", "mtime", "LastModified", "last_modified", "updated"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def _download(fs: fsspec.AbstractFileSystem, base: str, listing: Listing, staging: Path, lease: "Lease") -> int:
    """Fetch into `staging` every file not there whole already; returns the bytes fetched."""
    staging.mkdir(parents=True, exist_ok=True)
    todo = [rel for rel, (size, _) in listing.items() if not _whole(staging / rel, size)]
    total = sum(size for size, _ in listing.values())
    progress = [total - sum(listing[rel][0] for rel in todo)]
    lease.report(progress[0], total)

    def get(rel: str) -> int:
        lease.check()
        size = listing[rel][0]
        dest = staging / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f"{dest.name}.partial-{lease.owner}")
        try:
            fs.get_file(f"{base}/{rel}", str(partial))
        except Exception as exc:  # noqa: BLE001 - the source's failure, named
            raise CacheError(f"cannot copy {rel} from {base}: {exc}") from exc
        if (got := partial.stat().st_size) != size:
            partial.unlink()
            raise CacheError(f"{rel} from {base}: {got} bytes, where the listing said {size}")
        os.replace(partial, dest)
        progress[0] += size
        lease.report(progress[0], total)
        return size

    with ThreadPoolExecutor(_PARALLEL_FILES, thread_name_prefix="fetch") as pool:
        return sum(pool.map(get, todo))


def _whole(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _publish(staging: Path, done: Path, listing: Listing) -> None:
    """Make the staged copy the version: leftovers of dead writers out, the listing in, then one
    rename, so the version's folder is never seen partial."""
    for path in [p for p in staging.rglob("*") if p.is_file()]:
        if path.relative_to(staging).as_posix() not in listing:
            path.unlink()
    (staging / _COMPLETE).write_text(json.dumps(sorted(listing.items())))
    done.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, done)
    except OSError:
        if not (done / _COMPLETE).exists():  # not another owner's finished copy: a real failure
            raise
        shutil.rmtree(staging, ignore_errors=True)


class Lease:
    """The right to download one version: a lock file holding its owner and expiry, renewed by a
    thread while the owner works."""

    def __init__(self, path: Path):
        self.path = path
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.done = self.total = 0
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w") as lock:
            lock.write(json.dumps(self._state()))
        self._renewer = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._renewer.start()
        return True

    def report(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(self.path.name)

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if not self.lost and self._holder() == self.owner:
            self.path.unlink(missing_ok=True)

    def wait(self, uri: str, on_wait: Callable[[str], None]) -> float:
        """Wait while another process holds the lease; take it over once it expires. Returns the
        seconds waited (the caller then looks for the version, or takes the lease)."""
        started = reported = time.monotonic()
        while (state := _read(self.path)) is not None:
            if state["expires"] < time.time():
                self._break(state)
                break
            if time.monotonic() - reported >= _REPORT_EVERY_S:
                on_wait(f"waiting for {state['owner']} to fetch {uri}: "
                        f"{state['done'] / 2**20:.0f} of {state['total'] / 2**20:.0f} MiB")
                reported = time.monotonic()
            time.sleep(_POLL_S)
        return time.monotonic() - started

    def _break(self, state: dict) -> None:
        """Remove an expired lease: renamed away first, so of several waiters one alone does it."""
        stale = self.path.with_name(f"{self.path.name}.stale-{self.owner}")
        try:
            os.rename(self.path, stale)
        except FileNotFoundError:
            return  # another waiter broke it first
        stale.unlink(missing_ok=True)
        log.warning("took over the fetch of %s from %s, whose lease expired", self.path.stem, state["owner"])

    def _state(self) -> dict:
        return {"owner": self.owner, "expires": time.time() + LEASE_S, "done": self.done, "total": self.total}

    def _holder(self) -> str | None:
        state = _read(self.path)
        return state["owner"] if state else None

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_S / 3):
            if self._holder() != self.owner:  # broken by a waiter: this download stops
                self.lost = True
                return
            fresh = self.path.with_name(f"{self.path.name}.{self.owner}")
            fresh.write_text(json.dumps(self._state()))
            os.replace(fresh, self.path)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # caught mid-write by its creator, or left empty by one that died then
        try:
            expires = path.stat().st_mtime + LEASE_S
        except FileNotFoundError:
            return None
        return {"owner": "?", "expires": expires, "done": 0, "total": 0}
