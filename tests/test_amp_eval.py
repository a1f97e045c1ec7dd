"""float16 --amp evaluation on CPU: grappler's auto_mixed_precision_cpu rewrite of the eval graph
(which used to crash the process with SIGSEGV, session_setup.CPU_FLOAT16_OPTIMIZERS says why)."""

import math
import os

import pytest
from conftest import REPO, require_mixed_precision_rewrite, run_cli
from test_run_pretraining import EVAL_KEYS, args, data, eval_results  # noqa: F401 (fixture)

import distributed
import session_setup

MINI_CONFIG = os.path.join(REPO, "data", "bert_config_mini.json")


def test_amp_eval_runs_and_matches_fp32_eval_of_the_same_checkpoint(data, tmp_path):  # noqa: F811
    """Property: a BERT-Mini (4 layers: a graph the broken pass order crashed on) trained 2
    steps under float16 --amp evaluates under --amp, exit 0, every eval key, and metrics within
    float16 tolerance of an fp32 evaluation of the same checkpoint. Skipped where TensorFlow
    skips the float16 rewrite (CPUs without AMX-FP16 or AVX-NE-CONVERT): both evaluations would
    be float32."""
    require_mixed_precision_rewrite(
        session_setup.session_config(distributed.create(False, False), amp=True))
    out = tmp_path / "run"
    mini = f"--bert_config_file={MINI_CONFIG}"
    run_cli([*args(data, out, "--do_train", "--do_eval", "--amp", "--max_eval_steps=2", steps=2),
             mini])
    amp = eval_results(out)
    assert set(amp) == EVAL_KEYS and amp["global_step"] == "2"
    run_cli([*args(data, out, "--do_eval", "--max_eval_steps=2", steps=2), mini])
    fp32 = eval_results(out)
    assert all(math.isfinite(float(amp[key])) for key in EVAL_KEYS), amp
    for key in ("masked_lm_loss", "next_sentence_loss", "loss"):
        assert float(amp[key]) == pytest.approx(float(fp32[key]), rel=2e-2), key
    for key in ("masked_lm_accuracy", "next_sentence_accuracy"):
        assert abs(float(amp[key]) - float(fp32[key])) <= 0.05, (key, amp, fp32)
