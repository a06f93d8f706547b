"""One running service (real Ray, real Serve, real HTTP on loopback) for every contract suite:
DashScope (both SDK lines), AceData, OpenAI, the webhooks, progress and cancel, and the page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from serve.secrets import new_webhook_secret
from tests.servers import raydiant_service

API_KEY = "contract-key"  # the DashScope suites
ACEDATA_KEY = "acedata-key"
HOOK_KEY = "hook-key"
OTHER_KEY = "second-key"  # ownership: must not see the others' tasks
LIMITED_KEY = "limited-key"  # spends its rate limit in one test
OPENAI_KEY = "openai-key"
OPENAI_LIMITED_KEY = "openai-limited-key"  # spends its rate limit in one test
PAGE_KEY = "page-key"  # the web page in a browser
# Suites that poll fast have keys of their own, so their polling never spends another suite's budget.
PROGRESS_KEY = "progress-key"
CANCEL_KEY = "cancel-key"
LORA_KEY = "lora-key"
FLOOD_KEY = "flood-key"  # fills its share of a model's queue
QUIET_KEY = "quiet-key"  # one request beside the flood
FLOOD_IMAGES_KEY = "flood-images-key"  # floods with 1- and 4-image tasks
QUIET_IMAGES_KEY = "quiet-images-key"
FILES_KEY = "files-key"  # batch input files
KEYS = [API_KEY, ACEDATA_KEY, HOOK_KEY, OTHER_KEY, LIMITED_KEY, OPENAI_KEY, OPENAI_LIMITED_KEY, PAGE_KEY,
        PROGRESS_KEY, CANCEL_KEY, FLOOD_KEY, QUIET_KEY, LORA_KEY, FLOOD_IMAGES_KEY, QUIET_IMAGES_KEY, FILES_KEY]
WEBHOOK_SECRET = new_webhook_secret()
RATE_BURST = 200  # per key, in any window of 100 s: a test can spend it deterministically

CONFIG = """
models:
  flux-schnell: {{source: "tiny:flux"}}
  flux-dev: {{source: "tiny:flux", warmup: false}}
  stable-diffusion-xl: {{source: "tiny:sdxl"}}
  stable-diffusion-v1.5: {{source: "tiny:sd15", warmup: false}}
  flux-kontext: {{source: "tiny:flux-kontext", max_batch_size: 2}}
  # Compiled at start (about 20 s here), with an adapter slot: LoRA requests swap into it.
  flux-compiled: {{source: "tiny:flux", like: flux-schnell, compile: true, compile_sizes: ["512*1024"],
                  max_batch_size: 1, warmup: false, max_loras: 2, lora_rank: 8}}
  # SIMULATED GPUs, one image at a time: 2 s per image whatever the steps (0.1 s a step at 20
  # steps), and 0.4 s per image for queues that must move.
  sim-steps: {{source: "sim:flux", like: flux-schnell, max_batch_size: 1, simulated: {{base_s: 0, per_image_s: 2.0}}}}
  sim-queue: {{source: "sim:flux", like: flux-schnell, max_batch_size: 1, simulated: {{base_s: 0, per_image_s: 0.4}}}}
  # Device batches of 4 at 0.45 s: fair shares counted in images, whatever a task's n.
  sim-batch4: {{source: "sim:flux", like: flux-schnell, max_batch_size: 4, simulated: {{base_s: 0.25, per_image_s: 0.05}}}}
serve:
  rate_limit: {{requests_per_second: 2, burst: {burst}}}
  model_aliases: {{flux-pro: flux-dev, flux-kontext-pro: flux-kontext, flux-kontext-max: flux-kontext,
                  gpt-image-1: flux-schnell}}
  files: {{max_bytes: 1048576, max_lines: 1000}}  # small: test_openai_files.py passes them
  fetch: {{allow_loopback: true}}  # the webhook receiver is on loopback; private ranges stay refused
  webhooks: {{secret: "{secret}", first_retry_s: 0.3, max_retry_s: 1, give_up_after_s: 12}}  # 3 tries fit on a loaded machine
  deployments:
    # One request at a time, so tasks queue (PENDING) and can be canceled.
    stable-diffusion-v1.5: {{max_ongoing_requests: 1}}
tasks: {{path: "{work}/tasks.sqlite"}}
storage: {{root: "{work}/results", signing_key_file: "{work}/signing.key"}}
loras: {{local_root: "{work}/loras", cache_dir: "{work}/lora-cache"}}  # test_loras.py builds adapters there
"""


@dataclass
class ContractService:
    url: str
    work: Path  # its working directory: tasks.sqlite, results/, signing.key

    @property
    def sim_dir(self) -> Path:
        """Where its SIMULATED GPUs record every batch they run (`cluster/doubles/simulated_gpu.py`)."""
        return self.work / "sim"


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    work = tmp_path_factory.mktemp("contract-service")
    config = CONFIG.format(work=work, secret=WEBHOOK_SECRET, burst=RATE_BURST)
    (work / "sim").mkdir()
    with raydiant_service(work, config, api_keys=",".join(KEYS), env={"RAYDIANT_SIM_DIR": str(work / "sim")}) as running:
        yield ContractService(running.url, work)


@pytest.fixture(scope="session")
def base_url(service) -> str:
    return f"{service.url}/api/v1"
