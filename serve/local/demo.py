"""`make demo`'s online part: start the service, render through the real DashScope, AceData and
OpenAI SDKs, print the result URLs and where the files are, stop cleanly.

    .venv/bin/python -m serve.local.demo
"""

from __future__ import annotations

import os
from pathlib import Path

from serve.local.service import local_service

DEMO_KEY = "demo-key"


def main() -> None:
    work = Path("var/demo-serve").resolve()
    print("starting raydiant serve (local Ray, tiny models, SQLite tasks, ./var storage) ...", flush=True)
    with local_service(work, api_keys=DEMO_KEY) as service:
        os.environ["DASHSCOPE_API_KEY"] = DEMO_KEY
        import dashscope
        from dashscope import ImageSynthesis

        dashscope.base_http_api_url = f"{service.url}/api/v1"
        print(f"serving at {service.url}; DashScope base {dashscope.base_http_api_url}")
        for model, size, extra in [("flux-schnell", "1024*1024", {}),
                                   ("stable-diffusion-xl", "1024*1024", {"steps": 4, "scale": 7})]:
            rsp = ImageSynthesis.call(model=model, prompt="a lighthouse on a cliff at sunset, oil painting",
                                      n=2, seed=42, size=size, **extra)
            print(f"\n{model}: task {rsp.output.task_id} {rsp.output.task_status}")
            for result in rsp.output.results:
                url = result["url"] if isinstance(result, dict) else result.url
                seed = result["seed"] if isinstance(result, dict) else result.seed
                print(f"  seed {seed}: {url}")
            print(f"  files: {work / 'var' / 'results' / 'tasks' / rsp.output.task_id}/")
        from acedatacloud import AceDataCloud

        with AceDataCloud(api_token=DEMO_KEY, base_url=service.url) as client:
            task = client.flux.generate(action="generate", prompt="a red fox in the snow", size="16:9", count=2,
                                        model="flux-pro", wait=True, poll_interval=1)
            print(f"\nAceData flux-pro (-> flux-dev), 16:9: task {task.id}")
            for url in task.urls():
                print(f"  {url}")
        from openai import OpenAI

        client = OpenAI(api_key=DEMO_KEY, base_url=f"{service.url}/v1")
        answer = client.images.generate(model="gpt-image-1", prompt="a paper boat on a pond", n=2, size="512x512",
                                        extra_body={"seed": 3})
        print("\nOpenAI images.generate gpt-image-1 (-> flux-schnell), 512x512:")
        for image in answer.data:
            print(f"  {image.url}")
        print(f"\nthe web page was at {service.url}/ (key {DEMO_KEY}); `raydiant serve` keeps it up")
        print("\nstopping (Serve drains in-flight requests) ...", flush=True)
    print("stopped.")


if __name__ == "__main__":
    main()
