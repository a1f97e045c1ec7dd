"""How every CLI starts TensorFlow: import this module before anything else. It imports
TensorFlow itself, with two settings of this project:

- oneDNN CPU kernels on, unless the user chose. TensorFlow 2.21 turns them on by default only
  on CPUs with AVX-512 and falls back to Eigen on others: on an AVX2-only AMD EPYC
  `IsMklEnabled()` is False, the MatMul + BiasAdd + GELU fusion and the oneDNN LayerNorm and
  products are gone, and a BERT-base training step (seq 128, batch 8, fp32, 2 cores) took
  5.76 s instead of 3.90 s with them on (BENCHMARKS.md). TF_ENABLE_ONEDNN_OPTS set in the
  environment (0 or 1) wins.
- Keras not loaded. TensorFlow's `__init__` imports `keras.src.optimizers` eagerly (so that
  Keras optimizers register with SavedModel): ~1 s of every start and ~75 MiB resident, for
  a project that builds no Keras object. Keras' submodules are refused while TensorFlow is
  imported, which TensorFlow tolerates as it does a missing Keras; `tf.keras`, if something
  touches it later, still loads Keras in full. With TF_USE_LEGACY_KERAS (tf_keras) set, or
  TensorFlow already imported, TensorFlow is imported as it is.

run_pretraining.py, run_squad.py, convert_checkpoint.py, the benchmarks and the tests import
this module first.
"""

import importlib
import importlib.abc
import os
import sys

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def onednn_enabled():
    """Whether TF_ENABLE_ONEDNN_OPTS, as this process has it, turns the oneDNN kernels on."""
    return os.environ["TF_ENABLE_ONEDNN_OPTS"].lower() in ("1", "true")


class _RefuseKerasSubmodules(importlib.abc.MetaPathFinder):
    """An import finder that fails every `keras.*` import (the `keras` package itself is still
    found: TensorFlow asks where it lies, and its `__init__` then fails on its first line)."""

    def find_spec(self, fullname, path=None, target=None):
        del path, target
        if fullname.startswith("keras."):
            raise ImportError(f"{fullname} is not loaded while TensorFlow starts (tf_startup.py)")


def _import_tensorflow():
    """Imports TensorFlow, with Keras' submodules refused meanwhile unless TensorFlow is
    already imported or uses tf_keras (TF_USE_LEGACY_KERAS)."""
    refuse_keras = ("tensorflow" not in sys.modules
                    and os.environ.get("TF_USE_LEGACY_KERAS") not in ("true", "True", "1"))
    finder = _RefuseKerasSubmodules()
    if refuse_keras:
        sys.meta_path.insert(0, finder)
    try:
        importlib.import_module("tensorflow")
    finally:
        if refuse_keras:
            sys.meta_path.remove(finder)


_import_tensorflow()
