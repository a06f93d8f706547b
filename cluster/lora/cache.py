"""LoRA adapter files on a node: fetched once, checked, kept on disk in an LRU cache by bytes.

`LoraCache.get(lora)` returns a local safetensors file and its sha256, fetching it when needed:
http(s) URLs through the guarded fetch of cluster/storage/guarded_fetch.py (address rules, byte and time caps),
fsspec URIs with fsspec, hub files with huggingface_hub (in its own cache under this one), local
files in place. Fetched files are written atomically under names fixed by their location, so
every process that shares the folder shares them: one machine's, or the cluster's on the
ReadWriteMany volume (`RAYDIANT_CACHE`). The least recently used go first once the cache holds
more than `max_bytes`, but never one used in the last `evict_grace_s`: over NFS a file deleted
while another node reads it fails that read (ESTALE), and every use touches its file before it
reads it. So the cache may stay over its bytes for that long after a burst of new adapters.
One download per file for everyone sharing the folder: an flock per file (NFSv4 and EFS carry
flock across nodes as POSIX locks; a lock of a dead node is freed when its lease lapses).

Every file is checked to be a safetensors file (its header parsed, at least one tensor) before
anyone loads it: a pickle, or anything else, is refused with the request's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from cluster.spec.errors import ErrorCode, RenderError, first_line
from cluster.spec.loras import Lora
from cluster.storage.guarded_fetch import FetchError, FetchPolicy, request

KNOWN_LIMIT = 256  # adapters remembered in memory per process (path, hash), so a hit touches no disk


class LoraUnavailable(Exception):
    """An adapter could not be had; `error` says why, in the core's vocabulary."""

    def __init__(self, error: RenderError):
        super().__init__(error.text())
        self.error = error


@dataclass(frozen=True)
class LocalLora:
    lora: Lora
    file: Path
    sha256: str
    size: int


def cache_for(config) -> "LoraCache":
    """The node's cache as a `RaydiantConfig` describes it (its `loras` section and the
    service's address rules, `serve.fetch`)."""
    fetch = config.serve.fetch
    return LoraCache(config.loras.cache_dir, config.loras.cache_bytes, config.loras.max_file_bytes,
                     FetchPolicy(fetch.allow_loopback, fetch.allow_private, fetch.max_redirects, fetch.timeout_s))


def default_cache_dir() -> Path:
    return Path(os.environ.get("RAYDIANT_CACHE", Path.home() / ".cache" / "raydiant")) / "loras"


