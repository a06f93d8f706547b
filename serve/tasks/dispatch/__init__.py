"""From a stored task to a replica: fair slots per key, the queue's capacity, the dispatcher
that starts, watches and re-dispatches tasks.

May import: cluster.spec, serve.tasks.store."""
