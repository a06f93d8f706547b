"""Task-finished webhooks: Standard Webhooks signatures with per-key secrets, delivery with
retries, one coroutine per task.

May import: cluster.spec, cluster.storage, serve.tasks.store."""
