"""LoRA adapters per request through every door, with the real SDKs: DashScope
(`parameters.loras`), OpenAI (`extra_body={"loras": ...}`), AceData (`loras`). Adapters are tiny
ones made on the spot for the tiny FLUX model, from the service's local root and from a loopback
HTTP server (the contract profile allows loopback; private ranges stay refused). Each answer
names the adapters with their sha256, as do the PNGs; a node fetches an adapter once.
"""

from __future__ import annotations

import hashlib
import io
import json

import dashscope
import httpx
import numpy as np
import openai
import pytest
from acedatacloud import AceDataCloud
from dashscope import ImageSynthesis
from PIL import Image

from cluster.doubles.tiny_loras import build_tiny_lora
from tests import hostile_adapters
from tests.contract.conftest import LORA_KEY, OTHER_KEY
from tests.servers import file_server

LOCAL = "./style/pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def adapters(service):
    """A local adapter under the service's root, and another served over HTTP on loopback."""
    local = build_tiny_lora("flux", service.work / "loras" / "style", seed=11)
    remote = build_tiny_lora("flux", service.work / "remote", seed=12)
    pickled = b"\x80\x04\x95 a pickle, whatever its name says"
    with file_server({"/remote.safetensors": remote.read_bytes(), "/model.bin": pickled,
                      "/disguised.safetensors": pickled}) as server:
        yield {"local": local, "remote": remote, "server": server}


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def png_loras(url: str) -> list[dict]:
    return json.loads(Image.open(io.BytesIO(httpx.get(url, timeout=30).content)).text["loras"])


def pixels(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(httpx.get(url, timeout=30).content)).convert("RGB"))


def test_dashscope_parameters_loras_reach_the_pixels_and_the_answer(service, base_url, adapters):
    dashscope.base_http_api_url = base_url
    common = dict(api_key=LORA_KEY, model="flux-schnell", prompt="a lighthouse", n=2, seed=21, size="512*1024",
                  steps=2)
    styled = ImageSynthesis.call(**common, loras=[{"path": LOCAL, "scale": 0.8}])
    plain = ImageSynthesis.call(**common)
    assert styled.status_code == 200 and styled.output.task_status == "SUCCEEDED", styled
    expected = [{"path": LOCAL, "sha256": sha(adapters["local"]), "scale": 0.8}]
    assert styled.output["loras"] == expected  # the SDK keeps the extension
    urls = [r.url for r in styled.output.results]
    assert all(png_loras(url) == expected for url in urls)
    assert not np.array_equal(pixels(urls[0]), pixels(plain.output.results[0].url))


def test_openai_extra_body_loras_from_a_url_fetched_once(service, adapters):
    client = openai.OpenAI(api_key=LORA_KEY, base_url=f"{service.url}/v1", max_retries=0, timeout=120)
    url = f"{adapters['server'].url}/remote.safetensors"
    for seed in (1, 2):  # a second request finds the adapter in the node's cache
        answer = client.images.generate(model="flux-schnell", prompt="a fox", size="512x1024",
                                        extra_body={"seed": seed, "steps": 2, "loras": [{"path": url, "scale": -0.5}]})
        assert answer.model_extra["loras"] == [{"path": url, "sha256": sha(adapters["remote"]), "scale": -0.5}]
    assert adapters["server"].hits["/remote.safetensors"] == 1


def test_acedata_loras_in_the_body_and_in_retrieve(service, adapters):
    client = AceDataCloud(api_token=LORA_KEY, base_url=service.url)
    task = client.flux.generate(action="generate", prompt="a castle", size="1024x1024", model="flux-dev", count=1,
                                loras=[{"path": LOCAL, "scale": 1.0}], wait=True, poll_interval=0.5)
    assert task.urls() and png_loras(task.urls()[0])[0]["sha256"] == sha(adapters["local"])
    item = httpx.post(f"{service.url}/flux/tasks", headers={"Authorization": f"Bearer {LORA_KEY}"},
                      json={"action": "retrieve", "id": task.id}, timeout=30).json()
    assert item["loras"] == [{"path": LOCAL, "sha256": sha(adapters["local"]), "scale": 1.0}]


@pytest.mark.parametrize(("loras", "words"), [
    ([{"path": "../../etc/passwd.safetensors"}], "parameters.loras item 0: path leaves loras.local_root"),
    ([{"path": "http://10.0.0.7/a.safetensors"}], "parameters.loras item 0: path: refusing to connect to a "
                                                  "non-public address"),
    ([{"path": "http://169.254.169.254/a.safetensors"}], "link-local/metadata"),
    ([{"path": "https://example.com/model.bin"}], "pickle file"),
    ([{"path": LOCAL, "scale": 9}], "scale must be -4..4"),
    ([{"path": LOCAL}] * 4, "parameters.loras must be at most 3 for model flux-schnell"),
    ([{"path": LOCAL, "weight": 1}], "unknown field 'weight'"),
    ("not a list", "parameters.loras must be a list"),
])
def test_refused_adapters_get_dashscopes_400_naming_the_field(service, base_url, adapters, loras, words):
    answer = httpx.post(f"{base_url}/services/aigc/text2image/image-synthesis", timeout=30,
                        headers={"Authorization": f"Bearer {LORA_KEY}", "X-DashScope-Async": "enable"},
                        json={"model": "flux-schnell", "input": {"prompt": "x"}, "parameters": {"loras": loras}})
    assert answer.status_code == 400 and answer.json()["code"] == "InvalidParameter", answer.text
    assert words in answer.json()["message"], answer.json()["message"]
    assert adapters["server"].hits["/model.bin"] == 0


