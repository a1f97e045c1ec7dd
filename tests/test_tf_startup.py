"""How the CLIs start TensorFlow (tf_startup.py: oneDNN kernels on, Keras not loaded) and a
mixed-precision rewrite TensorFlow skips on this CPU detected
(session_setup.mixed_precision_rewrite_runs)."""

import ast
import importlib
import os
import subprocess
import sys

import pytest
from conftest import REPO

import distributed
import session_setup
import tf_startup

CLIS = ("run_pretraining.py", "run_squad.py", "convert_checkpoint.py")


def first_import(path):
    """The module name of the first import statement of the Python file at `path`."""
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    node = next(node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)))
    return node.names[0].name if isinstance(node, ast.Import) else node.module


def test_clis_start_tensorflow_with_onednn_kernels_and_without_keras():
    """Property: run_pretraining.py, run_squad.py and convert_checkpoint.py import tf_startup
    before anything else; a process that imports run_pretraining without TF_ENABLE_ONEDNN_OPTS
    in its environment runs TensorFlow's oneDNN kernels (TensorFlow 2.21 leaves them off on
    CPUs without AVX-512) and has not loaded Keras, which `tf.keras` still loads when asked."""
    assert [first_import(path) for path in CLIS] == ["tf_startup"] * len(CLIS)
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    probe = ("import sys\n"
             "import run_pretraining\n"
             "from tensorflow.python.util import _pywrap_util_port\n"
             "print(_pywrap_util_port.IsMklEnabled(), 'keras' in sys.modules)\n"
             "import tensorflow as tf\n"
             "print(tf.keras.layers.Dense.__name__)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO,
                            env=dict(env, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True,
                            text=True, check=True)
    assert result.stdout.split() == ["True", "False", "Dense"], result.stderr[-2000:]


@pytest.mark.parametrize("choice", ["0", "1", "false"])
def test_the_users_tf_enable_onednn_opts_wins(monkeypatch, choice):
    """Property: tf_startup leaves a TF_ENABLE_ONEDNN_OPTS the environment already has as it
    is (0 turns the kernels off), and sets 1 only where it is unset."""
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", choice)
    importlib.reload(tf_startup)
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == choice
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    importlib.reload(tf_startup)
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"


def cpu_flags():
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        return next((line.split(":", 1)[1].split() for line in f
                     if line.startswith("flags")), [])


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="reads the CPU's flags")
def test_bfloat16_rewrite_probe_agrees_with_the_cpu_features_tensorflow_checks():
    """Property: the probe says oneDNN's bfloat16 rewrite runs exactly where TensorFlow's own
    condition holds: oneDNN kernels on and a CPU with AVX-512 (avx512f) or AVX-NE-CONVERT."""
    config = session_setup.session_config(distributed.SingleProcess(), 1, 1, amp=True,
                                          amp_dtype="bfloat16")
    flags = cpu_flags()
    expected = tf_startup.onednn_enabled() and ("avx512f" in flags or "avx_ne_convert" in flags)
    assert session_setup.mixed_precision_rewrite_runs(config) == expected, flags