class LoraCache:
    def __init__(self, directory: str | Path | None = None, max_bytes: int = 20 * 2**30,
                 max_file_bytes: int = 2 * 2**30, fetch_policy: FetchPolicy = FetchPolicy(),
                 evict_grace_s: float = 120.0):
        self.directory = Path(directory) if directory else default_cache_dir()
        self.files = self.directory / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_file_bytes = max_bytes, max_file_bytes
        self.evict_grace_s = evict_grace_s
        self.policy = fetch_policy
        self._known: OrderedDict[str, LocalLora] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, lora: Lora) -> LocalLora:
        """The adapter's local file, fetched and checked; raises `LoraUnavailable`."""
        with self._lock:
            known = self._known.get(lora.location)
            if known is not None and known.file.exists():
                self._known.move_to_end(lora.location)
                _touch(known.file)
                return LocalLora(lora, known.file, known.sha256, known.size)
        local = self._fetch(lora)
        with self._lock:
            self._known[lora.location] = local
            while len(self._known) > KNOWN_LIMIT:
                self._known.popitem(last=False)
        return local

    # --- fetching -----------------------------------------------------------------------------

    def _fetch(self, lora: Lora) -> LocalLora:
        if lora.kind == "local":
            return self._checked(lora, Path(lora.location))
        target = self.files / (hashlib.sha256(lora.location.encode()).hexdigest()[:32] + ".safetensors")
        if not target.exists():
            # One download per file on this node, however many requests (threads, replicas,
            # workers) want it at once: the others wait for the lock, then find the file.
            with _file_lock(target):
                if not target.exists():
                    self._download(lora, target)
                    self._evict(keep=target)
        _touch(target)
        return self._checked(lora, target)

    def _download(self, lora: Lora, target: Path) -> None:
        """The adapter's bytes into `target`, streamed to disk under the size cap (never held
        whole in memory), written under a staging name and renamed: no reader sees a part."""
        with _staging(target) as (staging, sink):
            if lora.kind == "https":
                self._from_url(lora, sink)
            elif lora.kind == "hub":
                self._from_hub(lora, staging)
            else:
                self._from_storage(lora, sink)

    def _from_url(self, lora: Lora, sink) -> None:
        # One answer for every way a URL fails (refused address, no answer, an HTTP error, over
        # the cap): which one it was would tell a caller what listens where behind us. The URL
        # is the caller's: theirs to fix, not a failure of ours to retry.
        try:
            answer = asyncio.run(request("GET", lora.location, self.policy, max_bytes=self.max_file_bytes, sink=sink))
        except FetchError:
            answer = None
        if answer is None or answer.status != 200:
            raise LoraUnavailable(RenderError.invalid(
                "loras", f"{lora.path}: could not be fetched (a public http(s) URL answering 200 with a "
                         f"safetensors file of at most {self.max_file_bytes} bytes)"))

    def _from_storage(self, lora: Lora, sink) -> None:
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(lora.location)
            size = fs.info(path).get("size") or 0
            if size > self.max_file_bytes:
                raise LoraUnavailable(RenderError.invalid("loras", f"{lora.path}: the file is larger than "
                                                                   f"{self.max_file_bytes} bytes"))
            with fs.open(path, "rb") as source:
                copied = 0
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    copied += len(chunk)
                    if copied > self.max_file_bytes:  # it grew since `info`
                        raise LoraUnavailable(RenderError.invalid(
                            "loras", f"{lora.path}: the file is larger than {self.max_file_bytes} bytes"))
                    sink.write(chunk)
        except LoraUnavailable:
            raise
        except FileNotFoundError:
            raise LoraUnavailable(RenderError.invalid("loras", f"{lora.path}: no such file")) from None
        except Exception as exc:  # noqa: BLE001 - storage unreachable: a later try may succeed
            raise LoraUnavailable(RenderError(ErrorCode.MODEL_LOAD_FAILED,
                                              f"LoRA {lora.path} could not be read: {first_line(exc)}")) from None

    def _from_hub(self, lora: Lora, staging: Path) -> None:
        """A hub file, fetched into this cache (its LRU and its byte cap), not the hub's own cache."""
        org, name, *rest = lora.location.split("/")
        repo, filename = f"{org}/{name}", "/".join(rest)
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
        from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError

        # A caller's adapter is fetched anonymously: the operator's token must not make its
        # private or gated repositories readable (nor tell a caller they exist). Only adapters
        # the operator configured (`loras.named`) are fetched with it.
        token = None if lora.trusted else False
        try:
            size = get_hf_file_metadata(hf_hub_url(repo, filename), token=token, timeout=self.policy.timeout_s).size
            if size is not None and size > self.max_file_bytes:
                raise LoraUnavailable(RenderError.invalid("loras", f"{lora.path}: the file is larger than "
                                                                   f"{self.max_file_bytes} bytes"))
            with tempfile.TemporaryDirectory(dir=self.files, prefix=".hub-") as folder:
                downloaded = hf_hub_download(repo, filename, local_dir=folder, token=token,
                                             etag_timeout=self.policy.timeout_s)
                os.replace(downloaded, staging)
        except LoraUnavailable:
            raise
        except (RepositoryNotFoundError, EntryNotFoundError, GatedRepoError):  # the caller's to fix
            raise LoraUnavailable(RenderError.invalid("loras", f"{lora.path}: no such public file on the hub")) from None
        except Exception as exc:  # noqa: BLE001 - an unreachable hub: a later try may succeed
            raise LoraUnavailable(RenderError(ErrorCode.MODEL_LOAD_FAILED,
                                              f"LoRA {lora.path} could not be downloaded from the hub: "
                                              f"{first_line(exc)}")) from None

    def _checked(self, lora: Lora, file: Path) -> LocalLora:
        """The file, if it is a safetensors file of tensors within the size cap."""
        try:
            size = file.stat().st_size
        except OSError:
            raise LoraUnavailable(RenderError.invalid("loras", f"{lora.path}: no such file")) from None
        if size > self.max_file_bytes:
            raise LoraUnavailable(RenderError.invalid("loras", f"{lora.path}: the file is larger than "
                                                               f"{self.max_file_bytes} bytes"))
        if not is_safetensors(file):
            raise LoraUnavailable(RenderError.invalid("loras", f"{lora.path}: not a safetensors file (only "
                                                               f"safetensors adapters are loaded, never pickles)"))
        return LocalLora(lora, file, _sha256(file), size)

    # --- the disk's LRU -----------------------------------------------------------------------

    def _evict(self, keep: Path) -> None:
        """Remove the least recently used files until the cache fits `max_bytes`: never `keep`,
        nor a file used in the last `evict_grace_s` (another process may be reading it)."""
        with open(self.directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one evictor at a time, for all who share the folder
            recent = time.time() - self.evict_grace_s
            entries = []
            for path in self.files.glob("*.safetensors"):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                entries.append((stat.st_mtime, stat.st_size, path))
            total = sum(size for _, size, _ in entries)
            for used, size, path in sorted(entries):
                if total <= self.max_bytes or used > recent:
                    break
                if path != keep:
                    path.unlink(missing_ok=True)
                    Path(f"{path}.sha256").unlink(missing_ok=True)
                    Path(f"{path}.lock").unlink(missing_ok=True)
                    total -= size

    def cached_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files.glob("*.safetensors"))


def is_safetensors(file: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as opened:
            return len(list(opened.keys())) > 0
    except Exception:  # noqa: BLE001 - any parse failure: not a safetensors file
        return False


def _sha256(file: Path) -> str:
    sidecar = Path(f"{file}.sha256")
    stat = file.stat()
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    if sidecar.exists():
        stored_stamp, _, digest = sidecar.read_text().partition(" ")
        if stored_stamp == stamp:
            return digest
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    try:
        _write_atomically(sidecar, f"{stamp} {digest.hexdigest()}".encode())
    except OSError:
        pass  # a read-only folder (local adapters): computed again next time
    return digest.hexdigest()


@contextlib.contextmanager
def _file_lock(target: Path):
    """An exclusive lock for fetching `target`, across the node's processes and threads."""
    with open(f"{target}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _staging(target: Path):
    """(staging path, its open file): renamed to `target` if the block completes, else removed."""
    fd, staging = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as sink:
            yield Path(staging), sink
        os.replace(staging, target)
    finally:
        Path(staging).unlink(missing_ok=True)


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def _touch(file: Path) -> None:
    try:
        os.utime(file)
    except OSError:
        pass  # read-only (a local adapter): recency only matters for fetched files
