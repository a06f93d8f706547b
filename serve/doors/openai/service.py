"""The OpenAI Images API: parse its bodies into task-layer calls, render records in its shapes.
No web framework, no task logic; methods return bodies or `Failure`s.

Vocabulary owned here: `model` (a served model or an alias; when absent, the first served model
that generates, or, on the edits route, the first edit model, or the first that generates when a
mask is sent), `size` as `WxH` (any size the model renders) or `auto`, `response_format` url |
b64_json, `output_format` png | jpeg | webp with `output_compression` 0..100 (JPEG and WebP
quality), and the extensions `seed`, `steps`, `guidance`, `negative_prompt`, `loras` (the SDK
sends them through `extra_body`; a multipart edit sends `loras` as JSON text), `strength` (an
edit on a text-to-image model: image to image, or an inpaint where the mask's transparent
pixels are) and `quality`: ours (`lossless`, `fast`) or OpenAI's own values (taken, rendered
lossless). An edit's `mask` follows OpenAI: a PNG of the image's size whose transparent pixels
are the area to change; the pixels outside it come back exactly as sent. Calls are synchronous,
and a retried call joins the task of the first (`TaskService.submit_once`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from dataclasses import dataclass
from typing import AsyncIterator

from cluster.spec.catalogue import ModelSpec
from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.request import RenderRequest
from cluster.storage.guarded_fetch import FetchError, check_image
from serve.doors.base import Created, DoorService, close_previews, lora_view
from serve.doors.openai.protocol import (
    IGNORED_FIELDS, NO_USAGE, OPENAI_QUALITIES, PARAM_NAMES, RESPONSE_FORMATS, SERVED_AT, STREAM_PREFIX, ImageData,
    ImagesResponse, ModelCard, ModelList, error_body,
)
from serve.edge import fields
from serve.edge.errors import ErrorKind, Failure, ServiceError
from serve.edge.fields import Invalid
from serve.edge.http import Caller
from serve.files.store import BatchFiles, FileLimits
from serve.tasks.service import Once, Submission, TaskService
from serve.tasks.store.record import TaskRecord

KNOWN_FIELDS = frozenset({"prompt", "model", "n", "size", "response_format", "seed", "steps", "guidance",
                          "negative_prompt", "loras", "quality", "strength", "output_format", "output_compression",
                          "stream", "partial_images"})
IMAGE_FIELDS = ("image", "image[]", "mask")  # files, on the edits route only


@dataclass(frozen=True)
class EditUpload:
    """A multipart edit request as the router read it: text fields, and the files' bytes."""

    fields: dict[str, str]
    images: list[bytes]
    mask: bytes | None = None


