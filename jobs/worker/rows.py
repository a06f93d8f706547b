"""Input rows -> one `WorkItem` per image, with ids, keys and seeds fixed deterministically.

A row's id is its `id` column (ids must be unique), or without one a hash of its content and
its position in the input (file name and row number): a rerun over the same input sees the same
ids, and two identical rows are two rows, each with its images. Image i of a row seeded s uses s + i; a row without a seed gets one derived from the
job seed and its id. Anything wrong with a row becomes the `error` of its one work item: the job
records it and goes on. A `loras` column holds a row's adapters, as JSON text or a list of
structs ({path, scale}). Rows come from pyarrow (`to_pylist`): a missing value is None; a float
NaN (a float column's hole written by pandas) counts as missing too.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from typing import Any

from cluster.spec.catalogue import ModelSpec, parse_size
from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.loras import read_lora_list
from cluster.spec.request import RenderRequest, ResolvedRequest
from cluster.spec.seeding import derive_seed, image_seeds
from jobs.driver.spec import RowDefaults


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
                "quality": r.quality if r else None}


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
        )
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int() of an infinite float
        return RenderError(ErrorCode.INVALID_PARAMETER, f"bad value in row: {str(exc)[:200]}")


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
