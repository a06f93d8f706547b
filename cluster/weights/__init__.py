"""Model weights: where they come from (`sources.py`: tiny, random, fake, sim, fsspec, local,
hub) and how a pipeline is loaded; the component architectures of each family; the fingerprint
that proves a loaded model unchanged (`base_weights.py`).

May import: cluster.spec, cluster.doubles (the builders behind `tiny:`, `random:`, `sim:`)."""
