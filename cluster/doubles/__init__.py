"""Stand-ins, each named as what it is: tiny random-weight pipelines and tokenizers (`tiny:`,
tests and the demo), tiny LoRA files, full-size random weights (`random:`, GPU benchmarks) and
the SIMULATED GPU / FAKE engine (`sim:`, `fake:`). No real model weights are ever made here.

May import: cluster.spec, cluster.weights (architectures and the component builder)."""
