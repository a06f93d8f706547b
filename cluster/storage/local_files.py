"""Small local-file helpers shared by the core and the service."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_once(path: Path, content: str, mode: int = 0o600) -> None:
    """Create `path` with `content` unless it exists, atomically: processes racing to create it
    (replicas starting together) all end up reading the one that won."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
    staging.write_text(content)
    staging.chmod(mode)
    try:
        os.link(staging, path)  # fails if the path exists: create-if-absent
    except FileExistsError:
        pass
    finally:
        staging.unlink()
