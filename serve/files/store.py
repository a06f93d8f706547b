"""A key's batch input files (OpenAI's Files API, `purpose=batch`), kept in the configured storage.

Guarantees, and their limits:

- **Per key.** A file belongs to the key that uploaded it; another key's id is not found (404),
  as an unknown id is.
- **Streamed, bounded.** An upload goes from the request to storage in chunks: the ingress never
  holds the file (the multipart parser spools a part past 1 MiB to a temporary file). Its bytes
  are counted as they arrive, past `max_bytes` it is refused (413), and its lines as they are
  copied: more than `max_lines`, a line longer than `max_line_bytes`, or bytes that are not UTF-8
  text are refused (400). A refused upload keeps nothing.
- **Whole or absent.** The content is written first, then the record (a small JSON object beside
  it); a file exists once its record does. Deleting removes the record first.
- **Index lookups only.** A file id holds its upload time (`file-<ms, hex><random>`), so a list is
  one listing of the caller's own folder, sorted by name, and reads only the records of the page
  it answers. The folder is bounded: a key keeps at most `max_per_key` files (429 beyond).
- **A fair share of the ingress.** A key has at most `max_uploads_per_key` uploads in flight
  on an ingress replica (429 beyond): one key cannot fill the replica's spool disk and event
  loop for all.
- **Expiring.** A file expires `retention_days` after its upload (OpenAI's `expires_at`): from
  then on it is not found, and it is deleted when next asked for. What nobody asks for again is
  for the store's lifecycle rule to remove (S3: an expiration rule on the `files/` prefix).
"""

from __future__ import annotations

import codecs
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Literal

from pydantic import BaseModel

from cluster.storage.results import Storage
from serve.edge.errors import ErrorKind, ServiceError

PURPOSES = ("batch",)
COPY_CHUNK = 1 << 20
_ID_PREFIX = "file-"


