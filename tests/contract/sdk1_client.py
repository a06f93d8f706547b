"""Run by test_dashscope_sdk_1x.py with the 1.x SDK first on PYTHONPATH; prints one JSON line."""

import json
import sys

import dashscope
from dashscope import ImageSynthesis

dashscope.base_http_api_url, dashscope.api_key = sys.argv[1], sys.argv[2]
rsp = ImageSynthesis.call(model="flux-schnell", prompt="a fox", n=2, seed=11, size="1024*1024", steps=1)
created = ImageSynthesis.async_call(model="stable-diffusion-xl", prompt="a cat", steps=1, size="512*512")
waited = ImageSynthesis.wait(created)
unknown = ImageSynthesis.fetch("no-such-task")
print(json.dumps({
    "version": dashscope.__version__,
    "status": rsp.output.task_status,
    "seeds": [r["seed"] if isinstance(r, dict) else r.seed for r in rsp.output.results],
    "urls": [r["url"] if isinstance(r, dict) else r.url for r in rsp.output.results],
    "async": waited.output.task_status,
    "unknown": unknown.output.task_status,
}))
