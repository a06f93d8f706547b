"""Input rows -> one work item per image, with ids, keys and seeds fixed deterministically.

A row's id is its `id` column, or (without one) a hash of its content, so a rerun sees the
same ids. Image i of a row seeded s uses s + i; a row without a seed gets one derived from the
job seed and its id. Anything wrong with a row becomes an `error` on its work items: the job
records it and goes on.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import pandas as pd

from cluster.models import ModelSpec, parse_size
from cluster.errors import ErrorCode, RenderError
from cluster.request import RenderRequest, ResolvedRequest
from cluster.seeding import derive_seed, image_seeds
from jobs.spec import RowDefaults

WORK_COLUMNS = ["key", "id", "index", "model", "prompt", "negative_prompt", "seed", "width", "height",
                "steps", "guidance", "error_code", "error", "row_images"]  # row_images: the row's images in this run


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def row_id(row: dict[str, Any]) -> str:
    if _present(row.get("id")):
        return str(row["id"])
    content = json.dumps({k: v for k, v in sorted(row.items()) if _present(v)}, default=str, sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()[:20]


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
        )
    except (TypeError, ValueError) as exc:
        return RenderError(ErrorCode.INVALID_PARAMETER, f"bad value in row: {exc}")


def expand_row(row: dict[str, Any], specs: dict[str, ModelSpec], defaults: RowDefaults,
               job_seed: int) -> list[dict[str, Any]]:
    """The work items (one per image) of one input row."""
    rid = row_id(row)
    request = _request(row, defaults, job_seed, rid)
    resolved: ResolvedRequest | RenderError = request
    if isinstance(request, RenderRequest):
        spec = specs.get(request.model)
        resolved = (spec.resolve(request, sizes="render") if spec else
                    RenderError(ErrorCode.MODEL_NOT_FOUND, f"model {request.model} is not configured"))
    if isinstance(resolved, RenderError):
        return [{"key": image_key(rid, 0), "id": rid, "index": 0, "model": str(row.get("model") or defaults.model),
                 "prompt": row.get("prompt") if isinstance(row.get("prompt"), str) else None,
                 "negative_prompt": None, "seed": None, "width": None, "height": None, "steps": None,
                 "guidance": None, "error_code": resolved.code.value, "error": resolved.text()}]
    return [{"key": image_key(rid, i), "id": rid, "index": i, "model": resolved.model, "prompt": resolved.prompt,
             "negative_prompt": resolved.negative_prompt, "seed": seed, "width": resolved.width,
             "height": resolved.height, "steps": resolved.steps, "guidance": resolved.guidance,
             "error_code": None, "error": None}
            for i, seed in enumerate(image_seeds(resolved.seed, resolved.n))]


def expand_batch(batch: pd.DataFrame, specs: dict[str, ModelSpec], defaults: RowDefaults, job_seed: int,
                 done: frozenset[str]) -> pd.DataFrame:
    """`map_batches` body: input rows -> work items, minus images already committed."""
    items = []
    for row in batch.to_dict("records"):
        todo = [item for item in expand_row(row, specs, defaults, job_seed) if item["key"] not in done]
        for item in todo:
            item["row_images"] = len(todo)  # lets the driver count rows finished (progress)
        items += todo
    return pd.DataFrame(items, columns=WORK_COLUMNS)
