"""One running service (real Ray, real Serve, real HTTP on loopback) for the contract tests."""

from __future__ import annotations

import pytest

from tests.servers import raydiant_service

API_KEY = "contract-key"

CONFIG = """
models:
  flux-schnell: {{source: "tiny:flux"}}
  stable-diffusion-xl: {{source: "tiny:sdxl"}}
  stable-diffusion-v1.5: {{source: "tiny:sd15", warmup: false}}
  flux-kontext: {{source: "tiny:flux-kontext", max_batch_size: 2}}
serve:
  rate_limit: {{requests_per_second: 500, burst: 1000}}
  deployments:
    # One request at a time, so tasks queue (PENDING) and can be canceled.
    stable-diffusion-v1.5: {{max_ongoing_requests: 1}}
tasks: {{path: "{work}/tasks.sqlite"}}
storage: {{root: "{work}/results", signing_key_file: "{work}/signing.key"}}
"""


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    work = tmp_path_factory.mktemp("contract-service")
    with raydiant_service(work, CONFIG.format(work=work), api_keys=f"{API_KEY},second-key") as running:
        yield running


@pytest.fixture(scope="session")
def base_url(service) -> str:
    return f"{service.url}/api/v1"
