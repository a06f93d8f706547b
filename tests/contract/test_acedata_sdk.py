"""The AceData Flux contract (shared/contracts/acedata.md), checked with the real `acedatacloud`
SDK from PyPI as the client, and raw HTTP for what the SDK does not send, against the shared
running service on loopback. Validation cases: tests/unit/serve/doors/acedata/test_service.py."""

from __future__ import annotations

import io

import httpx
import pytest
from acedatacloud import AceDataCloud
from acedatacloud._runtime.errors import AuthenticationError, ValidationError
from PIL import Image

from tests.contract.conftest import ACEDATA_KEY, LIMITED_KEY, OTHER_KEY, RATE_BURST


@pytest.fixture(scope="module")
def client(service):
    with AceDataCloud(api_token=ACEDATA_KEY, base_url=service.url, max_retries=0) as sdk:
        yield sdk


def image(url: str) -> Image.Image:
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(answer.content))


def post(service, path, body, key=ACEDATA_KEY, **kwargs):
    return httpx.post(f"{service.url}{path}", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {key}"} | kwargs.pop("headers", {}), **kwargs)


# --- the SDK ----------------------------------------------------------------------------------


def test_generate_async_then_wait(client):
    handle = client.flux.generate(action="generate", prompt="a lighthouse", size="1024x1024", model="flux-dev")
    assert handle.id and not handle.done  # the SDK's default: async, answered at once
    state = handle.wait(poll_interval=0.5, max_wait=120)
    assert handle.done and len(handle.urls()) == 1
    assert state["response"]["success"] is True and state["request"]["prompt"] == "a lighthouse"
    assert image(handle.urls()[0]).size == (1024, 1024)


def test_count_and_aspect_ratio(client):
    handle = client.flux.generate(action="generate", prompt="a fox", size="16:9", count=3, model="flux-pro",
                                  seed=100, wait=True, poll_interval=0.5, max_wait=120)
    data = handle.result()["response"]["data"]
    assert [d["seed"] for d in data] == [100, 101, 102] and len(set(handle.urls())) == 3
    assert image(handle.urls()[0]).size == (1360, 768)
    assert all(d["timings"]["inference"] > 0 and d["prompt"] == "a fox" for d in data)


def test_edit_with_one_of_our_result_urls(client):
    source = client.flux.generate(action="generate", prompt="a blue square", size="1:1", wait=True,
                                  poll_interval=0.5, max_wait=120)
    edited = client.flux.generate(action="edit", prompt="make it red", size="1024x1024", model="flux-kontext-pro",
                                  image_url=source.urls()[0], wait=True, poll_interval=0.5, max_wait=120)
    assert edited.result()["response"]["success"] is True and len(edited.urls()) == 1
    assert edited.urls() != source.urls() and image(edited.urls()[0]).size == (1024, 1024)


def test_sdk_raises_the_mapped_errors(service, client):
    with pytest.raises(ValidationError) as bad:
        client.flux.generate(action="generate", prompt="x", size="100x100")
    assert bad.value.status_code == 400 and bad.value.code == "bad_request" and "100*100" in bad.value.message
    with AceDataCloud(api_token="wrong", base_url=service.url, max_retries=0) as stranger:
        with pytest.raises(AuthenticationError) as refused:
            stranger.flux.generate(action="generate", prompt="x", size="1:1")
    assert refused.value.status_code == 401 and refused.value.code == "invalid_token"


# --- raw HTTP ---------------------------------------------------------------------------------


def test_synchronous_generate_retrieve_and_batch(service):
    answer = post(service, "/flux/images", {"action": "generate", "prompt": "a teapot", "size": "3:2", "count": 2})
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is True and body["task_id"] and body["trace_id"] and len(body["data"]) == 2
    assert image(body["data"][1]["image_url"]).size == (1248, 832)
    item = post(service, "/flux/tasks", {"action": "retrieve", "id": body["task_id"]}).json()
    assert item["id"] == body["task_id"] and item["response"] == body and item["request"]["size"] == "3:2"
    pending = post(service, "/flux/images", {"action": "generate", "prompt": "later", "async": True}).json()
    batch = post(service, "/flux/tasks", {"action": "retrieve_batch",
                                          "ids": [body["task_id"], pending["task_id"], "missing"]}).json()
    assert batch["count"] == 2 and [i["id"] for i in batch["items"]] == [body["task_id"], pending["task_id"]]
    assert all("response" in i for i in batch["items"])  # null while running, never absent


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"action": "generate", "prompt": ""}, 400, "bad_request"),
    ({"action": "generate", "prompt": "x", "size": "wide"}, 400, "bad_request"),
    ({"action": "edit", "prompt": "x", "model": "flux-kontext-pro"}, 400, "bad_request"),
    ({"action": "edit", "prompt": "x", "model": "flux-kontext-pro", "image_url": "http://169.254.169.254/x"},
     400, "bad_request"),
    ({"action": "generate", "prompt": "x", "model": "midjourney"}, 400, "bad_request"),
])
def test_error_shape(service, body, status, code):
    answer = post(service, "/flux/images", body)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert error["success"] is False and error["error"]["code"] == code and error["error"]["message"]
    assert error["trace_id"]


