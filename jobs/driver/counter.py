"""`ImageCounter`: how many images the render actors have finished, for the driver's progress.

Shards commit a thousand images at a time; the progress bar should move per image. Render
actors tell this actor what they finish (fire and forget) and the driver reads two numbers.
It holds two integers, never anything per image. Counts are for display only: a re-executed
shard is counted twice here, and the job's figures come from the committed shards' stats.
"""

from __future__ import annotations


class ImageCounter:
    def __init__(self) -> None:
        self.rendered = 0
        self.failed = 0

    def add(self, rendered: int, failed: int) -> None:
        self.rendered += rendered
        self.failed += failed

    def read(self) -> tuple[int, int]:
        return self.rendered, self.failed
