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
  `versions/<id>`, that appears whole (renamed from staging once every file is verified). Every
  process that takes a version holds a reader lease on it for the rest of its life
  (`version_readers.py`). A source updated while another process loads the old version leaves
  that version in place: both load what they asked for. The process that fetches a new version
  then collects the old ones whose reader leases have all lapsed (their processes are gone).
- **Verified**: each file's size against the listing and, where the listing gives one, its MD5
  (S3's ETag of a single-part upload, GCS's md5Hash), hashed as the bytes arrive. S3's ETag of a
  multipart upload is not a file's MD5, and a local folder lists none: those are checked by size.
  A source changed between its listing and the download fails the fetch, naming the file.
- Lease expiry compares wall clocks of different nodes: they must agree within seconds (NTP).

Reads are concurrent ranged GETs: every file is cut into `_CHUNK` ranges (8 MiB;
`RAYDIANT_CACHE_RANGE_MIB`, 0 for one GET a file), and `_PARALLEL_READS` of them are in flight at
once, in file order, so one large file (a 10 GB transformer shard) is read over many
connections and files finish one after another (a killed download loses little).

Layout, per source (a hash of its URI) under the cache root:

    <source>/versions/<id>/   a complete copy, with `.complete` (the listing it was fetched for)
    <source>/staging/<id>/    the download in progress: whole files, and `*.partial-<owner>` ones
    <source>/<id>.lease       the downloader's lease: owner, expiry, bytes done of the total
    <source>/readers/<id>/    one reader lease per process that took the version
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import fsspec

from cluster.weights import version_readers
from cluster.weights.version_readers import LEASE_S

# S3's advice for ranged GETs: 8-16 MB. 0: one GET a file, for a store that answers a range by
# reading the whole object first (moto does: a ranged read of a large file there is quadratic).
_CHUNK = int(float(os.environ.get("RAYDIANT_CACHE_RANGE_MIB", "8")) * 2**20) or 2**62
_PARALLEL_READS = 16  # ranges in flight: at most this many chunks held in memory (128 MiB)
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
        # A reader before it looks: a collector that moved the version away sees it and puts it back.
        version_readers.hold(source / "readers" / version)
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
        if fetched:  # a new version: the ones before it may have no reader left
            collect_old_versions(source, keep=version)
    except OSError as exc:
        raise CacheError(f"cannot write the weights cache {root}: {exc}") from exc
    return Fetched(done, fetched, waited)


def collect_old_versions(source: Path, keep: str) -> list[str]:
    """Delete the versions of `source` other than `keep` that no live process reads; returns
    their ids. Each is first renamed out of `versions/` (one collector alone can), then its
    readers are looked at again: a process that took it in between finds it back in place."""
    collected = []
    for folder in sorted((source / "versions").iterdir()):
        version = folder.name
        readers = source / "readers" / version
        if version == keep or version_readers.has_live_reader(readers):
            continue
        trash = source / "trash" / f"{version}-{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(exist_ok=True)
        try:
            os.rename(folder, trash)
        except FileNotFoundError:
            continue  # another collector took it
        if version_readers.has_live_reader(readers):
            os.rename(trash, folder)
            continue
        shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(readers, ignore_errors=True)
        collected.append(version)
        log.info("collected the weights version %s of %s: no process reads it", version, source.name)
    return collected


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
    for key in ("md5Hash", "ETag", "etag", "mtime", "LastModified", "last_modified", "updated"):
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
    copies = [_Copy(fs, base, rel, *listing[rel], staging, lease.owner) for rel in todo]
    lock = threading.Lock()

    def read(copy: "_Copy", index: int) -> None:
        copy.put(index, lease.check)
        with lock:
            progress[0] += copy.chunk_size(index)
            lease.report(progress[0], total)

    pool, reads = ThreadPoolExecutor(_PARALLEL_READS, thread_name_prefix="fetch"), []
    try:
        for copy in copies:
            if copy.chunks == 0:  # an empty file: nothing to read
                copy.finish()
        reads = [pool.submit(read, copy, i) for copy in copies for i in range(copy.chunks)]
        for done in as_completed(reads):
            done.result()
    except BaseException:
        for pending in reads:
            pending.cancel()
        raise
    finally:
        pool.shutdown(wait=True)  # no read still writes when the files close
        for copy in copies:
            copy.close()
    return sum(copy.size for copy in copies)


