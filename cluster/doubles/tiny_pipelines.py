"""Tiny random-weight pipelines, built locally and saved as ordinary diffusers directories.

`build_tiny(family, path)` writes a directory loadable with `DiffusionPipeline.from_pretrained`,
so the demo and the tests load tiny models through exactly the code that loads real weights.
Weights come from a fixed seed and tokenizers are trained on the spot: the same bytes on every
machine, and no hub access, ever.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from cluster.doubles.tiny_tokenizers import train_clip_tokenizer, train_t5_tokenizer
from cluster.spec.families import Family
from cluster.weights.architectures import architecture
from cluster.weights.components import build_pipeline, on_cpu

# Bump when the tiny architectures change, so cached builds are rebuilt.
TINY_VERSION = 1
TINY_SEED = 0

# Directory name of each family under a `build-tiny` output directory.
TINY_DIRS: dict[Family, str] = {
    Family.FLUX: "flux",
    Family.FLUX_KONTEXT: "flux-kontext",
    Family.FLUX_FILL: "flux-fill",
    Family.SDXL: "sdxl",
    Family.SD15: "sd15",
}


def tiny_tokenizers() -> dict[str, object]:
    return {"clip": train_clip_tokenizer(), "t5": train_t5_tokenizer()}


def build_tiny(family: Family | str, path: Path, tokenizers: dict[str, object] | None = None) -> Path:
    """Build the tiny pipeline of `family` and save it at `path` (atomically: a directory
    appears complete or not at all, so concurrent builders on one machine are safe)."""
    family = Family(family)
    path = Path(path)
    if (path / "model_index.json").exists():
        return path
    pipeline = build_pipeline(
        architecture(family, "tiny"), tokenizers or tiny_tokenizers(), on_cpu(TINY_SEED)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        pipeline.save_pretrained(staging)
        try:
            os.rename(staging, path)
        except OSError:
            if not (path / "model_index.json").exists():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def build_all_tiny(root: Path) -> dict[Family, Path]:
    """Build every family under `root` (`root/flux`, `root/flux-kontext`, `root/sdxl`, `root/sd15`)."""
    tokenizers = tiny_tokenizers()
    return {f: build_tiny(f, Path(root) / name, tokenizers) for f, name in TINY_DIRS.items()}


def tiny_cache_dir() -> Path:
    """Where `tiny:<family>` sources are built on first use (per machine, per version)."""
    base = Path(os.environ.get("RAYDIANT_CACHE", Path.home() / ".cache" / "raydiant"))
    return base / f"tiny-v{TINY_VERSION}"
