"""How many of a model's images an ingress sends to its replicas at once (its dispatch slots).

Work that waits should wait in the dispatcher, where keys take turns by cost
(`fair_queue.py`), not in a replica's first-come queue or in Serve's router. So an ingress keeps
in flight just what the running replicas need to stay busy: two device batches of images per
replica (one on the device, the next waiting), counted in images whatever the tasks' `n` (a task
holds a slot per image), and never more tasks than a replica's `max_ongoing_requests` (each task
has an image at least, so capping the images caps the tasks). While the
deployment can still grow, one replica's worth more, so that Serve's autoscaler, which counts the
requests at and queued for the replicas, sees demand beyond what runs; at 0 replicas that one
replica's worth is what wakes the deployment. Ingress replicas share the total.

A quiet key's task thus waits for a slot (at most the device batch in progress, as slots free
in fair order) and then for about one batch at its replica, however many tasks a flooding key
has waiting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelCapacity:
    max_batch_size: int
    max_ongoing_requests: int
    min_replicas: int
    max_replicas: int
    ingresses: int = 1

    @property
    def per_replica(self) -> int:
        return max(1, min(2 * self.max_batch_size, self.max_ongoing_requests))

    def slots(self, running: int | None = None) -> int:
        """Dispatch slots of one ingress while `running` replicas run (None: not known yet, the
        deployment's minimum is assumed)."""
        running = self.min_replicas if running is None else running
        replicas = min(running + 1, self.max_replicas)
        return max(1, math.ceil(max(replicas, 1) * self.per_replica / self.ingresses))