def test_auth_body_and_unknown_task_errors(service):
    assert post(service, "/flux/images", {"action": "generate", "prompt": "x"}, key="nope").json()["error"][
        "code"] == "invalid_token"
    too_big = httpx.post(f"{service.url}/flux/images", content=b"{" + b" " * (13 * 1024 * 1024) + b"}",
                         headers={"Authorization": f"Bearer {ACEDATA_KEY}"}, timeout=60)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "bad_request"
    garbage = httpx.post(f"{service.url}/flux/images", content=b"{oops", timeout=30,
                         headers={"Authorization": f"Bearer {ACEDATA_KEY}"})
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "bad_request"
    unknown = post(service, "/flux/tasks", {"action": "retrieve", "id": "no-such-task"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


def test_another_key_cannot_retrieve(service):
    mine = post(service, "/flux/images", {"action": "generate", "prompt": "private", "async": True}).json()
    theirs = post(service, "/flux/tasks", {"action": "retrieve", "id": mine["task_id"]}, key=OTHER_KEY)
    assert theirs.status_code == 404
    batch = post(service, "/flux/tasks", {"action": "retrieve_batch", "ids": [mine["task_id"]]}, key=OTHER_KEY)
    assert batch.json() == {"items": [], "count": 0}


def test_rate_limit_429_with_retry_after(service):
    """The key may send RATE_BURST requests in any 100 s: one more is refused, whatever the speed."""
    with httpx.Client(headers={"Authorization": f"Bearer {LIMITED_KEY}"}, timeout=30) as session:
        answers = [session.post(f"{service.url}/flux/tasks", json={"action": "retrieve", "id": "x"})
                   for _ in range(RATE_BURST + 1)]
    assert [a.status_code for a in answers[:RATE_BURST]] == [404] * RATE_BURST
    throttled = answers[-1]
    assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "too_many_requests"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 100


def test_an_edit_on_a_text_to_image_model_repaints_only_where_the_mask_is_white(client):
    """Extensions: `mask_image_url` (white repaints, the image's size), `strength` and
    `output_format`, sent through the SDK as any other field."""
    import base64

    import numpy as np

    source = client.flux.generate(action="generate", prompt="a field", size="512x512", model="flux-schnell",
                                  wait=True, poll_interval=0.5, max_wait=120)
    source_url = source.urls()[0]
    mask = Image.new("L", (512, 512), 0)
    mask.paste(255, (0, 0, 256, 512))  # the left half white: repainted
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    mask_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    edited = client.flux.generate(action="edit", prompt="a red barn", size="512x512", model="flux-schnell",
                                  image_url=source_url, mask_image_url=mask_url, strength=1.0,
                                  wait=True, poll_interval=0.5, max_wait=120)
    before, after = (np.asarray(image(url).convert("RGB")) for url in (source_url, edited.urls()[0]))
    assert np.array_equal(after[:, 256:], before[:, 256:]) and not np.array_equal(after[:, :256], before[:, :256])
    webp = client.flux.generate(action="edit", prompt="at dusk", size="512x512", model="flux-schnell",
                                image_url=source_url, strength=0.4, output_format="webp", wait=True,
                                poll_interval=0.5, max_wait=120)
    answer = httpx.get(webp.urls()[0], timeout=30)
    assert answer.headers["content-type"] == "image/webp"
