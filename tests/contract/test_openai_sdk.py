"""The OpenAI Images contract (shared/contracts/openai.md), checked with the real `openai` SDK
as the client, against the running contract service on loopback."""

from __future__ import annotations

import base64
import io
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.contract.conftest import OPENAI_KEY, OPENAI_LIMITED_KEY, RATE_BURST


@pytest.fixture(scope="module")
def client(service) -> openai.OpenAI:
    return openai.OpenAI(api_key=OPENAI_KEY, base_url=f"{service.url}/v1", max_retries=0, timeout=120)


def fetched(url: str) -> Image.Image:
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(answer.content))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_generate_n_images_as_urls(client, n):
    answer = client.images.generate(model="flux-schnell", prompt=f"a lighthouse {n}", n=n, size="512x512",
                                    extra_body={"seed": 10, "steps": 2})
    assert answer.created > 0 and len(answer.data) == n
    images = [fetched(item.url) for item in answer.data]
    assert all(image.size == (512, 512) for image in images)
    assert [int(image.text["seed"]) for image in images] == list(range(10, 10 + n))  # image i: seed + i
    assert [item.model_extra["seed"] for item in answer.data] == list(range(10, 10 + n))


def test_b64_json_equals_the_url_image(client):
    common = dict(model="gpt-image-1", prompt="a red barn", size="512x512", extra_body={"seed": 5, "steps": 2})
    encoded = client.images.generate(response_format="b64_json", **common)
    linked = client.images.generate(response_format="url", **common)
    assert linked.data[0].url and encoded.data[0].b64_json and encoded.data[0].url is None
    png = Image.open(io.BytesIO(base64.b64decode(encoded.data[0].b64_json)))
    assert np.array_equal(np.asarray(png), np.asarray(fetched(linked.data[0].url)))


def test_extensions_reach_the_renderer(client):
    answer = client.images.generate(
        model="flux-schnell", prompt="a harbour", size="768x512", quality="hd", style="vivid", user="someone",
        extra_body={"seed": 123, "steps": 3, "guidance": 2.5, "negative_prompt": "fog"})
    text = fetched(answer.data[0].url).text  # sampling metadata written into the PNG
    assert (text["seed"], text["steps"], text["guidance"], text["negative_prompt"], text["width"]) == (
        "123", "3", "2.5", "fog", "768")


def test_edit_with_an_uploaded_image(client):
    source = io.BytesIO()
    Image.new("RGB", (512, 512), (30, 90, 200)).save(source, format="PNG")
    source.name = "input.png"
    source.seek(0)
    answer = client.images.edit(model="flux-kontext-pro", image=source, prompt="make it sunset", size="512x512",
                                extra_body={"steps": 2})
    assert len(answer.data) == 1 and fetched(answer.data[0].url).size == (512, 512)
    source.seek(0)
    listed = client.images.edit(model="flux-kontext", image=[source], prompt="make it night", size="512x512",
                                response_format="b64_json", extra_body={"steps": 2})  # sent as image[]
    assert base64.b64decode(listed.data[0].b64_json).startswith(b"\x89PNG")


def upload(image: Image.Image, name: str) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.name = name
    buffer.seek(0)
    return buffer


def noisy(size: int = 512) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def transparent_left_half(size: int = 512) -> Image.Image:
    """OpenAI's mask convention: the transparent pixels are the area to change."""
    rgba = np.full((size, size, 4), 255, np.uint8)
    rgba[:, : size // 2, 3] = 0
    return Image.fromarray(rgba, "RGBA")


def test_an_edit_with_a_mask_changes_only_the_transparent_area(client):
    """images.edit(image, mask) on a text-to-image model inpaints: every pixel outside the mask
    comes back exactly as sent."""
    source = noisy()
    answer = client.images.edit(model="flux-schnell", image=upload(source, "in.png"), prompt="a red door",
                                mask=upload(transparent_left_half(), "mask.png"), size="512x512",
                                response_format="b64_json", extra_body={"steps": 2, "seed": 4})
    result = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json))).convert("RGB"))
    assert np.array_equal(result[:, 256:], np.asarray(source)[:, 256:])  # kept, exactly
    assert not np.array_equal(result[:, :256], np.asarray(source)[:, :256])  # repainted
    assert answer.output_format == "png"


