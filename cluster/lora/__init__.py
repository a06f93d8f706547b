"""LoRA adapters on a node and in a pipeline: the adapter file checked to be only LoRA
matrices (`adapter_file.py`), the node's disk cache (`cache.py`), adapters loaded into a pipeline
and switched per batch (`adapters.py`), the compiled model's one slot (`hotswap.py`).

The references a request carries are `cluster.spec.loras`. May import: cluster.spec,
cluster.storage (the guarded fetch), cluster.engine.speed (the denoiser)."""