def test_a_file_that_is_not_safetensors_fails_its_task_and_is_never_loaded(service, base_url, adapters):
    dashscope.base_http_api_url = base_url
    url = f"{adapters['server'].url}/disguised.safetensors"
    answer = ImageSynthesis.call(api_key=LORA_KEY, model="flux-schnell", prompt="x", steps=2, size="512*1024",
                                 loras=[{"path": url}])
    assert answer.output.task_status == "FAILED" and answer.output.code == "InvalidParameter", answer
    assert "not a safetensors file" in answer.output.message
    assert adapters["server"].hits["/disguised.safetensors"] == 1  # fetched, checked, refused: never loaded


def test_a_compiled_model_swaps_adapters_into_its_slot_through_the_sdk(service, base_url, adapters):
    """flux-compiled: torch.compile'd at start, one adapter slot of rank 8 (cluster/lora/hotswap.py)."""
    dashscope.base_http_api_url = base_url
    wide = build_tiny_lora("flux", service.work / "loras" / "wide", seed=13, rank=8)
    common = dict(api_key=LORA_KEY, model="flux-compiled", prompt="a lighthouse", n=1, seed=5, size="512*1024",
                  steps=2)
    plain = ImageSynthesis.call(**common)
    styled = ImageSynthesis.call(**common, loras=[{"path": LOCAL, "scale": 1.5}])
    again = ImageSynthesis.call(**common)
    for answer in (plain, styled, again):
        assert answer.status_code == 200 and answer.output.task_status == "SUCCEEDED", answer
    assert styled.output["loras"] == [{"path": LOCAL, "sha256": sha(adapters["local"]), "scale": 1.5}]
    plain_pixels, styled_pixels, again_pixels = (pixels(a.output.results[0].url) for a in (plain, styled, again))
    assert not np.array_equal(styled_pixels, plain_pixels) and np.array_equal(again_pixels, plain_pixels)
    # Rank 4 + rank 8 is over the slot's 8: its task fails before any batch, naming the field
    # (as every refusal that needs the adapter's file does).
    over = ImageSynthesis.call(**common, loras=[{"path": LOCAL, "scale": 1.0},
                                                {"path": f"./{wide.parent.name}/{wide.name}", "scale": 1.0}])
    assert over.output.task_status == "FAILED" and over.output.code == "InvalidParameter", over
    assert "loras" in over.output.message and "adding up to 12" in over.output.message, over.output.message


def test_hostile_adapters_never_touch_another_keys_pixels_and_the_replica_stays_healthy(
        service, base_url, flux_renderer):
    """A Control LoRA's norm values and an A matrix wider than its layer (each would change the
    shared base model through diffusers' pipeline-wide loader): each fails its own task naming
    `loras` and the key; another key's identical request renders the same pixels before and after."""
    dashscope.base_http_api_url = base_url
    hostile = service.work / "loras" / "hostile"
    norms, wide = hostile_adapters.with_norms(hostile, flux_renderer), hostile_adapters.wide(hostile, flux_renderer)
    plain = dict(api_key=OTHER_KEY, model="flux-schnell", prompt="a harbour", n=1, seed=8, size="512*1024", steps=2)
    before = ImageSynthesis.call(**plain)
    for path, words in ((norms, "norm_k.weight, not a LoRA A or B matrix"), (wide, "x_embedder of shapes A")):
        for scale in (0.0, 1.0):
            answer = ImageSynthesis.call(api_key=LORA_KEY, model="flux-schnell", prompt="a harbour", n=1, seed=8,
                                         size="512*1024", steps=2,
                                         loras=[{"path": f"./hostile/{path.name}", "scale": scale}])
            assert answer.output.task_status == "FAILED" and answer.output.code == "InvalidParameter", answer
            assert "parameters.loras" in answer.output.message and words in answer.output.message
    after = ImageSynthesis.call(**plain)
    assert np.array_equal(pixels(before.output.results[0].url), pixels(after.output.results[0].url))
    assert httpx.get(f"{service.url}/healthz", timeout=30).status_code == 200


MISSING = "./nowhere/pytorch_lora_weights.safetensors"


def test_a_callers_adapter_error_is_a_4xx_on_every_synchronous_door(service, base_url):
    """Found in the replica (the file is not there), yet the caller's to fix: never a 5xx that
    an SDK would retry."""
    client = openai.OpenAI(api_key=LORA_KEY, base_url=f"{service.url}/v1", max_retries=0, timeout=120)
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(model="flux-schnell", prompt="a fox", size="512x1024",
                               extra_body={"steps": 2, "loras": [{"path": MISSING}]})
    assert refused.value.status_code == 400 and refused.value.body["param"] == "loras", refused.value.body
    assert "no such file" in refused.value.body["message"]
    headers = {"Authorization": f"Bearer {LORA_KEY}"}
    dashscope_sync = httpx.post(f"{base_url}/services/aigc/text2image/image-synthesis", headers=headers, timeout=120,
                                json={"model": "flux-schnell", "input": {"prompt": "x"},
                                      "parameters": {"steps": 2, "size": "512*1024", "loras": [{"path": MISSING}]}})
    assert dashscope_sync.status_code == 400 and dashscope_sync.json()["code"] == "InvalidParameter", dashscope_sync.text
    assert dashscope_sync.json()["message"].startswith("parameters.loras ")
    acedata_sync = httpx.post(f"{service.url}/flux/images", headers=headers, timeout=120,
                              json={"action": "generate", "prompt": "x", "model": "flux-schnell", "size": "512x1024",
                                    "loras": [{"path": MISSING}]})
    assert acedata_sync.status_code == 400 and acedata_sync.json()["error"]["code"] == "bad_request", acedata_sync.text
