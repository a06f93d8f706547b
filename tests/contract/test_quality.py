"""`quality` through every door, with the real SDKs: `fast` (a step cache) on a many-step model
reaches the render (the PNG says so), `lossless` is the default, OpenAI's own quality values
are taken and render lossless, a distilled model renders `fast` lossless, and a bad value is
the door's 400 naming the field."""

from __future__ import annotations

import io

import dashscope
import httpx
import openai
from acedatacloud import AceDataCloud
from dashscope import ImageSynthesis
from PIL import Image

from tests.contract.conftest import LORA_KEY


def png_quality(url: str) -> str:
    return Image.open(io.BytesIO(httpx.get(url, timeout=30).content)).text["quality"]


def test_dashscope_parameters_quality(service, base_url):
    dashscope.base_http_api_url = base_url
    common = dict(api_key=LORA_KEY, prompt="a harbour", size="512*1024", steps=8, seed=3)
    fast = ImageSynthesis.call(model="flux-dev", quality="fast", **common)
    plain = ImageSynthesis.call(model="flux-dev", **common)
    distilled = ImageSynthesis.call(model="flux-schnell", quality="fast", **common)
    assert [png_quality(r.output.results[0].url) for r in (fast, plain, distilled)] == ["fast", "lossless", "lossless"]
    refused = httpx.post(f"{base_url}/services/aigc/text2image/image-synthesis", timeout=30,
                         headers={"Authorization": f"Bearer {LORA_KEY}"},
                         json={"model": "flux-dev", "input": {"prompt": "x"}, "parameters": {"quality": "turbo"}})
    assert refused.status_code == 400 and refused.json()["code"] == "InvalidParameter"
    assert "parameters.quality must be lossless or fast, got 'turbo'" in refused.json()["message"]


def test_openai_quality_ours_and_openais(service):
    client = openai.OpenAI(api_key=LORA_KEY, base_url=f"{service.url}/v1", max_retries=0, timeout=120)
    ours = client.images.generate(model="flux-dev", prompt="a harbour", size="512x1024", quality="fast",
                                  extra_body={"steps": 8})
    theirs = client.images.generate(model="flux-dev", prompt="a harbour", size="512x1024", quality="hd",
                                    extra_body={"steps": 8})
    assert [png_quality(a.data[0].url) for a in (ours, theirs)] == ["fast", "lossless"]


def test_acedata_quality(service):
    client = AceDataCloud(api_token=LORA_KEY, base_url=service.url)
    task = client.flux.generate(action="generate", prompt="a harbour", size="512x1024", model="flux-dev",
                                quality="fast", wait=True, poll_interval=0.5)
    assert png_quality(task.urls()[0]) == "fast"
