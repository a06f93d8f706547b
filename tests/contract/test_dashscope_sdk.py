"""The DashScope contract (shared/contracts/dashscope.md), checked with the real `dashscope`
SDK from PyPI as the client, against a running service on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import time

import dashscope
import httpx
import pytest
from dashscope import ImageSynthesis
from dashscope.aigc.image_synthesis import AioImageSynthesis
from dashscope.common.error import InvalidTask
from PIL import Image

from cluster.storage.results import Storage
from tests.contract.conftest import API_KEY, OTHER_KEY


@pytest.fixture(autouse=True)
def sdk(base_url):
    dashscope.base_http_api_url = base_url
    dashscope.api_key = API_KEY
    yield


def item(result, key):
    """A key of a `results[]` item, however this SDK version wraps it."""
    return result[key] if isinstance(result, dict) else getattr(result, key)


def png(url: str) -> Image.Image:
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(answer.content))


def test_call_renders_n_images_with_offset_seeds():
    rsp = ImageSynthesis.call(model="flux-schnell", prompt="a red fox", size="1024*1024", n=3, seed=42)
    assert rsp.status_code == 200 and rsp.output.task_status == "SUCCEEDED"
    results = rsp.output.results
    assert [item(r, "seed") for r in results] == [42, 43, 44]
    assert rsp.usage.image_count == 3
    assert rsp.output.task_metrics == {"TOTAL": 3, "SUCCEEDED": 3, "FAILED": 0}
    image = png(item(results[1], "url"))
    assert image.size == (1024, 1024) and image.text["seed"] == "43" and image.text["prompt"] == "a red fox"
    for field in ("submit_time", "scheduled_time", "end_time"):
        assert getattr(rsp.output, field), field


def test_per_model_defaults_and_scale():
    rsp = ImageSynthesis.call(model="stable-diffusion-xl", prompt="a castle", size="512*768", steps=2,
                              scale=7, negative_prompt="blurry", seed=1)
    assert rsp.output.task_status == "SUCCEEDED"
    meta = png(item(rsp.output.results[0], "url")).text
    assert (meta["guidance"], meta["steps"], meta["negative_prompt"], meta["width"]) == ("7.0", "2", "blurry", "512")
    rsp = ImageSynthesis.call(model="flux-schnell", prompt="a cat", add_sampling_metadata=False, cfg_scale=3,
                              style="<auto>")
    assert rsp.output.task_status == "SUCCEEDED"  # unknown parameters are accepted and ignored
    assert png(item(rsp.output.results[0], "url")).text == {}


def test_async_call_fetch_wait():
    created = ImageSynthesis.async_call(model="flux-schnell", prompt="a lighthouse", size="768*512", steps=2)
    assert created.status_code == 200 and created.output.task_status == "PENDING"
    fetched = ImageSynthesis.fetch(created)
    assert fetched.status_code == 200 and fetched.output.task_status in {"PENDING", "RUNNING", "SUCCEEDED"}
    done = ImageSynthesis.wait(created)
    assert done.output.task_status == "SUCCEEDED" and png(item(done.output.results[0], "url")).size == (768, 512)


def test_unknown_task_is_unknown():
    rsp = ImageSynthesis.fetch("00000000-0000-0000-0000-000000000000")
    assert rsp.status_code == 200 and rsp.output.task_status == "UNKNOWN"


def test_cancel_a_pending_task_and_not_an_ended_one():
    # sd1.5 takes one request at a time here, so the later tasks wait PENDING.
    tasks = [ImageSynthesis.async_call(model="stable-diffusion-v1.5", prompt=f"slow {i}", steps=60, n=4)
             for i in range(3)]
    last = tasks[-1]
    canceled = ImageSynthesis.cancel(last)
    assert canceled.status_code == 200
    assert ImageSynthesis.fetch(last).output.task_status == "CANCELED"
    finished = ImageSynthesis.wait(tasks[0])
    assert finished.output.task_status == "SUCCEEDED"
    refused = ImageSynthesis.cancel(tasks[0])
    assert refused.status_code == 400 and refused.code == "UnsupportedOperation"
    ImageSynthesis.wait(tasks[1])


def test_list_with_filters_and_paging():
    mine = [ImageSynthesis.async_call(model="flux-schnell", prompt=f"list {i}", size="512*1024", steps=1)
            for i in range(3)]
    for task in mine:
        ImageSynthesis.wait(task)
    rsp = ImageSynthesis.list(page_no=1, page_size=2, model_name="flux-schnell", status="SUCCEEDED")
    assert rsp.status_code == 200
    body = rsp.output if isinstance(rsp.output, dict) else json.loads(str(rsp.output))
    assert body["total"] >= 3 and len(body["tasks"]) == 2 and body["page_size"] == 2
    assert all(t["task_status"] == "SUCCEEDED" and t["model_name"] == "flux-schnell" for t in body["tasks"])
    start = time.strftime("%Y%m%d%H%M%S", time.localtime(time.time() + 3600))
    later = ImageSynthesis.list(start_time=start)
    later_body = later.output if isinstance(later.output, dict) else json.loads(str(later.output))
    assert later_body["total"] == 0


def test_aio_call():
    rsp = asyncio.run(AioImageSynthesis.call(model="flux-schnell", prompt="a robot", n=2, seed=7, steps=1))
    assert rsp.output.task_status == "SUCCEEDED" and [item(r, "seed") for r in rsp.output.results] == [7, 8]


def test_v2_client_generate(base_url):
    client = dashscope.Client(api_key=API_KEY, base_url=base_url)
    job = client.images.generate(model="flux-schnell", prompt="a teapot", n=2, size="1024*576", seed=5,
                                 poll_interval=0.5)
    assert len(job.image_urls) == 2
    assert png(job.image_urls[0]).size == (1024, 576)


def test_edit_model_with_data_uri(base_url):
    import base64

    buf = io.BytesIO()
    Image.new("RGB", (512, 512), (20, 120, 200)).save(buf, format="PNG")
    data_uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    body = {"model": "flux-kontext", "input": {"prompt": "make it red", "image_url": data_uri},
            "parameters": {"size": "1024*1024", "steps": 2, "seed": 3}}
    answer = httpx.post(f"{base_url}/services/aigc/image2image/image-synthesis", json=body, timeout=120,
                        headers={"Authorization": f"Bearer {API_KEY}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"]["task_status"] == "SUCCEEDED"


def test_synchronous_create_without_async_header(base_url):
    answer = httpx.post(f"{base_url}/services/aigc/text2image/image-synthesis", timeout=120,
                        headers={"Authorization": f"Bearer {API_KEY}"},
                        json={"model": "flux-schnell", "input": {"prompt": "a bowl of fruit"}, "parameters": {}})
    assert answer.status_code == 200
    body = answer.json()
    assert "code" not in body and body["output"]["task_status"] == "SUCCEEDED"
    assert body["output"]["results"][0]["url"].startswith("http://127.0.0.1:")


# --- request-level errors end to end (every validation case: tests/unit/serve/doors/dashscope/test_service.py)


def post_raw(base_url, body, key=API_KEY, content=None):
    headers = {"X-DashScope-Async": "enable", "Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{base_url}/services/aigc/text2image/image-synthesis", headers=headers, timeout=30,
                      content=content if content is not None else json.dumps(body))


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"model": "flux-schnell", "input": {"prompt": "x"}, "parameters": {"size": "100*100"}}, 400, "InvalidParameter"),
    ({"model": "flux-schnell", "input": {}}, 400, "BadRequest.EmptyInput"),
    ({"model": "dall-e-3", "input": {"prompt": "x"}}, 404, "ModelNotFound"),
])
def test_request_errors_on_the_wire(base_url, body, status, code):
    answer = post_raw(base_url, body)
    assert answer.status_code == status and answer.headers["content-type"] == "application/json"
    error = answer.json()
    assert error["code"] == code and error["message"] and error["request_id"]


def test_sdk_sees_error_code():
    with pytest.raises(InvalidTask, match="InvalidParameter"):
        ImageSynthesis.call(model="flux-schnell", prompt="x", size="100*100")


def test_invalid_api_key(base_url):
    for key in ("wrong-key", None):
        answer = post_raw(base_url, {"model": "flux-schnell", "input": {"prompt": "x"}}, key=key)
        assert answer.status_code == 401
        assert answer.json()["code"] == "InvalidApiKey" and answer.json()["message"] == "Invalid API-key provided."
    dashscope.api_key = "wrong-key"
    assert ImageSynthesis.fetch("abc").status_code == 401


def test_malformed_json_is_400_never_500(base_url):
    for content in (b"{not json", b"\xff\xfe", b"[1, 2]", b"null"):
        answer = post_raw(base_url, None, content=content)
        assert answer.status_code == 400 and answer.json()["code"] in {"InvalidParameter", "BadRequest.EmptyModel"}


def test_body_size_limit(base_url):
    answer = post_raw(base_url, None, content=b"{" + b" " * (13 * 1024 * 1024) + b"}")
    assert answer.status_code == 413 and answer.json()["code"] == "InvalidParameter"


# --- signed result URLs --------------------------------------------------------------------


def test_signed_url_tampering_expiry_and_traversal(service):
    rsp = ImageSynthesis.call(model="flux-schnell", prompt="a key", steps=1)
    url = item(rsp.output.results[0], "url")
    assert httpx.get(url).status_code == 200
    tampered = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    answer = httpx.get(tampered)
    assert answer.status_code == 403 and answer.json()["message"] == "the URL signature is invalid"
    other_file = url.replace("/0.png", "/1.png")
    assert httpx.get(other_file).status_code == 403  # a signature is for one file only
    # Correctly signed by the service's own key, for the same file: valid until it expires.
    key = url.split("/files/")[1].split("?")[0]
    storage = Storage(str(service.work / "results"), signing_key=(service.work / "signing.key").read_text().strip().encode())
    base = service.url
    assert httpx.get(storage.url(key, 60, base)).status_code == 200
    answer = httpx.get(storage.url(key, -5, base))  # signed right, expired 5 s ago
    assert answer.status_code == 403 and answer.json()["message"] == "the URL has expired"
    for path in ("/files/../../etc/passwd", "/files/%2e%2e/%2e%2e/etc/passwd", "/files//etc/passwd",
                 "/files/tasks/../../signing.key?expires=9999999999&signature=x"):
        assert httpx.get(service.url + path).status_code in {403, 404}


@pytest.mark.parametrize(("image_url", "words"), [
    ("http://169.254.169.254/latest/meta-data/", "link-local/metadata"),
    ("http://10.20.30.40/cat.png", "non-public address"),
    ("http://[fd00:ec2::254]/", "link-local/metadata"),
])
def test_ssrf_refused_for_private_image_url(base_url, image_url, words):
    body = {"model": "flux-kontext", "input": {"prompt": "x", "image_url": image_url}}
    answer = httpx.post(f"{base_url}/services/aigc/image2image/image-synthesis", json=body, timeout=30,
                        headers={"Authorization": f"Bearer {API_KEY}", "X-DashScope-Async": "enable"})
    assert answer.status_code == 400 and words in answer.json()["message"]


def test_another_key_cannot_see_cancel_or_list_a_task(base_url):
    created = ImageSynthesis.async_call(model="flux-schnell", prompt="mine only", steps=1)
    task_id = created.output.task_id
    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    fetched = httpx.get(f"{base_url}/tasks/{task_id}", headers=other, timeout=30).json()
    assert fetched["output"]["task_status"] == "UNKNOWN"
    canceled = httpx.post(f"{base_url}/tasks/{task_id}/cancel", headers=other, timeout=30)
    assert canceled.status_code == 404
    listed = httpx.get(f"{base_url}/tasks", headers=other, timeout=30).json()
    assert task_id not in {t["task_id"] for t in listed["tasks"]}
    assert ImageSynthesis.wait(created).output.task_status == "SUCCEEDED"


def test_an_input_image_and_a_mask_through_the_sdks_own_fields():
    """A text-to-image model takes the SDK's `base_image_url` (image to image, `strength`) and
    `mask_image_url` (white repaints): outside the mask, the input's pixels exactly."""
    import base64

    import numpy as np

    first = ImageSynthesis.call(model="flux-schnell", prompt="a field", size="768*512", steps=2, seed=3)
    source_url = item(first.output.results[0], "url")
    mask = Image.new("L", (768, 512), 0)
    mask.paste(255, (0, 0, 384, 512))  # the left half white: repainted
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    mask_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    rsp = ImageSynthesis.call(model="flux-schnell", prompt="a red barn", base_image_url=source_url,
                              mask_image_url=mask_url, size="768*512", steps=2, seed=3)
    assert rsp.output.task_status == "SUCCEEDED", rsp
    before, after = (np.asarray(png(url).convert("RGB")) for url in (source_url, item(rsp.output.results[0], "url")))
    assert np.array_equal(after[:, 384:], before[:, 384:]) and not np.array_equal(after[:, :384], before[:, :384])
    rsp = ImageSynthesis.call(model="flux-schnell", prompt="at night", base_image_url=source_url, size="768*512",
                              steps=2, strength=0.5, output_format="jpeg", output_quality=70)
    answer = httpx.get(item(rsp.output.results[0], "url"), timeout=30)
    assert answer.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(answer.content)).format == "JPEG"
    with pytest.raises(InvalidTask, match="parameters.strength must be more than 0 and at most 1"):
        ImageSynthesis.call(model="flux-schnell", prompt="x", base_image_url=source_url, size="768*512", strength=2)
