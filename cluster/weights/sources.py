"""Weight sources and pipeline loading: one code path for tiny, local, fsspec and hub weights.

A source string is one of:
- `tiny:<family>`   tiny random weights, built into the local cache on first use
- `random:<family>` full-size architecture, random weights, built on the target device
- `fake:<family>`   a FAKE engine drawing solid colours (plumbing tests and benchmarks only)
- `sim:<family>`    a SIMULATED GPU: solid colours after a GPU's time per batch (utilization benchmarks)
- `scheme://...`    any fsspec URI (`s3://`, `gs://`, `file://`, `memory://`): copied once
                    into the shared weights cache (a new version when the listing changes), then loaded
- a local directory (absolute, relative, or `~`)
- `org/name`        a Hugging Face hub id (downloaded by diffusers on real clusters)

Everything except `random:` ends in `<PipelineClass>.from_pretrained(local_dir_or_hub_id)`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import diffusers
import torch

from cluster.doubles.tiny_pipelines import TINY_DIRS, build_tiny, tiny_cache_dir
from cluster.spec.errors import first_line
from cluster.spec.families import PIPELINE_CLASS, Family
from cluster.weights.shared_cache import CacheError, fetch

if TYPE_CHECKING:
    from cluster.spec.settings import SimulatedTiming

log = logging.getLogger(__name__)
SourceKind = Literal["tiny", "random", "fake", "sim", "fsspec", "local", "hub"]
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class ModelLoadError(Exception):
    """Weights could not be found or loaded; the message names the model and the source."""


@dataclass(frozen=True)
class WeightSource:
    kind: SourceKind
    location: str  # family for tiny/random, URI, path or hub id otherwise

    @property
    def family(self) -> Family:
        return Family(self.location)


def parse_source(source: str) -> WeightSource:
    """Classify a source string; raises ModelLoadError for an unknown `tiny:`/`random:` family."""
    for prefix in ("tiny", "random", "fake", "sim"):
        if source.startswith(f"{prefix}:"):
            family = source.split(":", 1)[1]
            if family not in {f.value for f in Family}:
                known = ", ".join(f.value for f in Family)
                raise ModelLoadError(f"unknown family in source '{source}'; expected {prefix}:<{known}>")
            return WeightSource(prefix, family)  # type: ignore[arg-type]
    if "://" in source:
        return WeightSource("fsspec", source)
    local = Path(source).expanduser()
    if local.exists() or source.startswith(("/", ".", "~")) or not _HUB_ID.match(source):
        return WeightSource("local", str(local))
    return WeightSource("hub", source)


# A Hugging Face access token: `hf_` and its body. Anything else in HF_TOKEN (the Secret
# template's `hf_...`, an empty value) is a placeholder, which the hub would take as a token and
# refuse with 401 even for public repositories.
_HUB_TOKEN = re.compile(r"^hf_[A-Za-z0-9]{30,}$")


def placeholder_hub_token() -> bool:
    """$HF_TOKEN is set, and is no Hugging Face token."""
    token = os.environ.get("HF_TOKEN")
    return token is not None and not _HUB_TOKEN.match(token.strip())


def drop_placeholder_hub_token() -> str | None:
    """Take a placeholder out of $HF_TOKEN before the hub sees it; returns why, when it did."""
    if not placeholder_hub_token():
        return None
    del os.environ["HF_TOKEN"]
    return "HF_TOKEN is not a Hugging Face token (a placeholder?): hub downloads go anonymous"


def weights_cache_dir() -> Path:
    return Path(os.environ.get("RAYDIANT_CACHE", Path.home() / ".cache" / "raydiant")) / "weights"


def fetch_fsspec(uri: str) -> Path:
    """The pipeline directory at any fsspec URI, copied once into the weights cache, which many
    processes on many nodes may share (`cluster/weights/shared_cache.py`): its current version's
    folder, complete and never changed while it is loaded."""
    try:
        return fetch(uri, weights_cache_dir()).path
    except CacheError as exc:
        raise ModelLoadError(str(exc)) from exc


def local_location(source: WeightSource) -> str:
    """A local directory (or hub id) that `from_pretrained` can load."""
    if source.kind == "hub" and (why := drop_placeholder_hub_token()):
        log.warning(why)
    if source.kind == "tiny":
        return str(build_tiny(source.family, tiny_cache_dir() / TINY_DIRS[source.family]))
    if source.kind == "fsspec":
        return str(fetch_fsspec(source.location))
    if source.kind == "local":
        path = Path(source.location)
        if not path.is_dir():
            raise ModelLoadError(f"weights directory {path} does not exist")
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(f"{path} is not a diffusers pipeline directory (no model_index.json)")
    return source.location


def load_pipeline(name: str, family: Family, source: str, dtype: torch.dtype, device: torch.device,
                  simulated: "SimulatedTiming | None" = None) -> diffusers.DiffusionPipeline:
    """Load model `name` of `family` from `source`. The pipeline is left on the CPU unless the
    source builds directly on `device` (random:); the caller moves or offloads it. `simulated`
    is the timing of a `sim:` source (default: H100 FLUX-schnell figures)."""
    try:
        parsed = parse_source(source)
        if parsed.kind in ("fake", "sim"):
            from cluster.doubles.simulated_gpu import SimulatedGpuPipeline
            from cluster.spec.settings import FAKE_TIMING, SimulatedTiming

            timing = FAKE_TIMING if parsed.kind == "fake" else simulated or SimulatedTiming()
            return SimulatedGpuPipeline(parsed.family, timing)  # type: ignore[return-value]
        if parsed.kind == "random":
            from cluster.doubles.random_weights import build_random_pipeline

            return build_random_pipeline(parsed.family, device, dtype)
        location = local_location(parsed)
        pipeline_class = getattr(diffusers, PIPELINE_CLASS[family])
        return pipeline_class.from_pretrained(location, dtype=dtype)
    except ModelLoadError as exc:
        raise ModelLoadError(f"cannot load model {name} from {source}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - report any loader failure as one clear line
        raise ModelLoadError(f"cannot load model {name} from {source}: {first_line(exc)}") from exc


def load_fill_transformer(name: str, source: str, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """The transformer of FLUX.1 Fill weights at `source` (only that folder is read: the model
    that uses it keeps its own text encoders and VAE). Left on the CPU except for `random:`."""
    try:
        parsed = parse_source(source)
        if parsed.kind in ("fake", "sim"):
            raise ModelLoadError("a SIMULATED or FAKE engine has no Fill weights (it renders inpaints itself)")
        if parsed.kind in ("tiny", "random") and parsed.family != Family.FLUX_FILL:
            raise ModelLoadError(f"{parsed.kind}:{parsed.location} is not Fill weights; use {parsed.kind}:flux-fill")
        if parsed.kind == "random":
            from cluster.doubles.random_weights import build_random_denoiser

            return build_random_denoiser(Family.FLUX_FILL, device, dtype)
        return diffusers.FluxTransformer2DModel.from_pretrained(local_location(parsed), subfolder="transformer",
                                                                torch_dtype=dtype)
    except ModelLoadError as exc:
        raise ModelLoadError(f"cannot load the Fill weights of model {name} from {source}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - report any loader failure as one clear line
        raise ModelLoadError(f"cannot load the Fill weights of model {name} from {source}: {first_line(exc)}") from exc


def load_preview_decoder(name: str, source: str, dtype: torch.dtype, latent_channels: int) -> torch.nn.Module:
    """A tiny autoencoder (`AutoencoderTiny`: TAESD, TAESDXL, TAEF1) whose decoder draws model
    `name`'s previews, on the CPU: a hub id, a local folder or an fsspec URI of one; or
    `tiny:<family>` / `random:<family>`, random weights for that family's latents (tests,
    benchmarks: the published architecture at `random:`, a few channels at `tiny:`)."""
    try:
        parsed = parse_source(source)
        if parsed.kind in ("fake", "sim"):
            raise ModelLoadError("a SIMULATED or FAKE engine has no latents to preview")
        if parsed.kind in ("tiny", "random"):
            from cluster.weights.architectures import architecture

            channels = architecture(parsed.family, "tiny" if parsed.kind == "tiny" else "full").vae["latent_channels"]
            widths = (64, 64, 64, 64) if parsed.kind == "random" else (8, 8, 8, 8)
            with torch.random.fork_rng(devices=[]):  # the same weights every time; the process's RNG untouched
                torch.manual_seed(0)
                decoder = diffusers.AutoencoderTiny(latent_channels=channels, encoder_block_out_channels=widths,
                                                    decoder_block_out_channels=widths).to(dtype=dtype).eval()
        else:
            location = fetch_fsspec(parsed.location) if parsed.kind == "fsspec" else parsed.location
            if parsed.kind == "local" and not (Path(location) / "config.json").is_file():
                raise ModelLoadError(f"{location} is not an AutoencoderTiny folder (no config.json)")
            decoder = diffusers.AutoencoderTiny.from_pretrained(str(location), torch_dtype=dtype).eval()
        if decoder.config.latent_channels != latent_channels:
            raise ModelLoadError(f"it decodes {decoder.config.latent_channels} latent channels; the model has "
                                 f"{latent_channels}")
        return decoder
    except ModelLoadError as exc:
        raise ModelLoadError(f"cannot load the preview decoder of model {name} from {source}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - report any loader failure as one clear line
        raise ModelLoadError(f"cannot load the preview decoder of model {name} from {source}: "
                             f"{first_line(exc)}") from exc
