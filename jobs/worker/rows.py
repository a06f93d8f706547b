"""Input rows -> one `WorkItem` per image, with ids, keys and seeds fixed deterministically.

A row's id is its `id` column (ids must be unique), or without one a hash of its content and
its position in the input (file name and row number): a rerun over the same input sees the same
ids, and two identical rows are two rows, each with its images. Image i of a row seeded s uses s + i; a row without a seed gets one derived from the
job seed and its id. Anything wrong with a row becomes the `error` of its one work item: the job
records it and goes on. A `loras` column holds a row's adapters, as JSON text or a list of
structs ({path, scale}). An `image` column (bytes, or Hugging Face's Image struct {bytes, path})
makes a row image to image on a text-to-image model (with its `strength`), or the input of an
edit model; a `mask` column beside it (white where the image is repainted, of its size) makes it
an inpaint. Both are checked as the API's are (bytes, header and pixels, the mask's size). Rows come from pyarrow (`to_pylist`): a missing value is None; a float
NaN (a float column's hole written by pandas) counts as missing too.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from typing import Any

from cluster.images import masks
from cluster.spec.catalogue import ModelSpec, parse_size
from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.loras import read_lora_list
from cluster.spec.request import RenderRequest, ResolvedRequest
from cluster.spec.seeding import derive_seed, image_seeds
from cluster.storage.guarded_fetch import FetchError, check_image
from jobs.driver.spec import RowDefaults


MAX_INPUT_BYTES = 10 * 2**20  # an input image or mask, as the API's default (serve.max_image_bytes)
MAX_INPUT_PIXELS = 40_000_000  # as serve.fetch.max_image_pixels


@dataclass(frozen=True)
class WorkItem:
    """One image to render, or a refused row (then `request` is None and `error` says why)."""

    key: str  # storage-safe, fixed by the row id and image index
    id: str
    index: int
    model: str
    prompt: str | None
    request: ResolvedRequest | None
    error: RenderError | None = None

    @property
    def sample(self) -> str:
        return sample_name(self.key)

    def columns(self) -> dict[str, Any]:
        """The item's metadata columns (those an outcome adds are set by the writer)."""
        r = self.request
        loras = json.dumps([{"path": lora.path, "scale": lora.scale} for lora in r.loras]) if r and r.loras else None
        return {"id": self.id, "index": self.index, "key": self.key, "prompt": self.prompt,
                "negative_prompt": r.negative_prompt if r else None, "seed": r.seed if r else None,
                "model": self.model, "width": r.width if r else None, "height": r.height if r else None,
                "steps": r.steps if r else None, "guidance": r.guidance if r else None, "loras": loras,
                "quality": r.quality if r else None, "mode": r.mode if r else None,
                "strength": r.strength if r else None}


def sample_name(key: str) -> str:
    """The name of an image in its shard: dot- and slash-free (webdataset splits keys at dots)."""
    return key.replace("/", "_")


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def row_id(row: dict[str, Any], position: str = "") -> str:
    if _present(row.get("id")):
        return str(row["id"])
    content = json.dumps({k: v for k, v in sorted(row.items()) if _present(v)}, default=str, sort_keys=True)
    return hashlib.sha256(f"{content}\n{position}".encode()).hexdigest()[:20]


def image_key(rid: str, index: int) -> str:
    """Storage-safe key of image `index` of row `rid` (ids may hold any characters)."""
    digest = hashlib.sha256(rid.encode()).hexdigest()[:16]
    return f"{digest[:2]}/{digest}-{index}"


