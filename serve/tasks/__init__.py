"""The task layer: a request becomes a stored task (`store/`), is dispatched to a replica under
fair shares (`dispatch/`), and is read, waited on and canceled through `service.py`, the one
interface the doors use; webhooks tell callers when it ends (`webhooks/`), and `periodic.py`
runs the store's upkeep.

May import: cluster.spec, cluster.storage. Knows nothing of HTTP or of any door."""
