"""The same contract through a 1.x DashScope SDK (installed by make into var/sdk/dashscope-1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.contract.conftest import API_KEY

SDK1 = Path(__file__).resolve().parents[2] / "var" / "sdk" / "dashscope-1"


def test_sdk_1x_call_async_wait_fetch(base_url):
    if not (SDK1 / "dashscope").is_dir():
        message = f"dashscope 1.x not installed at {SDK1} (make test installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("sdk1_client.py")), base_url, API_KEY],
                         capture_output=True, text=True, timeout=300,
                         env=os.environ | {"PYTHONPATH": str(SDK1)})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["version"].startswith("1.")
    assert result["status"] == "SUCCEEDED" and result["seeds"] == [11, 12] and len(result["urls"]) == 2
    assert result["async"] == "SUCCEEDED" and result["unknown"] == "UNKNOWN"
