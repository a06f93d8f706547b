"""Files callers hand over for later work: a key's batch input files (`store.py`, OpenAI's Files
API), kept in the result storage, bounded and expiring.

May import: cluster.storage, serve.edge. Knows nothing of HTTP or of any door."""
