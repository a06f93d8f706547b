"""`TaskService`: the task layer every API door uses.

A door parses its wire format into a `Submission` (serve/doors/base.py), then calls submit / wait /
get / cancel / list here, and renders what comes back (records, or `Failure` values: a
`RenderError` for the render, a `ServiceError` for the edge) in its own shapes.
What this layer guarantees, whichever door is used:

- Ownership: a task is seen, listed and canceled only with the key that created it; another
  key's task id reads as unknown (NOT_FOUND), so ids cannot be probed.
- Validation happens once, against the model's limits (`ModelSpec.resolve`), and the record
  keeps the resolved request whole (`ResolvedRequest`, with its seed chosen).
- Input images are stored beside the results (the record stays small), written only once the
  record exists (so no file is ever without a record: purges remove a record's files before the
  record), and removed again when the submission fails for any reason; they are fetched under the address rules of
  `cluster/storage/guarded_fetch.py`; one of our own signed result URLs is read straight from
  storage, never over HTTP.
- A callback URL, and the URL of a LoRA adapter, is checked at submission (a clear 400 now
  beats a silent failure later) and again when it is fetched (DNS answers change).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Literal, Mapping
from urllib.parse import parse_qs, urlsplit

from cluster.images import masks
from cluster.images.masks import Convention
from cluster.spec.catalogue import ModelSpec
from cluster.spec.config import ServeConfig
from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.request import RenderRequest
from cluster.storage.guarded_fetch import (
    FetchError, FetchPolicy, Resolver, check_image, checked_address, fetch_image, system_resolver,
)
from cluster.storage.results import Storage, StorageError
from serve.edge.errors import ErrorKind, Failure, ServiceError
from serve import metrics
from serve.tasks.dispatch.dispatcher import Dispatcher, QueueFull, preview_key
from serve.tasks.dispatch.fair_queue import cost_of
from serve.tasks.store.base import StoreFull
from serve.tasks.store.record import TaskRecord, TaskStatus, WebhookDelivery
from serve.tasks.webhooks.secrets import TenantSecrets

STORE_FULL_RETRY_S = 30  # a full store frees room as finished tasks expire: minutes, not seconds
CLIENT_TEXT_LIMIT = 1024  # longer strings in a stored client body (data: URIs) are elided
CLIENT_BODY_BUDGET = 8192  # bytes of a stored client body in all, as JSON (keys, numbers and brackets count)
CLIENT_BODY_DEPTH = 4
CLIENT_KEY_LIMIT = 64


@dataclass(frozen=True)
class Once:
    """What makes a create call a repeat of an earlier one (`TaskService.submit_once`)."""

    fingerprint: str  # the client's Idempotency-Key, else the body, hashed
    explicit: bool  # the client sent an Idempotency-Key
    body_digest: str = ""  # the body, hashed: an explicit key reused with another body is refused


@dataclass(frozen=True)
class Submission:
    """One create call, in the task layer's terms."""

    api: str  # the door's name: its body shape is used for this task's webhook
    key_id: str
    spec: ModelSpec  # the served model, looked up once by the door (`model_for`)
    request: RenderRequest  # `model` is `spec.name`
    base_url: str  # the address the client reached us at
    callback_url: str | None = None
    client_body: Any = None
    sizes: Literal["api", "render"] = "api"  # which size rule of the model applies
    # The core's parameter names as this door's clients spell them (`n` -> `count`), so that a
    # refused request names the field that was sent.
    param_names: Mapping[str, str] = field(default_factory=dict)


