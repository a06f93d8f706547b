"""Masks: where an inpaint repaints, in the one form the core reads.

A door takes a caller's mask in its API's convention and makes it canonical once (`canonical`):
an 8-bit grayscale PNG of the input image's size, 255 where the model repaints and 0 where the
input's pixels are kept, exactly (`composite`, after the pipeline). The conventions:

- "alpha" (OpenAI's `images.edit(mask=...)`): the transparent pixels (alpha below 128) are the
  area to edit; a mask without an alpha channel is refused, since it cannot say anything.
- "white" (DashScope's and AceData's extension fields, as in DashScope's own mask edits): white
  (luminance 128 or more) is repainted, black kept.

A mask's bytes are checked by the caller (header and pixel count, cluster/storage/guarded_fetch.py)
before they are decoded here.
"""

from __future__ import annotations

import io
from typing import Literal

from PIL import Image

from cluster.images.encoding import decode

Convention = Literal["alpha", "white"]
REPAINT, KEEP = 255, 0


class MaskError(ValueError):
    """Why a mask cannot be used (the words that follow the field's name)."""


def canonical(data: bytes, convention: Convention, size: tuple[int, int]) -> bytes:
    """The caller's mask in `convention` as the canonical PNG, for an input image of `size`."""
    try:
        image = decode(data)
    except Exception:  # noqa: BLE001 - anything undecodable is the caller's error
        raise MaskError("cannot be decoded as an image") from None
    if image.size != size:
        raise MaskError(f"is {image.width}x{image.height}; it must be the input image's size, {size[0]}x{size[1]}")
    if convention == "alpha":
        if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
            raise MaskError("has no alpha channel: its transparent pixels are the area to edit")
        repaint = image.convert("RGBA").getchannel("A").point(lambda a: REPAINT if a < 128 else KEEP)
    else:
        repaint = image.convert("L").point(lambda v: REPAINT if v >= 128 else KEEP)
    if repaint.getextrema() == (KEEP, KEEP):
        raise MaskError("marks nothing to repaint" + (" (no transparent pixel)" if convention == "alpha" else
                                                      " (no white pixel)"))
    buffer = io.BytesIO()
    repaint.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def read(data: bytes, size: tuple[int, int]) -> Image.Image:
    """A canonical mask at the render size (nearest neighbour: it stays two-valued)."""
    mask = decode(data).convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return mask.point(lambda v: REPAINT if v >= 128 else KEEP)


def composite(generated: Image.Image, original: Image.Image, mask: Image.Image) -> Image.Image:
    """The generated pixels where the mask repaints, the original's everywhere else, exactly."""
    return Image.composite(generated.convert("RGB"), original.convert("RGB"), mask)
