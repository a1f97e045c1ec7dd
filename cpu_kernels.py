"""TensorFlow's oneDNN CPU kernels on, unless the user chose: import this before TensorFlow.

TensorFlow 2.21 turns its oneDNN kernels on by default only on CPUs with AVX-512 and falls back
to Eigen on others: on an AVX2-only AMD EPYC `IsMklEnabled()` is False, the MatMul + BiasAdd +
GELU fusion and the oneDNN LayerNorm and products are gone, and a BERT-base training step
(seq 128, batch 8, fp32, 2 cores) took 5.76 s instead of 3.90 s with them on (BENCHMARKS.md).
run_pretraining.py, run_squad.py, the training benchmarks and the tests import this module
first, so every CPU runs the kernels the design is measured with. TF_ENABLE_ONEDNN_OPTS set
in the environment (0 or 1) wins.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def onednn_enabled():
    """Whether TF_ENABLE_ONEDNN_OPTS, as this process has it, turns the oneDNN kernels on."""
    return os.environ["TF_ENABLE_ONEDNN_OPTS"].lower() in ("1", "true")