class TaskService:
    def __init__(self, specs: dict[str, ModelSpec], dispatcher: Dispatcher, storage: Storage, settings: ServeConfig,
                 resolver: Resolver = system_resolver):
        self.specs = specs
        self.dispatcher = dispatcher
        self.store = dispatcher.store
        self.storage = storage
        self.settings = settings
        self.policy = FetchPolicy(settings.fetch.allow_loopback, settings.fetch.allow_private,
                                  settings.fetch.max_redirects, settings.fetch.timeout_s)
        self.resolver = resolver
        self.webhook_secrets: TenantSecrets | None = None  # set where webhooks are sent (the ingress)

    # --- models ---------------------------------------------------------------------------------

    def model(self, name: str) -> ModelSpec | RenderError:
        """A served model by its name or an alias from `serve.model_aliases`."""
        if not name:
            return RenderError(ErrorCode.EMPTY_MODEL, "must not be empty", "model")
        spec = self.specs.get(self.settings.model_aliases.get(name, name))
        if spec is None:
            served = ", ".join([*self.specs, *self.settings.model_aliases])
            return RenderError(ErrorCode.MODEL_NOT_FOUND, f"{name} is not served here; available: {served}", "model")
        return spec

    def model_for(self, name: str, edit: bool, served_at: Mapping[bool, str]) -> ModelSpec | RenderError:
        """A served model the route takes: a route that takes input images (`edit`) takes every
        model (an edit model edits; any other renders image to image, or inpaints); the others
        refuse an edit model with where it is served (`served_at[True]`). The one lookup of a
        request's model: its `Submission` carries what this returns."""
        spec = self.model(name)
        if isinstance(spec, RenderError) or edit or not spec.edit:
            return spec
        return RenderError.invalid("model", f"{name} edits images: {served_at[True]}")

    # --- input images ---------------------------------------------------------------------------

    async def input_image(self, url: str, param: str) -> bytes | ServiceError:
        """An edit's input image: one of our signed result URLs, a public http(s) URL, or data:."""
        try:
            own = self._own_result_key(url)
            if own is not None:
                return await asyncio.to_thread(self.storage.read, own)
            return await fetch_image(url, self.policy, self.settings.max_image_bytes,
                                     self.settings.fetch.max_image_pixels, resolver=self.resolver)
        except FetchError as exc:
            return ServiceError.invalid(f"{param}: {exc}", param)
        except (FileNotFoundError, StorageError):
            return ServiceError.invalid(f"{param}: the result file no longer exists", param)

    async def input_mask(self, mask: bytes, convention: Convention, image: bytes, param: str) -> bytes | ServiceError:
        """A caller's mask for `image`, checked (bytes, header, pixels, the image's size) and made
        canonical (cluster/images/masks.py: 255 repaints) in the door's `convention`."""
        if len(mask) > self.settings.max_image_bytes:
            return ServiceError.invalid(f"{param} is larger than {self.settings.max_image_bytes} bytes", param)
        try:
            check_image(mask, self.settings.fetch.max_image_pixels)
            size = check_image(image, self.settings.fetch.max_image_pixels)
        except FetchError as exc:
            return ServiceError.invalid(f"{param}: {str(exc).replace('input image', 'the mask')}", param)
        try:
            return await asyncio.to_thread(masks.canonical, mask, convention, size)
        except masks.MaskError as exc:
            return ServiceError.invalid(f"{param} {exc}", param)

    def _own_result_key(self, url: str) -> str | None:
        """The storage key behind one of our own valid signed URLs (any host name: the signature
        is what proves it is ours), else None."""
        if not self.storage.served_here:
            return None
        try:
            parts = urlsplit(url)
        except ValueError:
            return None
        if parts.scheme not in ("http", "https") or not parts.path.startswith("/files/"):
            return None
        query = parse_qs(parts.query)
        try:
            expires = int(query["expires"][0])
            signature = query["signature"][0]
        except (KeyError, ValueError):
            return None
        key = parts.path.removeprefix("/files/")
        return key if self.storage.verify(key, expires, signature) else None

    # --- submit and wait --------------------------------------------------------------------------

    async def submit(self, submission: Submission) -> TaskRecord | Failure:
        spec = submission.spec
        resolved = spec.resolve(submission.request, sizes=submission.sizes)
        if isinstance(resolved, RenderError):
            return resolved.named(submission.param_names)
        if (cost := cost_of(resolved)) > self.settings.max_request_cost:
            return ServiceError.invalid(f"this request asks for {cost:.0f} megapixel-steps (n x steps x W x H / 2^20); "
                                        f"the limit is {self.settings.max_request_cost:g}: ask for fewer steps, "
                                        f"images or pixels")
        if submission.callback_url and (problem := await self._check_callback(submission.callback_url)):
            return problem
        loras_name = submission.param_names.get("loras", "loras")
        for i, lora in enumerate(resolved.loras):
            if lora.kind == "https" and (problem := await self._check_url(lora.location, f"{loras_name} item {i}: "
                                                                                         f"path", loras_name)):
                return problem
        if (kept := await self.store.kept(submission.key_id)) >= self.settings.max_kept_per_key:
            # The key's share of the shared store (a soft bound: submissions racing past the
            # count may each be let in). Its records free their place as they expire.
            return ServiceError(ErrorKind.RATE_LIMITED, f"this key keeps {kept} tasks, its share of the task store "
                                f"({self.settings.max_kept_per_key}); new tasks are refused until some expire "
                                f"(after {self.settings.retention_s} s)", retry_after_s=STORE_FULL_RETRY_S)
        now = time.time()
        record = TaskRecord(
            task_id=str(uuid.uuid4()), model=spec.name, key_id=submission.key_id, api=submission.api,
            request=dataclasses.replace(resolved, init_image=None, mask=None),
            client_body=_compact(submission.client_body),
            base_url=submission.base_url, trace_id=str(uuid.uuid4()),
            webhook=WebhookDelivery(url=submission.callback_url) if submission.callback_url else None,
            submit_time=now, deadline=now + self.settings.task_deadline_s, expires_at=now + self.settings.retention_s)
        write_input = None
        if resolved.init_image is not None:
            record.init_image_key = f"tasks/{record.task_id}/input"
            if resolved.mask is not None:
                record.mask_key = f"tasks/{record.task_id}/mask"

            async def write_input() -> None:  # once the record exists: no file without a record
                await asyncio.to_thread(self.storage.write, record.init_image_key, resolved.init_image)
                if record.mask_key:
                    await asyncio.to_thread(self.storage.write, record.mask_key, resolved.mask)
        try:
            await self.dispatcher.submit(record, write_input)
        except StoreFull:
            metrics.task_store_full.inc(tags={"model": spec.name})
            return ServiceError(ErrorKind.STORE_FULL, "the task store is full: new tasks are refused until finished "
                                                      "ones expire; retry later", retry_after_s=STORE_FULL_RETRY_S)
        except QueueFull as full:
            if full.key is not None:  # this key's share: others still get theirs
                return ServiceError(ErrorKind.RATE_LIMITED, f"this key has {self.settings.max_queued_per_key} tasks "
                                    f"waiting for model {spec.name}; retry when one has started", retry_after_s=5)
            return ServiceError(ErrorKind.QUEUE_FULL, f"model {spec.name} is at capacity; retry later",
                                retry_after_s=5)
        except BaseException:
            await self._discard(record)  # whatever failed, no file outlives a task never stored
            raise
        return record

    async def _discard(self, record: TaskRecord) -> None:
        """A part-written input of a submission that failed (its record was taken back)."""
        if record.init_image_key:
            await asyncio.to_thread(self.storage.delete_prefix, f"tasks/{record.task_id}")

    async def submit_once(self, submission: Submission, once: Once) -> TaskRecord | Failure:
        """Submit, unless an earlier request with the same fingerprint (from the same key) made a
        task that still answers it. Clients retry on timeouts and 5xx without a key of their own,
        and a retry must not render twice.

        `explicit` (the client's Idempotency-Key): the same task for as long as the record lives,
        whatever its state. Otherwise (an identical body): the earlier task while it is PENDING or
        RUNNING, or up to `duplicate_window_s` after it SUCCEEDED; a failed one is tried afresh.
        Two identical requests that arrive at the same instant may both render (no lock is taken).
        An explicit key reused with another body (`body_digest`) is refused (CONFLICT): the
        client's retry logic is wrong, and answering with the first task would hide it.
        """
        fingerprint, explicit, body_digest = f"{submission.key_id}:{once.fingerprint}", once.explicit, once.body_digest
        known = await self.store.recall(fingerprint)  # "task_id" or "task_id#body digest"
        known_id, _, known_digest = (known or "").partition("#")
        earlier = await self.get(known_id, submission.key_id) if known_id else None
        if earlier is not None and explicit and known_digest and known_digest != body_digest:
            return ServiceError(ErrorKind.CONFLICT, "this Idempotency-Key was used with another request body; "
                                                    "use a new key for a new request", param="Idempotency-Key")
        if earlier is not None and (explicit or _still_answers(earlier, self.settings.duplicate_window_s)):
            return earlier
        record = await self.submit(submission)
        if isinstance(record, TaskRecord):
            remember_for = self.settings.retention_s if explicit else (
                self.settings.task_deadline_s + self.settings.duplicate_window_s)
            remembered = f"{record.task_id}#{body_digest}" if explicit else record.task_id
            await self.store.remember(fingerprint, remembered, time.time() + remember_for)
        return record

    async def _check_callback(self, url: str) -> ServiceError | None:
        return await self._check_url(url, "callback_url", "callback_url")

    async def _check_url(self, url: str, label: str, param: str) -> ServiceError | None:
        """A URL we will fetch later (a webhook, a LoRA adapter in a replica), checked now under
        the address rules: a clear 400 now beats a failure later. Checked again when fetched."""
        try:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                return ServiceError.invalid(f"{label} must be an http(s):// URL", param)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            await checked_address(parts.hostname, port, self.policy, self.resolver)
        except (FetchError, ValueError) as exc:
            return ServiceError.invalid(f"{label}: {exc}", param)
        return None

    async def wait(self, record: TaskRecord, timeout_s: float | None = None) -> TaskRecord:
        """The task's record once terminal, or its latest record when the wait times out."""
        finished = await self.dispatcher.wait(record.task_id, timeout_s or self.settings.sync_timeout_s)
        return finished or record

    async def wait_for_images(self, record: TaskRecord, still_running: str,
                              names: Mapping[str, str] | None = None) -> TaskRecord | RenderError:
        """For a call that answers with images: the record once it SUCCEEDED, else the error to
        answer with (`still_running` tells the client what to do when the wait ran out): the
        task's own, its parameter named as `names` spells it, so a task that failed for the
        caller's reason (an adapter file they named, an input image) answers as that refusal
        would have at submission."""
        finished = await self.wait(record)
        if not finished.terminal:
            return RenderError(ErrorCode.TIMEOUT, f"task {record.task_id} did not finish within "
                                                  f"{self.settings.sync_timeout_s:g} s; {still_running}")
        if finished.status == TaskStatus.CANCELED:
            return RenderError(ErrorCode.CANCELED, f"task {record.task_id} was canceled before its images were ready")
        if finished.status == TaskStatus.FAILED or not any(o.key for o in finished.results):
            return (finished.error() or RenderError(ErrorCode.INTERNAL, "rendering failed")).named(names or {})
        return finished

    async def previews(self, record: TaskRecord) -> AsyncIterator[tuple[int, int, bytes]]:
        """The task's previews as they come, (image index, preview index, encoded picture), each
        once, until the task ends: those already kept in storage first (the task may have begun
        before the caller listened), then those its render sends here (this ingress runs the
        tasks submitted to it). The caller stops iterating when it has its answer."""
        queue = self.dispatcher.listen(record.task_id)
        sent: set[tuple[int, int]] = set()
        try:
            for index in range(record.request.n):
                for partial in range(record.request.partial_images):
                    try:
                        data = await asyncio.to_thread(self.storage.read, preview_key(record, index, partial))
                    except (FileNotFoundError, StorageError):
                        continue
                    sent.add((index, partial))
                    yield index, partial, data
            while True:
                event = await queue.get()
                if (event.index, event.partial_image_index) not in sent:
                    sent.add((event.index, event.partial_image_index))
                    yield event.index, event.partial_image_index, event.image
        finally:
            self.dispatcher.unlisten(record.task_id, queue)

    # --- read, cancel, list ---------------------------------------------------------------------

    async def get(self, task_id: str, key_id: str) -> TaskRecord | None:
        record = await self.store.get(task_id)
        if record is None or record.key_id != key_id:
            return None
        return await self.with_queue_position(record)

    async def with_queue_position(self, record: TaskRecord) -> TaskRecord:
        """The record with its place in its model's queue, while PENDING (1: starts next)."""
        if record.status == TaskStatus.PENDING:
            record.queue_position = 1 + await self.store.pending_ahead(record)
        return record

    async def cancel(self, task_id: str, key_id: str) -> TaskRecord | ServiceError:
        """Cancel a PENDING or RUNNING task. A running one's replica call is canceled: its images
        are dropped from a shared batch, or its own batch stops at the next step."""
        record = await self.get(task_id, key_id)
        if record is None:
            return ServiceError(ErrorKind.NOT_FOUND, f"task {task_id} does not exist or has expired")
        canceled = await self.store.transition(task_id, {TaskStatus.PENDING, TaskStatus.RUNNING},
                                               status=TaskStatus.CANCELED, end_time=time.time(), progress=None)
        if canceled is None:
            current = await self.store.get(task_id) or record
            return ServiceError(ErrorKind.NOT_CANCELABLE,
                                f"task {task_id} has ended ({current.status.value}); it cannot be canceled")
        self.dispatcher.stop(task_id)
        self.dispatcher.ended(canceled)
        return canceled

    async def list(self, key_id: str, *, status: str | None = None, model: str | None = None,
                   start: float | None = None, end: float | None = None, page_no: int = 1,
                   page_size: int = 10) -> tuple[list[TaskRecord], int]:
        records, total = await self.store.list(key_id=key_id, status=status, model=model, start=start, end=end,
                                               page_no=page_no, page_size=page_size)
        return [await self.with_queue_position(r) for r in records], total

    # --- webhooks -------------------------------------------------------------------------------

    def webhook_secret(self, key_id: str) -> dict | ServiceError:
        """The caller's own webhook signing secrets (current, and previous while rotating)."""
        if self.webhook_secrets is None:
            return ServiceError(ErrorKind.NOT_FOUND, "this service sends no webhooks")
        current, *previous = self.webhook_secrets.for_key(key_id)
        return {"secret": current, "previous_secret": previous[0] if previous else None}

    # --- results --------------------------------------------------------------------------------

    def result_url(self, record: TaskRecord, key: str, base_url: str | None = None) -> str:
        """A signed URL for one result file: valid `url_expiry_s` after the task was submitted,
        and no longer than its record. Fixed per task, so every answer gives the same URL."""
        expires_at = min(record.submit_time + self.settings.url_expiry_s, record.expires_at)
        return self.storage.url_until(key, int(expires_at), base_url or record.base_url)


