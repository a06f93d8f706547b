"""The very Serve config that KubeRay and `serve deploy` get (configs/serve-cluster.yaml, generated
from configs/cluster.yaml), deployed with Ray's own `serve deploy` onto a real local Ray head,
with tiny models for the weights and CPUs for the GPUs: it answers through the real DashScope
SDK. What differs from a GPU cluster is only what this machine lacks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dashscope
import httpx
import yaml
from dashscope import ImageSynthesis

from cluster.runtime.local_ray import private_head
from cluster.runtime.processes import free_ports
from cluster.spec.config import CONFIG_DIR

BIN = Path(sys.executable).parent
KEY = "deploy-key"
TINY = {"flux": "tiny:flux", "flux-kontext": "tiny:flux-kontext", "stable-diffusion-xl": "tiny:sdxl",
        "stable-diffusion-v1.5": "tiny:sd15"}


def tiny_cluster_config(cluster: dict, work: Path) -> dict:
    """configs/cluster.yaml with tiny weights, CPUs for GPUs, and local task store and storage."""
    for name in cluster["models"]:
        family = "flux-kontext" if "kontext" in name else "flux" if name.startswith("flux") else name
        cluster["models"][name] = {"source": TINY[family], "warmup": False}
    for deployment in cluster["serve"]["deployments"].values():
        deployment["ray_actor_options"] = {"num_cpus": 0}
    cluster["tasks"] = {"backend": "sqlite", "path": str(work / "tasks.sqlite")}
    cluster["serve"]["host"] = "127.0.0.1"  # served on loopback here (as http_options below say)
    cluster["storage"] = {"root": str(work / "results"), "signing_key_file": str(work / "signing.key")}
    return cluster


def test_generated_serve_config_deploys_and_answers(tmp_path, monkeypatch):
    config = tmp_path / "cluster-tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_cluster_config(yaml.safe_load((CONFIG_DIR / "cluster.yaml").read_text()),
                                                         tmp_path)))
    serve_config = yaml.safe_load((CONFIG_DIR / "serve-cluster.yaml").read_text())
    serve_port, dashboard = free_ports(2)
    serve_config["http_options"] = {"host": "127.0.0.1", "port": serve_port}
    [app] = serve_config["applications"]
    app["args"]["config"] = str(config)
    for deployment in app["deployments"]:
        if "ray_actor_options" in deployment:
            deployment["ray_actor_options"] = {"num_cpus": 0}  # CPUs for the GPUs
    deployed = tmp_path / "serve-config.yaml"
    deployed.write_text(yaml.safe_dump(serve_config))

    monkeypatch.setenv("RAYDIANT_API_KEYS", KEY)  # where the head runs, as a Secret would put it
    with private_head(num_cpus=2, dashboard_port=dashboard, log_path=tmp_path / "head.log"):
        url = f"http://127.0.0.1:{dashboard}"
        _wait(lambda: httpx.get(f"{url}/api/version", timeout=2).status_code in (200, 401), 120, "dashboard")
        result = subprocess.run([str(BIN / "serve"), "deploy", str(deployed), "--address", url],
                                capture_output=True, text=True, timeout=120,
                                env=os.environ | {"RAY_AUTH_MODE": "token"})
        assert result.returncode == 0, result.stderr
        base = f"http://127.0.0.1:{serve_port}"
        _wait(lambda: httpx.get(f"{base}/healthz", timeout=5).status_code == 200, 240, "the application healthy")
        dashscope.base_http_api_url, dashscope.api_key = f"{base}/api/v1", KEY
        rsp = ImageSynthesis.call(model="flux-schnell", prompt="deployed as on the cluster", n=2, seed=3, steps=1,
                                  size="1024*1024")
        assert rsp.status_code == 200 and rsp.output.task_status == "SUCCEEDED"
        assert [r["seed"] if isinstance(r, dict) else r.seed for r in rsp.output.results] == [3, 4]


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s}s"
        time.sleep(1)
