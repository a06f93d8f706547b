"""Make a pipeline's CPU results independent of the batch an image is rendered in.

Two CPU effects, both measured on this project's torch build, made a 1-image render differ in
the last bits from the same image inside a batch:

1. `F.linear` on fewer than 4 rows takes a different kernel (GEMV / small-M paths) than on 4 or
   more rows, and the kernels accumulate in a different order.
2. A convolution of a single small image (under 20480 input elements) takes torch's native
   im2col path; batches and large inputs take oneDNN. Deep, low-resolution UNet and VAE levels
   hit this. A non-contiguous (channels-last) input takes yet another path, batch-dependent too.
3. Elementwise kernels (SiLU, sin, cos, ...) run full SIMD chunks and finish the tail of a buffer
   with scalar code, whose transcendental functions round differently. A [1, 16] tensor is all
   tail; the same row inside a [4, 16] tensor is vectorised.

Both only bite on small "one row per image" tensors: timestep, guidance and pooled-text
embeddings and the AdaLN modulation computed from them. Token-wise tensors have many rows and
hidden sizes that are multiples of the SIMD width, and convolutions, norms and attention were
measured batch-invariant. So for (1) and (3) the fix pads the rows of small inputs with zeros up to a multiple of
`ROW_MULTIPLE` before such a layer and drops the padding after: every image then takes the same
kernels in the same lanes whatever its batch, at the cost of a few extra rows in vector-sized
layers; for (2) a single small image is convolved as a batch of two identical images. GPUs make no bit-identity promise here and are left alone.
"""

from __future__ import annotations

import types
from typing import Callable

import torch
from diffusers.models.embeddings import Timesteps

# Pad to a multiple of this many rows: above the small-M matmul threshold (4 here) with
# headroom, and 16 rows of any even width fill whole 32-lane SIMD chunks.
ROW_MULTIPLE = 16
# Inputs with at least this many rows are token-wise: left alone (padding would copy them).
SMALL_ROWS = 256

# A batch-of-one convolution input at or under this many elements is run as a batch of two:
# torch takes oneDNN for batch 1 only above 20480 elements (measured: 20480 differs, 20736 and
# up match). The batching tests fail loudly if a torch upgrade moves this threshold.
SMALL_CONV_NUMEL = 20480

_ACTIVATIONS = (torch.nn.SiLU, torch.nn.GELU, torch.nn.Mish, torch.nn.ReLU, torch.nn.Tanh,
                torch.nn.Sigmoid)


def _rows(x: torch.Tensor) -> int:
    return x.shape[0] if x.ndim == 1 else x.numel() // max(x.shape[-1], 1)


def _pad_rows(forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    def padded(self: torch.nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        rows = _rows(x) if isinstance(x, torch.Tensor) and x.ndim >= 1 else 0
        target = -(-rows // ROW_MULTIPLE) * ROW_MULTIPLE
        if rows == 0 or rows >= SMALL_ROWS or rows == target:
            return forward(x, *args, **kwargs)
        flat = x.reshape(rows, -1) if x.ndim > 1 else x
        filler = flat.new_zeros((target - rows, *flat.shape[1:]))
        out = forward(torch.cat([flat, filler]), *args, **kwargs)[:rows]
        lead = x.shape[:-1] if x.ndim > 1 else x.shape
        return out.reshape(*lead, *out.shape[1:])

    return padded


def _pair_single_image(forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    def paired(self: torch.nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if x.ndim == 4 and not x.is_contiguous():
            # A channels-last input (image-to-image latents come from the VAE encoder so) takes
            # another convolution path, whose result depends on the batch: one layout for all.
            x = x.contiguous()
        if x.ndim == 4 and x.shape[0] == 1 and x.numel() <= SMALL_CONV_NUMEL:
            return forward(torch.cat([x, x]), *args, **kwargs)[:1]
        return forward(x, *args, **kwargs)

    return paired


def _wrapper(module: torch.nn.Module) -> Callable | None:
    if isinstance(module, torch.nn.Conv2d):
        return _pair_single_image
    if isinstance(module, (torch.nn.Linear, Timesteps, *_ACTIVATIONS)):
        return _pad_rows
    return None


def make_batch_invariant(modules: list[torch.nn.Module]) -> int:
    """Patch the vector-sized layers inside `modules`; returns how many were patched."""
    patched = 0
    for root in modules:
        for module in root.modules():
            wrap = _wrapper(module)
            if wrap is not None and not getattr(module, "_raydiant_padded", False):
                module.forward = types.MethodType(wrap(module.forward), module)
                module._raydiant_padded = True
                patched += 1
    return patched