def _still_answers(record: TaskRecord, window_s: float) -> bool:
    if not record.terminal:
        return True
    return record.status == TaskStatus.SUCCEEDED and time.time() - (record.end_time or 0) <= window_s


def _compact(value: Any) -> Any:
    """The client's body as stored, bounded: long strings (data: URIs) replaced by a note of
    their size, and about CLIENT_BODY_BUDGET bytes in all as stored (each value, key and bracket
    costs its JSON bytes) at most CLIENT_BODY_DEPTH deep; what is past the budget is dropped with
    a note. A record stays a few KiB whatever the client sent (at most the budget, one value
    past it and the notes)."""
    return _bounded(value, [CLIENT_BODY_BUDGET], 0)


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _bounded(value: Any, budget: list[int], depth: int) -> Any:
    if isinstance(value, str) and len(value) > CLIENT_TEXT_LIMIT:
        value = f"<{len(value)} characters omitted>"
    if not isinstance(value, (dict, list)):
        budget[0] -= _json_bytes(value)
        return value
    budget[0] -= 2
    if depth >= CLIENT_BODY_DEPTH:
        return "<nested too deep: omitted>"
    items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
    kept = []
    for name, item in items:
        if budget[0] <= 0:
            break
        key = str(name)[:CLIENT_KEY_LIMIT]
        if isinstance(value, dict):
            budget[0] -= _json_bytes(key) + 2  # the key, its colon and the comma
        kept.append((key, _bounded(item, budget, depth + 1)))
    if isinstance(value, list):
        return [item for _, item in kept] + ([f"<{len(items) - len(kept)} more omitted>"] if len(kept) < len(items) else [])
    return dict(kept) | ({"<omitted>": f"{len(items) - len(kept)} more fields"} if len(kept) < len(items) else {})