class OpenAIService(DoorService):
    api = "openai"

    def __init__(self, tasks: TaskService):
        super().__init__(tasks)
        files = tasks.settings.files
        self.files = BatchFiles(tasks.storage, FileLimits(
            max_bytes=files.max_bytes, max_lines=files.max_lines,
            max_line_bytes=files.max_line_bytes or tasks.settings.max_body_bytes,
            max_per_key=files.max_per_key, retention_s=int(files.retention_days * 86400),
            max_uploads_per_key=files.max_uploads_per_key))

    # --- POST /v1/images/generations and /v1/images/edits ---------------------------------------

    async def generate(self, caller: Caller, idempotency_key: str | None) -> dict | Failure | AsyncIterator[dict]:
        body = caller.body
        if not isinstance(body, dict):
            return ServiceError(ErrorKind.MALFORMED, "request body must be a JSON object")
        return await self._create(caller, body, None, _once("generations", body, idempotency_key))

    async def edit(self, caller: Caller, upload: EditUpload,
                   idempotency_key: str | None) -> dict | Failure | AsyncIterator[dict]:
        if len(upload.images) != 1:
            return ServiceError.invalid(f"send exactly one image (got {len(upload.images)})", "image")
        if len(upload.images[0]) > self.tasks.settings.max_image_bytes:
            return ServiceError.invalid(f"image is larger than {self.tasks.settings.max_image_bytes} bytes", "image")
        try:
            check_image(upload.images[0], self.tasks.settings.fetch.max_image_pixels)
        except FetchError as exc:
            return ServiceError.invalid(f"image: {exc}", "image")
        mask = None
        if upload.mask is not None:  # OpenAI's convention: its transparent pixels are the area to change
            mask = await self.tasks.input_mask(upload.mask, "alpha", upload.images[0], "mask")
            if isinstance(mask, ServiceError):
                return mask
        digest = hashlib.sha256(upload.images[0]).hexdigest()
        mask_digest = hashlib.sha256(mask).hexdigest() if mask else None
        return await self._create(caller, dict(upload.fields), upload.images[0],
                                  _once("edits", {**upload.fields, "image": digest, "mask": mask_digest},
                                        idempotency_key), mask)

    async def _create(self, caller: Caller, body: dict, image: bytes | None, once: Once,
                      mask: bytes | None = None) -> dict | Failure | AsyncIterator[dict]:
        created = await self.submit(self._parse(caller, body, image, mask), once)
        if not isinstance(created, Created):
            return created
        if _streamed(body, image is not None):  # checked by `_parse`
            return self._events(created, edit=image is not None)
        response_format = body.get("response_format") or "url"  # `_parse` checked it
        finished = await self.tasks.wait_for_images(created.record, "retry to keep waiting",
                                                    created.submission.param_names)
        if isinstance(finished, RenderError):
            return finished
        return (await self._answer(finished, response_format, caller.base_url)).model_dump(exclude_none=True)

    async def _parse(self, caller: Caller, body: dict, image: bytes | None, mask: bytes | None = None) -> Submission:
        """Kinds are checked here, naming OpenAI's fields; values by the core, once."""
        edit = image is not None
        if not edit and (sent := next((f for f in IMAGE_FIELDS if f in body), None)):
            raise Invalid(f"{sent}: images go to /v1/images/edits, as multipart files", sent)
        spec = self._model(fields.text(body, "model"), edit, mask is not None)
        size = fields.text(body, "size")
        width = height = None
        if size not in (None, "auto"):
            width, height = fields.size(size, "size", "WxH (e.g. 1024x1024) or auto")
        response_format = fields.text(body, "response_format") or "url"
        if response_format not in RESPONSE_FORMATS:
            raise Invalid(f"response_format must be url or b64_json, got {response_format!r}", "response_format")
        unknown = sorted(set(body) - KNOWN_FIELDS - set(IGNORED_FIELDS))
        if unknown:
            raise Invalid(f"unknown parameter {unknown[0]!r}", unknown[0])
        _check_ignored(body, multipart=edit)
        n = fields.integer(body, "n", floats=True, strings=True)  # multipart sends text
        # Previews only for a streamed answer: nobody would see them otherwise.
        partial_images = fields.integer(body, "partial_images", floats=True, strings=edit)
        request = RenderRequest(model=spec.name, prompt=fields.text(body, "prompt") or "", width=width, height=height,
                                n=1 if n is None else n, seed=fields.integer(body, "seed", floats=True, strings=True),
                                steps=fields.integer(body, "steps", floats=True, strings=True),
                                guidance=fields.number(body, "guidance", strings=True),
                                negative_prompt=fields.text(body, "negative_prompt"), init_image=image,
                                mask=mask, strength=fields.number(body, "strength", strings=True),
                                loras=fields.loras(body, "loras", text_json=edit), quality=_quality(body),
                                output_format=fields.text(body, "output_format"),
                                output_quality=fields.integer(body, "output_compression", floats=True, strings=True),
                                partial_images=partial_images if _streamed(body, edit) else None)
        client_body = {k: v for k, v in body.items() if k != "image"}
        return Submission(api=self.api, key_id=caller.key_id, spec=spec, request=request, base_url=caller.base_url,
                          client_body=client_body, sizes="render", param_names=PARAM_NAMES)

    def _model(self, name: str | None, edit: bool, masked: bool = False) -> ModelSpec:
        if name is None:
            # Generations: the first that generates. Edits: the first edit model, or with a mask
            # (which edit models do not take) the first that generates, which inpaints.
            generators = [s for s in self.tasks.specs.values() if not s.edit]
            editors = [s for s in self.tasks.specs.values() if s.edit]
            choices = editors or generators if edit and not masked else generators
            default = choices[0] if choices else None
            if default is None:
                raise Invalid(f"no model here {'edits' if edit else 'generates'} images", "model",
                              ErrorCode.MODEL_NOT_FOUND)
            return default
        spec = self.tasks.model_for(name, edit, SERVED_AT)
        if isinstance(spec, RenderError):
            raise Invalid.of(spec)
        return spec

    async def _answer(self, record: TaskRecord, response_format: str, base_url: str) -> ImagesResponse:
        data = []
        for outcome in record.results:
            if not outcome.key:
                continue
            if response_format == "b64_json":
                image = await asyncio.to_thread(self.tasks.storage.read, outcome.key)
                data.append(ImageData(b64_json=base64.b64encode(image).decode(), seed=outcome.seed))
            else:
                data.append(ImageData(url=self.tasks.result_url(record, outcome.key, base_url), seed=outcome.seed))
        revised = record.request.prompt if record.request.prompt != (record.client_body or {}).get("prompt") else None
        for item in data:
            item.revised_prompt = revised
        return ImagesResponse(created=int(record.submit_time), data=data, loras=lora_view(record),
                              output_format=record.request.output_format)

    async def _events(self, created: Created, edit: bool) -> AsyncIterator[dict]:
        """A streamed answer (`stream=True`), in OpenAI's events: `<prefix>.partial_image` for each
        preview as it comes (`partial_images`), then `<prefix>.completed` for each image (its
        bytes as b64_json: a stream carries no URL), or an `error`. A client that goes away
        before the end cancels its task."""
        record, prefix = created.record, STREAM_PREFIX[edit]
        request = record.request
        common = {"created_at": int(record.submit_time), "size": f"{request.width}x{request.height}",
                  "quality": "auto", "background": "opaque", "output_format": request.output_format}
        finished = asyncio.ensure_future(self.tasks.wait_for_images(record, "retry to keep waiting",
                                                                    created.submission.param_names))
        previews = self.tasks.previews(record)
        waiting: asyncio.Future | None = None
        try:
            while request.partial_images and not finished.done():
                waiting = waiting or asyncio.ensure_future(anext(previews))
                await asyncio.wait({waiting, finished}, return_when=asyncio.FIRST_COMPLETED)
                if waiting.done():
                    index, partial, data = waiting.result()
                    waiting = None
                    yield {"type": f"{prefix}.partial_image", "b64_json": base64.b64encode(data).decode(),
                           "partial_image_index": partial, "image_index": index, **common}
            done = await finished
            if isinstance(done, RenderError):
                yield {"type": "error", "error": error_body(done)["error"]}
                return
            for outcome in done.results:
                if outcome.key:
                    data = await asyncio.to_thread(self.tasks.storage.read, outcome.key)
                    yield {"type": f"{prefix}.completed", "b64_json": base64.b64encode(data).decode(),
                           "image_index": outcome.index, "seed": outcome.seed, "usage": NO_USAGE, **common}
        finally:
            await close_previews(previews, waiting)
            # The client went away before the task ended (a cancellation of this stream cancels
            # the wait with it): nobody is left to want the images.
            if not finished.done() or finished.cancelled():
                finished.cancel()
                await asyncio.shield(self.tasks.cancel(record.task_id, record.key_id))

    # --- GET /v1/models --------------------------------------------------------------------------

    def models(self) -> dict:
        aliases = self.tasks.settings.model_aliases
        cards = [_card(name, spec, None) for name, spec in self.tasks.specs.items()]
        cards += [_card(alias, self.tasks.specs[target], target) for alias, target in aliases.items()
                  if target in self.tasks.specs]
        return ModelList(data=cards).model_dump()


