"""The `Renderer`: one loaded model turning resolved requests into images (prepare, plan,
denoise, encode), its batching, progress and cancelation, the CPU batch-invariance patches and
the speed options (step cache, regional compile, quantized weights).

May import: cluster.spec, cluster.weights, cluster.lora, cluster.images, cluster.storage."""
