"""Image encoding, with the sampling parameters written into the file when asked."""

from __future__ import annotations

import io
import json

from PIL import Image, PngImagePlugin

from cluster.spec.loras import AppliedLora
from cluster.spec.request import ImageFormat, ResolvedRequest

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}

# zlib level 1: ~3x faster than PIL's default 6 at 1024*1024 for a few percent more bytes,
# which matters when encoding sits on the render path. Strategy Z_RLE on PNG's filtered rows:
# measured at 1024*1024 on this machine, 72 ms and 2.01 MB for a photo-like image (a gradient
# with noise) against 106 ms and 2.20 MB with the default strategy; 7.4 ms against 8.0 for a
# solid one. Lossless either way: only the bytes change, never the pixels.
PNG_COMPRESS_LEVEL = 1
PNG_STRATEGY_RLE = 3  # zlib's Z_RLE


def sampling_metadata(request: ResolvedRequest, seed: int, loras: tuple[AppliedLora, ...] = ()) -> dict[str, str]:
    """The text chunks written into a PNG (all values as strings, as PNG tEXt requires); `loras`
    (when any) as JSON: path, sha256 and scale of each adapter."""
    extra = {"loras": json.dumps([lora.as_dict() for lora in loras])} if loras else {}
    if request.mode in ("image", "inpaint"):
        extra |= {"mode": request.mode, "strength": str(request.strength)}
    return extra | {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt or "",
        "seed": str(seed),
        "steps": str(request.steps),
        "guidance": str(request.guidance),
        "model": request.model,
        "width": str(request.width),
        "height": str(request.height),
        "quality": request.quality,
        "software": "raydiant",
    }


def encode(image: Image.Image, fmt: ImageFormat = "png", metadata: dict[str, str] | None = None,
           quality: int = 95) -> bytes:
    """`image` as `fmt`: PNG lossless, with `metadata` as text chunks; JPEG and WebP at `quality`."""
    buf = io.BytesIO()
    if fmt == "png":
        info = None
        if metadata:
            info = PngImagePlugin.PngInfo()
            for key, value in metadata.items():
                info.add_itxt(key, value)  # iTXt: UTF-8, so any prompt survives
        image.save(buf, format="PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL, compress_type=PNG_STRATEGY_RLE)
    elif fmt == "jpeg":
        image.convert("RGB").save(buf, format="JPEG", quality=quality)
    else:
        image.save(buf, format="WEBP", quality=quality)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_text(data: bytes) -> dict[str, str]:
    """The text chunks of a PNG (empty when it has none)."""
    return dict(decode(data).text)
