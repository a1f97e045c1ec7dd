"""TensorFlow's oneDNN CPU kernels on, unless the user chose: import this before TensorFlow.

TensorFlow 2.21 turns its oneDNN kernels on by default only on CPUs with AVX-512 and falls back
to Eigen on others: on an AVX2-only AMD EPYC `IsMklEnabled()` is False, the MatMul + BiasAdd +
GELU fusion and the oneDNN LayerNorm and products are gone, and a BERT-base training step
(seq 128, batch 8, fp32, 2 cores) took 5.76 s instead of 3.90 s with them on (BENCHMARKS.md).
Every CLI that builds a graph and every benchmark imports this module first, so all CPUs run the
kernels the design is measured with. `TF_ENABLE_ONEDNN_OPTS=0` (or 1) in the environment wins.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
