"""Seed rules shared by both doors.

- Image i of a request seeded s uses s + i (the DashScope/FLUX convention).
- A request without a seed gets one drawn at random, and the seed used is reported.
- A batch-job row without a seed gets one derived from the job seed and the row id, so reruns
  (resume) render the same pixels.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


# DashScope documents seeds in [0, 2^31 - 1].
MAX_SEED = 2**31 - 1


def image_seeds(seed: int, n: int) -> list[int]:
    return [seed + i for i in range(n)]


def draw_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def derive_seed(job_seed: int, row_id: str) -> int:
    """A seed in [0, MAX_SEED] that depends only on the job seed and the row id."""
    digest = hashlib.sha256(f"{job_seed}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_SEED + 1)


def generator(seed: int, device: "str | torch.device") -> "torch.Generator":
    """One generator per image: its noise then depends on its own seed, not on its batch."""
    import torch  # here, not at the top: the CLI and the ingress validate seeds without loading torch

    return torch.Generator(device=device).manual_seed(seed)
