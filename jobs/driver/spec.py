"""`JobSpec`: everything a batch render job needs, validated before any work starts."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cluster.spec.loras import LoraRef

OutputFormat = Literal["files", "webdataset", "parquet"]
DEFAULT_SERVE_APP = "raydiant"  # what `raydiant serve` names its application
# The work unit by default: at least UNITS_PER_ACTOR units for each render actor, so that every
# actor has work from the start and the last units end close together; at least UNIT_BATCHES
# device batches, so that a unit's fixed cost (a Ray Data call, its part: about 60 ms here) is
# small beside its render; at most MAX_UNIT_BATCHES, since a unit's images are held in memory
# until its part is written (32 batches of 4 images at 1024*1024 in PNG: about 200 MB).
UNITS_PER_ACTOR = 16
UNIT_BATCHES = 2
MAX_UNIT_BATCHES = 32


class RowDefaults(BaseModel):
    """Values for columns an input row lacks."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("flux-schnell", description="Model for rows without a `model` column.")
    width: int | None = Field(None, description="Width (default: the model's).")
    height: int | None = Field(None, description="Height (default: the model's).")
    steps: int | None = Field(None, description="Steps (default: the model's).")
    guidance: float | None = Field(None, description="Guidance (default: the model's).")
    n: int = Field(1, ge=1, description="Images per row.")
    negative_prompt: str | None = Field(None, description="Negative prompt.")
    loras: tuple[LoraRef, ...] = Field((), description="LoRA adapters for rows without a `loras` column.")
    quality: str | None = Field(None, description="lossless (default) or fast, for rows without a `quality` column.")


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field(description="Parquet file, directory or glob; local path or fsspec URI.")
    output: str = Field(description="Output directory; local path or fsspec URI.")
    config: str | None = Field(None, description="raydiant config (default: the embedded local one).")
    format: OutputFormat = Field("files", description="files, webdataset or parquet.")
    image_format: Literal["png", "webp", "jpeg"] = Field(
        "png", description="Image encoding: png (lossless, with sampling metadata), webp or jpeg (smaller).")
    defaults: RowDefaults = Field(default_factory=RowDefaults)
    batch_size: int = Field(4, ge=1, description="Images per device batch (what the model wants on the GPU).")
    shard_size: int = Field(1000, ge=1, le=1_000_000, description="Images per output shard (a tar, a data "
                                                                   "file or a folder): the dataset's unit.")
    unit_size: int | None = Field(None, ge=1, le=100_000, description=(
        "Images per work unit: what a render actor takes at a time, independent of the shards (default: "
        f"{UNITS_PER_ACTOR} units an actor, of {UNIT_BATCHES} to {MAX_UNIT_BATCHES} device batches)."))
    concurrency: tuple[int, int] | None = Field(
        None, description="Renderer actors: min, max (default: from the cluster's GPUs, see cluster/runtime/placement.py).")
    gpus_per_worker: float | None = Field(
        None, ge=0, description="GPUs per render actor (default: 1 when the cluster has or can get GPUs, else 0).")
    limit: int | None = Field(None, ge=1, description="Read at most this many input rows.")
    seed: int = Field(0, description="Job seed: rows without a seed get one derived from it and their id.")
    max_errors: float = Field(0.1, ge=0, description="Failed images allowed: a count (>= 1) or a fraction (< 1).")
    address: str | None = Field(None, description="Ray cluster address (default: start a local one).")
    via_serve: str | None = Field(None, description="Render through this running Serve application "
                                                    "(e.g. 'raydiant') instead of a dedicated actor pool.")

    @field_validator("concurrency")
    @classmethod
    def _ordered(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is None:
            return None
        low, high = value
        if low < 1 or high < low:
            raise ValueError(f"concurrency must be MIN,MAX with 1 <= MIN <= MAX, got {low},{high}")
        return value

    def unit_images(self, images: int, actors: int) -> int:
        """Images per work unit for a job of `images` on up to `actors` render actors: `unit_size`
        when given, else as the constants above say."""
        if self.unit_size:
            return self.unit_size
        batches = math.ceil(images / (max(actors, 1) * UNITS_PER_ACTOR * self.batch_size))
        return self.batch_size * min(max(batches, UNIT_BATCHES), MAX_UNIT_BATCHES)

    def error_budget(self, images: int) -> float:
        """How many failed images the job tolerates out of `images`."""
        return self.max_errors if self.max_errors >= 1 else self.max_errors * images
