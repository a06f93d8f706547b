"""A restarted service still answers for tasks finished before (durable store + storage)."""

from __future__ import annotations

import httpx

from tests.servers import raydiant_service

CONFIG = """
models:
  flux-schnell: {{source: "tiny:flux", warmup: false}}
tasks: {{path: "{work}/tasks.sqlite"}}
storage: {{root: "{work}/results", signing_key_file: "{work}/signing.key"}}
"""
AUTH = {"Authorization": "Bearer restart-key"}


def test_finished_tasks_survive_a_restart(tmp_path):
    config = CONFIG.format(work=tmp_path)
    with raydiant_service(tmp_path, config, api_keys="restart-key") as first:
        created = httpx.post(f"{first.url}/api/v1/services/aigc/text2image/image-synthesis", headers=AUTH,
                             json={"model": "flux-schnell", "input": {"prompt": "durable"},
                                   "parameters": {"steps": 1, "seed": 9}}, timeout=120).json()
        task_id = created["output"]["task_id"]
        before = httpx.get(created["output"]["results"][0]["url"]).content
    with raydiant_service(tmp_path, config, api_keys="restart-key") as second:
        output = httpx.get(f"{second.url}/api/v1/tasks/{task_id}", headers=AUTH).json()["output"]
        assert output["task_status"] == "SUCCEEDED" and output["results"][0]["seed"] == 9
        assert httpx.get(output["results"][0]["url"]).content == before
