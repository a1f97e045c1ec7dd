"""Shared fixtures: paths of the shipped data and a runner for the project's CLIs."""

import os
import subprocess
import sys

import pytest

import tf_startup  # noqa: F401  (first: TensorFlow started as the CLIs start it)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = os.path.join(REPO, "data", "vocab.txt")
SAMPLE_CORPUS = os.path.join(REPO, "data", "sample_corpus.txt")


def run_cli(args, check=True, env=None, **kwargs):
    """Runs `python ARGS...` from the repo root, with the variables `env` added to the
    environment; returns the CompletedProcess (text output)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    result = subprocess.run([sys.executable, *args], check=False, cwd=REPO, env=env,
                            capture_output=True,
                            text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def require_mixed_precision_rewrite(config):
    """Skips the calling test where TensorFlow skips the mixed-precision rewrite `config` asks
    for: the CPU lacks the type (session_setup.mixed_precision_rewrite_runs)."""
    import session_setup

    if not session_setup.mixed_precision_rewrite_runs(config):
        pytest.skip("TensorFlow skips this mixed-precision rewrite on this CPU")


@pytest.fixture(scope="session")
def vocab_file():
    return VOCAB


@pytest.fixture(scope="session")
def sample_corpus():
    return SAMPLE_CORPUS