def test_image_to_image_with_a_strength_in_the_format_asked(client):
    source = noisy()
    answer = client.images.edit(model="flux-schnell", image=upload(source, "in.png"), prompt="a sunset",
                                size="512x512", output_format="webp", output_compression=80,
                                extra_body={"steps": 2, "seed": 4, "strength": 0.5})
    fetched_webp = httpx.get(answer.data[0].url, timeout=30)
    assert fetched_webp.headers["content-type"] == "image/webp" and answer.output_format == "webp"
    assert Image.open(io.BytesIO(fetched_webp.content)).format == "WEBP"
    generated = client.images.generate(model="flux-schnell", prompt="a harbour", size="512x512",
                                       output_format="jpeg", response_format="b64_json", extra_body={"steps": 2})
    assert Image.open(io.BytesIO(base64.b64decode(generated.data[0].b64_json))).format == "JPEG"


@pytest.mark.parametrize(("call", "param", "words"), [
    (dict(model="flux-schnell", mask=lambda: upload(transparent_left_half(256), "m.png")), "mask",
     "must be the input image's size, 512x512"),
    (dict(model="flux-schnell", mask=lambda: upload(Image.new("RGB", (512, 512)), "m.png")), "mask", "no alpha channel"),
    (dict(model="flux-kontext", mask=lambda: upload(transparent_left_half(), "m.png")), "mask", "edits the whole image"),
    (dict(model="flux-schnell", extra_body={"strength": 1.5}), "strength", "at most 1"),
    (dict(model="flux-schnell", output_format="gif"), "output_format", "png, jpeg, webp"),
    (dict(model="flux-schnell", output_compression=101), "output_compression", "0..100"),
])
def test_what_an_edit_cannot_take_is_a_400_naming_it(client, call, param, words):
    call = {k: v() if callable(v) else v for k, v in call.items()}
    with pytest.raises(openai.BadRequestError) as bad:
        client.images.edit(image=upload(noisy(), "in.png"), prompt="x", size="512x512", **call)
    assert bad.value.body["param"] == param and words in bad.value.body["message"], bad.value.body


def test_a_streamed_generation_sends_its_previews_then_the_image_it_would_have_sent_anyway(client):
    common = dict(model="flux-schnell", prompt="a lighthouse", size="512x512", extra_body={"seed": 9, "steps": 4})
    events = list(client.images.generate(stream=True, partial_images=3, **common))
    assert [e.type for e in events] == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]
    assert [e.partial_image_index for e in events[:3]] == [0, 1, 2]
    previews = [Image.open(io.BytesIO(base64.b64decode(e.b64_json))) for e in events[:3]]
    assert all(preview.size == (512, 512) for preview in previews)
    plain = client.images.generate(response_format="b64_json", **common)
    assert base64.b64decode(events[-1].b64_json) == base64.b64decode(plain.data[0].b64_json)  # bit for bit
    edited = list(client.images.edit(model="flux-schnell", image=upload(noisy(), "in.png"), prompt="at dusk",
                                     size="512x512", stream=True, partial_images=1,
                                     extra_body={"steps": 4, "strength": 0.8}))
    assert [e.type for e in edited] == ["image_edit.partial_image", "image_edit.completed"]


def test_a_client_that_leaves_a_stream_cancels_its_task(service):
    """The SIMULATED GPU takes 2 s for the image: the client reads the stream's headers, waits
    for the render to begin, hangs up, and the task ends CANCELED rather than rendering for nobody."""
    prompt = f"left {uuid.uuid4()}"
    with httpx.stream("POST", f"{service.url}/v1/images/generations", timeout=30,
                      headers={"Authorization": f"Bearer {OPENAI_KEY}"},
                      json={"model": "sim-steps", "prompt": prompt, "size": "768x512", "stream": True}) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        deadline = time.monotonic() + 30
        while _task_status(service, prompt) != "RUNNING":  # the render began: the hang-up lands mid-work
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.05)
    deadline = time.monotonic() + 30
    while (status := _task_status(service, prompt)) != "CANCELED":
        assert status == "RUNNING" and time.monotonic() < deadline, status
        time.sleep(0.05)