class FileObject(BaseModel):
    """OpenAI's file object."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    status_details: str | None = None


@dataclass(frozen=True)
class FileLimits:
    max_bytes: int
    max_lines: int
    max_line_bytes: int
    max_per_key: int
    retention_s: int
    max_uploads_per_key: int = 2


class UploadTooLarge(Exception):
    """The upload passed `max_bytes` while it arrived."""


class BatchFiles:
    """A key's files under `files/<key id>/` of `storage`: `<id>.jsonl` and its record `<id>.json`."""

    def __init__(self, storage: Storage, limits: FileLimits):
        self.storage = storage
        self.limits = limits
        self._uploading: dict[str, int] = {}  # key id -> its uploads in flight here (only keys with some)

    @property
    def upload_limit(self) -> int:
        """The most bytes an upload request may carry: the file, and room for the multipart
        framing and the form's other fields."""
        return self.limits.max_bytes + 64 * 1024

    @contextmanager
    def uploading(self, key_id: str) -> Iterator[ServiceError | None]:
        """Holds one of `key_id`'s upload places on this ingress for the block; yields the 429 to
        answer instead when it has none left. Entered and left on the event loop."""
        if self._uploading.get(key_id, 0) >= self.limits.max_uploads_per_key:
            yield ServiceError(ErrorKind.RATE_LIMITED, f"this key already has {self.limits.max_uploads_per_key} "
                                                       f"uploads in flight; send the next when one ends",
                               "file", retry_after_s=5)
            return
        self._uploading[key_id] = self._uploading.get(key_id, 0) + 1
        try:
            yield None
        finally:
            self._uploading[key_id] -= 1
            if not self._uploading[key_id]:
                del self._uploading[key_id]

    # --- keys ---------------------------------------------------------------------------------

    @staticmethod
    def _folder(key_id: str) -> str:
        return f"files/{key_id}"

    def _content_key(self, key_id: str, file_id: str) -> str:
        return f"{self._folder(key_id)}/{file_id}.jsonl"

    def _record_key(self, key_id: str, file_id: str) -> str:
        return f"{self._folder(key_id)}/{file_id}.json"

    @staticmethod
    def _new_id(now: float) -> str:
        return f"{_ID_PREFIX}{int(now * 1000):012x}{secrets.token_hex(6)}"

    @staticmethod
    def _created_at(file_id: str) -> float | None:
        """The upload time an id holds; None when `file_id` is not one of ours."""
        body = file_id.removeprefix(_ID_PREFIX)
        if not file_id.startswith(_ID_PREFIX) or len(body) != 24 or any(c not in "0123456789abcdef" for c in body):
            return None
        return int(body[:12], 16) / 1000

    def _expired(self, file_id: str, now: float) -> bool:
        return (self._created_at(file_id) or 0) + self.limits.retention_s <= now

    # --- upload -------------------------------------------------------------------------------

    def counted(self, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`stream`, raising `UploadTooLarge` once it passes `upload_limit`."""
        limit = self.upload_limit

        async def chunks() -> AsyncIterator[bytes]:
            seen = 0
            async for chunk in stream:
                seen += len(chunk)
                if seen > limit:
                    raise UploadTooLarge
                yield chunk

        return chunks()

    def kept(self, key_id: str) -> list[str]:
        """The ids of `key_id`'s files, oldest first (one listing of its folder)."""
        folder = self.storage.path(self._folder(key_id))
        if not self.storage.fs.exists(folder):
            return []
        names = (entry.rsplit("/", 1)[-1] for entry in self.storage.fs.ls(folder, detail=False))
        return sorted(name[: -len(".json")] for name in names if name.endswith(".json") and name.startswith(_ID_PREFIX))

    def create(self, key_id: str, upload: IO[bytes], filename: str, purpose: str) -> FileObject | ServiceError:
        """Copy `upload` (a file the multipart parser spooled) into storage, checking it as it goes.
        Blocking: the caller runs it in a thread."""
        if purpose not in PURPOSES:
            return ServiceError.invalid(f"purpose must be {' or '.join(PURPOSES)}, got {purpose!r}", "purpose")
        now = time.time()
        live = [f for f in self.kept(key_id) if not self._expired(f, now)]
        if len(live) >= self.limits.max_per_key:
            return ServiceError(ErrorKind.RATE_LIMITED, f"this key keeps {len(live)} files, the most it may "
                                                        f"({self.limits.max_per_key}); delete some first",
                                "file", retry_after_s=60)
        file_id = self._new_id(now)
        try:
            with self.storage.open_atomic(self._content_key(key_id, file_id)) as target:
                size = self._copy_checked(upload, target)
        except _Refused as refused:
            return refused.error
        record = FileObject(id=file_id, bytes=size, created_at=int(now), filename=filename[:255], purpose=purpose,
                            expires_at=int(now + self.limits.retention_s))
        self.storage.write(self._record_key(key_id, file_id), record.model_dump_json().encode())
        return record

    def _copy_checked(self, source: IO[bytes], target: IO[bytes]) -> int:
        """Copy in chunks, counting bytes and lines and decoding UTF-8 on the way; raises
        `_Refused` at the first problem (the caller's atomic write then keeps nothing)."""
        limits, decoder = self.limits, codecs.getincrementaldecoder("utf-8")()
        size = lines = line_bytes = 0  # line_bytes: of the line not yet ended
        for chunk in iter(lambda: source.read(COPY_CHUNK), b""):
            size += len(chunk)
            if size > limits.max_bytes:
                raise _Refused(ServiceError(ErrorKind.BODY_TOO_LARGE, f"file is larger than {limits.max_bytes} bytes",
                                            "file"))
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                raise _Refused(ServiceError.invalid(f"file is not UTF-8 text (line {lines + 1})", "file")) from None
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                if line_bytes + end - start > limits.max_line_bytes:
                    raise _Refused(self._long_line(lines + 1))
                lines, line_bytes, start = lines + 1, 0, end + 1
            line_bytes += len(chunk) - start
            if line_bytes > limits.max_line_bytes:
                raise _Refused(self._long_line(lines + 1))
            if lines + (line_bytes > 0) > limits.max_lines:
                raise _Refused(ServiceError.invalid(f"file has more than {limits.max_lines} lines", "file"))
            target.write(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise _Refused(ServiceError.invalid("file is not UTF-8 text (it ends inside a character)", "file")) from None
        if size == 0:
            raise _Refused(ServiceError.invalid("file is empty", "file"))
        return size

    def _long_line(self, line: int) -> ServiceError:
        return ServiceError.invalid(f"file line {line} is longer than {self.limits.max_line_bytes} bytes", "file")

    # --- read, list, delete -------------------------------------------------------------------

    def get(self, key_id: str, file_id: str) -> FileObject | ServiceError:
        """The file's record; an unknown, another key's or an expired file is not found (an
        expired one is deleted on the way)."""
        if self._created_at(file_id) is None:
            return _not_found(file_id)
        if self._expired(file_id, time.time()):
            self._remove(key_id, file_id)
            return _not_found(file_id)
        try:
            return FileObject.model_validate_json(self.storage.read(self._record_key(key_id, file_id)))
        except FileNotFoundError:
            return _not_found(file_id)

    def content(self, key_id: str, file_id: str) -> Iterator[bytes] | ServiceError:
        """The file's bytes, in chunks (never held whole)."""
        found = self.get(key_id, file_id)
        if isinstance(found, ServiceError):
            return found

        def chunks() -> Iterator[bytes]:
            with self.storage.fs.open(self.storage.path(self._content_key(key_id, file_id)), "rb") as f:
                yield from iter(lambda: f.read(COPY_CHUNK), b"")

        return chunks()

    def page(self, key_id: str, limit: int, after: str | None, newest_first: bool) -> tuple[list[FileObject], bool]:
        """One page of the key's live files and whether more follow: the records of this page
        only are read."""
        now = time.time()
        ids = [f for f in self.kept(key_id) if not self._expired(f, now)]
        if newest_first:
            ids.reverse()
        if after is not None:
            ids = [f for f in ids if (f < after if newest_first else f > after)]
        chosen, more = ids[:limit], len(ids) > limit
        records = [self.get(key_id, f) for f in chosen]
        return [r for r in records if isinstance(r, FileObject)], more

    def delete(self, key_id: str, file_id: str) -> dict | ServiceError:
        found = self.get(key_id, file_id)
        if isinstance(found, ServiceError):
            return found
        self._remove(key_id, file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    def _remove(self, key_id: str, file_id: str) -> None:
        for key in (self._record_key(key_id, file_id), self._content_key(key_id, file_id)):  # the record first
            path = self.storage.path(key)
            if self.storage.fs.exists(path):
                self.storage.fs.rm(path)


class _Refused(Exception):
    def __init__(self, error: ServiceError):
        self.error = error


def _not_found(file_id: str) -> ServiceError:
    return ServiceError(ErrorKind.NOT_FOUND, f"No such File object: {file_id[:64]}", "file_id")

