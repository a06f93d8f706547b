"""Image files (cluster/images/encoding.py): each format decodes to the picture encoded, and a
PNG carries its sampling parameters (any prompt, in UTF-8) when asked."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from cluster.images.encoding import decode, encode, png_text, sampling_metadata
from cluster.spec.catalogue import CATALOGUE
from cluster.spec.loras import AppliedLora
from cluster.spec.request import RenderRequest


def picture() -> Image.Image:
    pixels = np.zeros((32, 48, 3), dtype=np.uint8)
    pixels[:, :24] = (200, 30, 30)
    return Image.fromarray(pixels)


def test_png_is_lossless_and_the_others_decode_to_the_same_size():
    original = picture()
    assert np.array_equal(np.asarray(decode(encode(original, "png"))), np.asarray(original))
    for fmt, magic in (("jpeg", b"\xff\xd8"), ("webp", b"RIFF")):
        data = encode(original, fmt)
        assert data.startswith(magic) and decode(data).size == (48, 32), fmt


def test_a_png_carries_its_sampling_parameters_and_adapters():
    request = CATALOGUE["flux-schnell"].resolve(RenderRequest(model="flux-schnell", prompt="un renard 🦊 ü", seed=9,
                                                              width=512, height=512))
    lora = AppliedLora("org/style", "ab" * 32, 0.5)
    text = png_text(encode(picture(), "png", sampling_metadata(request, 10, (lora,))))
    assert text["prompt"] == "un renard 🦊 ü" and text["seed"] == "10" and text["model"] == "flux-schnell"
    assert (text["width"], text["height"], text["software"]) == ("512", "512", "raydiant")
    assert json.loads(text["loras"]) == [{"path": "org/style", "sha256": "ab" * 32, "scale": 0.5}]
    assert png_text(encode(picture(), "png")) == {}  # without metadata: none