def _request(row: dict[str, Any], defaults: RowDefaults, job_seed: int, rid: str) -> RenderRequest | RenderError:
    width, height = row.get("width"), row.get("height")
    if _present(row.get("size")):
        parsed = parse_size(str(row["size"]))
        if parsed is None:
            return RenderError.invalid("size", f"must look like W*H, got {row['size']!r}")
        width, height = parsed
    prompt = row.get("prompt")
    if not _present(prompt) or not isinstance(prompt, str):
        return RenderError(ErrorCode.EMPTY_PROMPT, "is missing", "prompt")
    loras = read_lora_list(row.get("loras")) if _present(row.get("loras")) else defaults.loras
    if isinstance(loras, RenderError):
        return loras
    inputs = _inputs(row)
    if isinstance(inputs, RenderError):
        return inputs
    seed = row.get("seed")
    try:
        return RenderRequest(
            model=str(row["model"]) if _present(row.get("model")) else defaults.model,
            prompt=prompt,
            negative_prompt=row["negative_prompt"] if _present(row.get("negative_prompt")) else defaults.negative_prompt,
            width=int(width) if _present(width) else defaults.width,
            height=int(height) if _present(height) else defaults.height,
            steps=int(row["steps"]) if _present(row.get("steps")) else defaults.steps,
            guidance=float(row["guidance"]) if _present(row.get("guidance")) else defaults.guidance,
            seed=int(seed) if _present(seed) else derive_seed(job_seed, rid),
            n=int(row["n"]) if _present(row.get("n")) else defaults.n,
            loras=loras,
            quality=str(row["quality"]) if _present(row.get("quality")) else defaults.quality,
            init_image=inputs[0], mask=inputs[1],
            strength=float(row["strength"]) if _present(row.get("strength")) else None,
        )
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int() of an infinite float
        return RenderError(ErrorCode.INVALID_PARAMETER, f"bad value in row: {str(exc)[:200]}")


def _inputs(row: dict[str, Any]) -> tuple[bytes | None, bytes | None] | RenderError:
    """The row's input image and canonical mask (None: none), checked as the API checks them."""
    image, mask = _image_bytes(row.get("image")), _image_bytes(row.get("mask"))
    if image is None:
        return RenderError.invalid("mask", "needs an image column: the image it masks") if mask else (None, None)
    for name, data in (("image", image), ("mask", mask)):
        if data is not None and len(data) > MAX_INPUT_BYTES:
            return RenderError.invalid(name, f"is larger than {MAX_INPUT_BYTES} bytes")
    try:
        size = check_image(image, MAX_INPUT_PIXELS)
        if mask is not None:
            check_image(mask, MAX_INPUT_PIXELS)
    except FetchError as exc:
        return RenderError.invalid("image" if mask is None else "image or mask", str(exc))
    if mask is None:
        return image, None
    try:
        return image, masks.canonical(mask, "white", size)
    except masks.MaskError as exc:
        return RenderError.invalid("mask", str(exc))


def _image_bytes(value: Any) -> bytes | None:
    """An image column's bytes: raw, or Hugging Face's Image struct ({bytes, path})."""
    if isinstance(value, dict):
        value = value.get("bytes")
    return bytes(value) if isinstance(value, (bytes, bytearray)) and value else None


def expand_row(row: dict[str, Any], specs: dict[str, ModelSpec], defaults: RowDefaults,
               job_seed: int, position: str = "") -> list[WorkItem]:
    """The work items (one per image) of one input row, found at `position` in the input."""
    rid = row_id(row, position)
    request = _request(row, defaults, job_seed, rid)
    resolved: ResolvedRequest | RenderError = request
    if isinstance(request, RenderRequest):
        spec = specs.get(request.model)
        resolved = (spec.resolve(request, sizes="render") if spec else
                    RenderError(ErrorCode.MODEL_NOT_FOUND, f"model {request.model} is not configured"))
    if isinstance(resolved, RenderError):
        prompt = row.get("prompt") if isinstance(row.get("prompt"), str) else None
        model = str(row["model"]) if _present(row.get("model")) else defaults.model
        return [WorkItem(image_key(rid, 0), rid, 0, model, prompt, None, resolved)]
    return [WorkItem(image_key(rid, i), rid, i, resolved.model, resolved.prompt,
                     replace(resolved, seed=seed, n=1, add_sampling_metadata=True, request_id=image_key(rid, i)))
            for i, seed in enumerate(image_seeds(resolved.seed, resolved.n))]
