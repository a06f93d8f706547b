"""Secrets the service signs with (result URLs, webhooks): from the environment, the config, or
a file generated once, so that signatures stay valid across restarts and replicas."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path
from typing import Callable

from cluster.files import create_once


def load_secret(env_name: str, configured: str | None, file: str | Path, generate: Callable[[], str]) -> str:
    """`$env_name`, else the config's value, else the content of `file` (created with
    `generate()` the first time; concurrent replicas agree on one value)."""
    explicit = os.environ.get(env_name) or configured
    if explicit:
        return explicit
    path = Path(file)
    if not path.exists():
        create_once(path, generate())
    return path.read_text().strip()


def new_signing_key() -> str:
    return secrets.token_hex(32)


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