def _streamed(body: dict, multipart: bool) -> bool:
    """`stream` (multipart sends it as text)."""
    if multipart and body.get("stream") in ("true", "false"):
        return body["stream"] == "true"
    return bool(fields.boolean(body, "stream"))


def _quality(body: dict) -> str | None:
    """Ours (lossless, fast), or None for OpenAI's own values (standard, hd, ...: lossless here)."""
    quality = fields.text(body, "quality")
    return None if quality in OPENAI_QUALITIES else quality


def _check_ignored(body: dict, multipart: bool) -> None:
    """OpenAI's fields that do not apply here, type-checked all the same (multipart sends text)."""
    for name, kind in IGNORED_FIELDS.items():
        if kind is str:
            fields.text(body, name)
        elif kind is int:
            fields.integer(body, name, strings=multipart)
        elif not (multipart and body.get(name) in ("true", "false")):
            fields.boolean(body, name)


def _card(name: str, spec: ModelSpec, alias_of: str | None) -> ModelCard:
    sizes = spec.api_sizes.allowed
    return ModelCard(id=name, alias_of=alias_of, edit=spec.edit,
                     sizes=[s.replace("*", "x") for s in sizes] if sizes else None,
                     default_size=spec.default_size.replace("*", "x"), max_n=spec.max_n,
                     min_steps=spec.min_steps, max_steps=spec.max_steps, default_steps=spec.default_steps,
                     guidance_name=spec.guidance_name, min_guidance=spec.min_guidance, max_guidance=spec.max_guidance,
                     default_guidance=spec.default_guidance, max_loras=spec.loras.max, fast=spec.step_cache,
                     max_lora_scale=spec.loras.max_scale)


def _once(route: str, body: dict, idempotency_key: str | None) -> Once:
    """What identifies a repeat of this request: the client's key, else the body itself."""
    digest = _digest(route, body)
    if idempotency_key is not None:
        return Once(f"key:{hashlib.sha256(idempotency_key.encode('utf-8', 'replace')).hexdigest()}", True, digest)
    return Once(f"body:{digest}", False, digest)


def _digest(route: str, body: dict) -> str:
    canonical = json.dumps({"route": route, "body": body}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode("utf-8", "replace")).hexdigest()
