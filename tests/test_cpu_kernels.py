"""Which CPU kernels and mixed-precision rewrites TensorFlow runs: oneDNN on in every CLI
(cpu_kernels.py) and a rewrite TensorFlow skips on this CPU detected
(session_setup.mixed_precision_rewrite_runs)."""

import os
import subprocess
import sys

import pytest
from conftest import REPO

import distributed
import session_setup

ONEDNN_ENABLED = ("from tensorflow.python.util import _pywrap_util_port\n"
                  "print(_pywrap_util_port.IsMklEnabled())")


def onednn_enabled_in(module, onednn_variable):
    """Whether TensorFlow's oneDNN kernels are on in a process that imports `module` first,
    with TF_ENABLE_ONEDNN_OPTS set to `onednn_variable` (None: unset)."""
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    if onednn_variable is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn_variable
    result = subprocess.run([sys.executable, "-c", f"import {module}\n{ONEDNN_ENABLED}"],
                            cwd=REPO, env=dict(env, TF_CPP_MIN_LOG_LEVEL="2"),
                            capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1] == "True"


def test_clis_turn_onednn_kernels_on_unless_the_environment_says_otherwise():
    """Property: importing run_pretraining or run_squad turns TensorFlow's oneDNN kernels on
    whatever the CPU (TensorFlow 2.21 leaves them off on CPUs without AVX-512), and
    TF_ENABLE_ONEDNN_OPTS=0 in the environment still turns them off."""
    assert onednn_enabled_in("run_pretraining", None)
    assert onednn_enabled_in("run_squad", None)
    assert not onednn_enabled_in("run_pretraining", "0")


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
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").lower() in ("1", "true")
    expected = onednn and ("avx512f" in flags or "avx_ne_convert" in flags)
    assert session_setup.mixed_precision_rewrite_runs(config) == expected, flags
