"""The image every manifest runs, set in one step and immutable (`raydiant infra image REF`).

A tag that can be pushed again (`:0.1.0`, `:latest`) lets a node that pulls later run other code
under the same name as its neighbours, and an unchanged manifest never rolls the pods. So the
manifests take only a reference that names one build: the version and the commit it was built
from (`:0.1.0-3f2a9c1d`), or a digest (`@sha256:...`). Every `image:` of raydiant's own image in
`infra/` is rewritten to it (the Ray submitter's CPU image is Ray's, and stays).
"""

from __future__ import annotations

import re
from pathlib import Path

from cluster.spec.config import CONFIG_DIR

INFRA = CONFIG_DIR.parent / "infra"
# `image: <registry path ending in /raydiant><:tag or @digest>` in a manifest or the launcher config.
_IMAGE_LINE = re.compile(r"(?m)^(\s*(?:-\s+)?image:\s*)((?:\S+/)?raydiant(?::[\w.-]+|@sha256:[0-9a-f]{64}))\s*$")
_IMMUTABLE = re.compile(r"(?:\S+/)?raydiant(?::\d+\.\d+\.\d+[\w.]*-[0-9a-f]{7,40}|@sha256:[0-9a-f]{64})")


class MutableImage(ValueError):
    """A reference that does not name one build."""


def check(reference: str) -> str:
    """`reference` when it names one build (version and commit, or a digest); else why not."""
    if not _IMMUTABLE.fullmatch(reference):
        raise MutableImage(
            f"{reference!r} does not name one build: tag raydiant's image with its version and the "
            f"commit it was built from (REGISTRY/raydiant:0.1.0-$(git rev-parse --short=12 HEAD)) or "
            f"pin its digest (REGISTRY/raydiant@sha256:...)")
    return reference


def stamp(reference: str, root: Path = INFRA) -> list[Path]:
    """Set every raydiant image under `root` to `reference` (checked first); the files changed."""
    check(reference)
    changed = []
    for path in sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")]):
        text = path.read_text()
        new = _IMAGE_LINE.sub(lambda m: m.group(1) + reference, text)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def images(root: Path = INFRA) -> set[str]:
    """Every raydiant image reference under `root`."""
    return {m.group(2) for path in [*root.rglob("*.yaml"), *root.rglob("*.yml")]
            for m in _IMAGE_LINE.finditer(path.read_text())}
