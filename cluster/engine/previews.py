"""Live previews: what an image looks like at a few evenly spaced steps, read cheaply from its
latents while it denoises.

No preview runs the model's VAE on the device's critical path. Two previewers, one interface
(`pictures(pipeline, latents, width, height)`):

- `LatentPreviewer` (the default): a linear map from the latent channels to RGB, fitted once per
  loaded model against its own VAE (a few random latents decoded, least squares: the way
  latent-preview factors are found for any model), applied to the step's latents at latent
  resolution (an eighth of each side): a matrix product on the device and a small copy off it.
- `TinyAutoencoderPreviewer`, where a model configures `preview_decoder`: a tiny autoencoder's
  decoder (diffusers' `AutoencoderTiny`: TAESD, TAESDXL, TAEF1) at full resolution, a truer
  picture for about 1% of the full VAE's parameters.

Scaling up and encoding happen on the replica's encoders.

The final image is untouched: the step callback reads the latents and hands them back as they
were, so a request with previews renders the same pixels as one without.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

log = logging.getLogger(__name__)
_FIT_LATENT_SIDE = 16  # latents decoded for the fit: 16x16 (128x128 pixels), twice


def preview_steps(partial_images: int, steps: int) -> list[int]:
    """The steps (1-based) after which the previews are taken: evenly spaced, never the last
    (the finished image comes then), fewer when there are fewer steps than previews."""
    spaced = {round(k * steps / (partial_images + 1)) for k in range(1, partial_images + 1)}
    return sorted(step for step in spaced if 1 <= step < steps)


class LatentPreviewer:
    """One loaded model's latent-to-RGB map, fitted on first use."""

    def __init__(self):
        self._map: torch.Tensor | None = None  # (channels + 1, 3): weights, then the bias row
        self._lock = threading.Lock()

    def pictures(self, pipeline, latents: torch.Tensor, width: int, height: int) -> list[Image.Image]:
        """Small RGB pictures of `latents` (a batch), at latent resolution."""
        latents = _unpacked(pipeline, latents, width, height)
        weights = self._fitted(pipeline, latents.shape[1]).to(latents.device)
        rgb = torch.einsum("bchw,cr->bhwr", latents.float(), weights[:-1]) + weights[-1]
        return _pictures(rgb)

    def _fitted(self, pipeline, channels: int) -> torch.Tensor:
        with self._lock:
            if self._map is None or self._map.shape[0] != channels + 1:
                self._map = _fit(pipeline.vae, channels, pipeline.vae_scale_factor)
            return self._map


class TinyAutoencoderPreviewer:
    """Previews decoded by a tiny autoencoder (`AutoencoderTiny`) of the model's latent space."""

    def __init__(self, decoder):
        self.decoder = decoder

    @torch.no_grad()
    def pictures(self, pipeline, latents: torch.Tensor, width: int, height: int) -> list[Image.Image]:
        """RGB pictures of `latents` (a batch), at the render size."""
        latents = _unpacked(pipeline, latents, width, height)
        config, parameter = self.decoder.config, next(self.decoder.parameters())
        scaled = latents / config.scaling_factor + config.shift_factor  # as the pipeline hands its VAE
        rgb = self.decoder.decode(scaled.to(parameter.device, parameter.dtype)).sample.float()
        return _pictures(rgb.permute(0, 2, 3, 1))


def _unpacked(pipeline, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
    if latents.ndim == 3:  # FLUX packs 2x2 latent patches into tokens
        return type(pipeline)._unpack_latents(latents, height, width, pipeline.vae_scale_factor)
    return latents


def _pictures(rgb: torch.Tensor) -> list[Image.Image]:
    """(batch, height, width, 3) in [-1, 1] -> pictures."""
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(picture)) for picture in pixels]


@torch.no_grad()
def _fit(vae, channels: int, scale: int) -> torch.Tensor:
    """Least squares from latents (as the pipeline holds them) to the VAE's pixels, pooled to
    latent resolution."""
    parameter = next(vae.parameters())
    latents = torch.randn(2, channels, _FIT_LATENT_SIDE, _FIT_LATENT_SIDE, generator=torch.Generator().manual_seed(0))
    config = vae.config
    scaled = latents / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)
    pixels = vae.decode(scaled.to(parameter.device, parameter.dtype)).sample.float().cpu()
    pooled = F.avg_pool2d(pixels, scale)
    inputs = latents.permute(0, 2, 3, 1).reshape(-1, channels)
    inputs = torch.cat([inputs, torch.ones(inputs.shape[0], 1)], dim=1)
    targets = pooled.permute(0, 2, 3, 1).reshape(-1, 3)
    return torch.linalg.lstsq(inputs, targets).solution


class PreviewTaker:
    """Part of one batch's step callback: after each preview step of an image that asked for
    previews, its picture goes to `deliver(batch position, preview index, picture)`."""

    def __init__(self, previewer: LatentPreviewer, wanted: list[int], width: int, height: int,
                 deliver: Callable[[int, int, Image.Image], None]):
        self.previewer, self.wanted, self.width, self.height = previewer, wanted, width, height
        self.deliver = deliver
        self._failed = False

    def __call__(self, pipeline, step: int, steps: int, latents: torch.Tensor) -> None:
        due = [(position, preview_steps(count, steps).index(step)) for position, count in enumerate(self.wanted)
               if count and step in preview_steps(count, steps)]
        if not due or self._failed:
            return
        try:
            pictures = self.previewer.pictures(pipeline, latents, self.width, self.height)
        except Exception:  # noqa: BLE001 - a preview is a courtesy: the render goes on without it
            log.exception("a preview could not be made; this batch goes on without previews")
            self._failed = True
            return
        for position, index in due:
            self.deliver(position, index, pictures[position])