def _task_status(service, prompt: str) -> str | None:
    import sqlite3

    with sqlite3.connect(Path(service.work) / "tasks.sqlite") as db:
        rows = db.execute("SELECT status FROM tasks WHERE json_extract(body, '$.request.prompt') = ?",
                          (prompt,)).fetchall()
    return rows[0][0] if rows else None


def test_errors_in_openais_shape(service, client):
    with pytest.raises(openai.BadRequestError) as bad:
        client.images.generate(model="flux-schnell", prompt="x", size="100x100")
    assert bad.value.status_code == 400 and bad.value.body["param"] == "size"
    assert bad.value.body["type"] == "invalid_request_error" and "100*100" in bad.value.body["message"]
    with pytest.raises(openai.BadRequestError) as empty:
        client.images.generate(model="flux-schnell", prompt=" ")
    assert empty.value.body["param"] == "prompt"
    with pytest.raises(openai.NotFoundError) as missing:
        client.images.generate(model="dall-e-3", prompt="x")
    assert missing.value.body["code"] == "model_not_found" and "dall-e-3" in missing.value.body["message"]
    stranger = openai.OpenAI(api_key="not-a-key", base_url=f"{service.url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        stranger.images.generate(model="flux-schnell", prompt="x")
    assert denied.value.status_code == 401 and denied.value.body["code"] == "invalid_api_key"


def test_rate_limit_is_429_with_retry_after(service):
    limited = openai.OpenAI(api_key=OPENAI_LIMITED_KEY, base_url=f"{service.url}/v1", max_retries=0)
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(RATE_BURST + 1):  # the window's whole budget, then one more
            limited.models.list()
    assert refused.value.status_code == 429 and int(refused.value.response.headers["retry-after"]) >= 1
    assert refused.value.body["code"] == "rate_limit_exceeded"


def test_a_retried_request_renders_once(service):
    # The SDK gives up waiting after 0.8 s and retries; the render (SIMULATED GPU) takes 2 s.
    impatient = openai.OpenAI(api_key=OPENAI_KEY, base_url=f"{service.url}/v1", max_retries=5, timeout=0.8)
    prompt = f"retried {uuid.uuid4()}"
    answer = impatient.images.generate(model="sim-steps", prompt=prompt, size="768x512")
    assert len(answer.data) == 1
    assert _tasks_with_prompt(service, prompt) == 1


def test_idempotency_key_returns_the_same_images(client, service):
    prompt, key = f"keyed {uuid.uuid4()}", f"k-{uuid.uuid4()}"
    first = client.images.generate(model="flux-schnell", prompt=prompt, size="512x512",
                                   extra_body={"steps": 2}, extra_headers={"Idempotency-Key": key})
    again = client.images.generate(model="flux-schnell", prompt=prompt, size="512x512",  # after the first answered
                                   extra_body={"steps": 2}, extra_headers={"Idempotency-Key": key})
    assert again.data[0].url == first.data[0].url and _tasks_with_prompt(service, prompt) == 1
    # The same key with another body is the client's bug: a 409, not the first task's images.
    with pytest.raises(openai.ConflictError) as reused:
        client.images.generate(model="flux-schnell", prompt=f"{prompt} and more", size="512x512",
                               extra_body={"steps": 2}, extra_headers={"Idempotency-Key": key})
    assert reused.value.body["code"] == "idempotency_key_reused" and reused.value.body["param"] == "Idempotency-Key"


def _tasks_with_prompt(service, prompt: str) -> int:
    """Records of `prompt` in the service's task store, read from its SQLite file."""
    import sqlite3

    with sqlite3.connect(Path(service.work) / "tasks.sqlite") as db:
        [(count,)] = db.execute("SELECT COUNT(*) FROM tasks WHERE json_extract(body, '$.request.prompt') = ?",
                                (prompt,)).fetchall()
    return count