class _Copy:
    """One file fetched as ranges written in place into `<name>.partial-<owner>`, and renamed to
    its name, verified, by the thread that writes its last range: a file is whole the moment it
    is, so a downloader killed later keeps it. When the listing gives an MD5, each range is
    hashed in its turn by the thread that read it, so no more than the ranges in flight are ever
    held in memory."""

    def __init__(self, fs, base: str, rel: str, size: int, tag: str, staging: Path, owner: str):
        self.fs, self.source, self.rel, self.size = fs, f"{base}/{rel}", rel, size
        self.dest = staging / rel
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.dest.with_name(f"{self.dest.name}.partial-{owner}")
        self.chunks = -(-size // _CHUNK)
        self.expected_md5 = _md5_of(tag)
        self._md5 = hashlib.md5(usedforsecurity=False) if self.expected_md5 else None
        self._hashed = 0  # ranges hashed: the index of the next one
        self._left = self.chunks  # ranges not yet written
        self._failed = False  # a range failed: the ones waiting for their turn give up
        self._turn = threading.Condition()
        self._fd = os.open(self.partial, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)

    def chunk_size(self, index: int) -> int:
        return min(_CHUNK, self.size - index * _CHUNK)

    def put(self, index: int, check: Callable[[], None]) -> None:
        """Read range `index` from the source, write it in place and hash it in its turn."""
        try:
            check()
            start = index * _CHUNK
            try:
                data = self.fs.cat_file(self.source, start=start, end=start + self.chunk_size(index))
            except Exception as exc:  # noqa: BLE001 - the source's failure, named
                raise CacheError(f"cannot copy {self.rel} from {self.source}: {exc}") from exc
            if len(data) != self.chunk_size(index):
                raise CacheError(f"{self.rel} from {self.source}: shorter than the listing's {self.size} bytes")
            os.pwrite(self._fd, data, start)
            if self._md5 is not None:
                self._hash_in_turn(index, data)
            with self._turn:
                self._left -= 1
                last = self._left == 0
            if last:
                self.finish()
        except BaseException:
            with self._turn:
                self._failed = True
                self._turn.notify_all()
            raise

    def _hash_in_turn(self, index: int, data: bytes) -> None:
        # Ranges are submitted in order and taken first in, first out: every earlier range of
        # this file is read or being read by another thread, so this wait always ends.
        with self._turn:
            while self._hashed != index and not self._failed:
                self._turn.wait()
            if self._failed:
                raise CacheError(f"{self.rel}: an earlier range failed")
            self._md5.update(data)
            self._hashed += 1
            self._turn.notify_all()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def finish(self) -> None:
        """Verify the whole file (size; MD5 where known) and give it its name."""
        self.close()
        if (got := self.partial.stat().st_size) != self.size:
            self.partial.unlink()
            raise CacheError(f"{self.rel} from {self.source}: {got} bytes, where the listing said {self.size}")
        if self._md5 is not None and self._md5.hexdigest() != self.expected_md5:
            self.partial.unlink()
            raise CacheError(f"{self.rel} from {self.source}: its MD5 is not the listing's "
                             "(the source changed while it was fetched, or the copy is corrupt)")
        os.replace(self.partial, self.dest)


def _md5_of(tag: str) -> str | None:
    """The file's MD5 (hex) when its listing's tag is one: S3's ETag of a single-part upload
    (32 hex digits; a multipart ETag ends in "-<parts>") or GCS's md5Hash (16 bytes, base64)."""
    text = tag.strip('"')
    if re.fullmatch(r"[0-9a-fA-F]{32}", text):
        return text.lower()
    if len(text) == 24 and text.endswith("=="):
        try:
            return base64.b64decode(text, validate=True).hex()
        except binascii.Error:
            return None
    return None


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
