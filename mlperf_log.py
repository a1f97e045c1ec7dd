"""MLPerf training logs for BERT (ruleset 5.0.0, the last with BERT) through `mllog` of the PyPI
package mlperf-logging: the events and keys its compliance checker requires, written by rank 0
into a fresh file.

    python -m mlperf_logging.compliance_checker --usage training --ruleset 5.0.0 LOG

Order of a run: `MlperfLog(path)` (cache_clear, init_start, the submission and hyper-parameter
keys), `run_started` once the session has restored or initialised the model (init_stop,
run_start, block_start), `evaluated` after every evaluation (block_stop, eval_start,
eval_accuracy, eval_stop, and block_start unless it is the last), `stopped` (train_samples,
run_stop with its status). Counts are training samples (sequences) over all ranks, which is what
MLPerf's reference convergence points count: `epoch_num` of the eval keys and `samples_count`
of the block keys.
"""

import logging
import os

from mlperf_logging import mllog
from mlperf_logging.mllog import constants

TARGET_ACCURACY = 0.720  # masked-LM accuracy of MLPerf BERT's quality target
RULESET = "5.0.0"


def default_eval_interval_samples(global_batch_size):
    """MLPerf BERT's evaluation interval in training samples for a global batch size:
    floor(0.05 x (230.23 x global_batch_size + 3,000,000) / 25,000) x 25,000."""
    return int(0.05 * (230.23 * global_batch_size + 3_000_000) / 25_000) * 25_000


def keep_previous(path):
    """Moves an existing log at `path` to the first free `path.N` (a resumed run's earlier log
    stays, the new run writes a fresh one); returns the new name or None."""
    if not os.path.exists(path):
        return None
    number = 1
    while os.path.exists(f"{path}.{number}"):
        number += 1
    os.replace(path, f"{path}.{number}")
    return f"{path}.{number}"


class MlperfLog:
    """The MLPerf log of one process's run (rank 0 only: other ranks create none).

    Args:
      path: the log file (written fresh; an earlier one is kept as `path.N`).
      submission: {"org", "division" (closed|open), "platform", "status" (onprem|cloud|
        research)}.
      hyperparameters: {"seed", "global_batch_size", "gradient_accumulation_steps",
        "max_sequence_length", "learning_rate", "training_steps", "warmup_steps",
        "optimizer": {"epsilon", "beta_1", "beta_2", "weight_decay_rate"}} (the LAMB keys).
    """

    def __init__(self, path, submission, hyperparameters):
        self.previous = keep_previous(path)
        logger = logging.getLogger(f"bert_tf.mlperf.{os.getpid()}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        self._handler = logging.FileHandler(path, mode="w", encoding="utf-8")
        logger.addHandler(self._handler)
        mllog.config(logger=logger, root_dir=os.path.dirname(os.path.abspath(__file__)))
        self._log = mllog.get_mllogger()
        self._eval_samples_logged = False
        self._log.event(key=constants.CACHE_CLEAR, value=True)
        self._log.start(key=constants.INIT_START)
        for key, value in (
                (constants.SUBMISSION_BENCHMARK, constants.BERT),
                (constants.SUBMISSION_ORG, submission["org"]),
                (constants.SUBMISSION_DIVISION, submission["division"]),
                (constants.SUBMISSION_PLATFORM, submission["platform"]),
                (constants.SUBMISSION_STATUS, submission["status"]),
                (constants.SEED, hyperparameters["seed"]),
                (constants.GLOBAL_BATCH_SIZE, hyperparameters["global_batch_size"]),
                (constants.GRADIENT_ACCUMULATION_STEPS,
                 hyperparameters["gradient_accumulation_steps"]),
                (constants.MAX_SEQUENCE_LENGTH, hyperparameters["max_sequence_length"]),
                (constants.OPT_BASE_LR, hyperparameters["learning_rate"]),
                (constants.OPT_LR_TRAINING_STEPS, hyperparameters["training_steps"]),
                (constants.OPT_LR_WARMUP_STEPS, hyperparameters["warmup_steps"]),
                (constants.NUM_WARMUP_STEPS, hyperparameters["warmup_steps"]),
                (constants.START_WARMUP_STEP, 0),
                (constants.OPT_LAMB_EPSILON, hyperparameters["optimizer"]["epsilon"]),
                (constants.OPT_LAMB_BETA_1, hyperparameters["optimizer"]["beta_1"]),
                (constants.OPT_LAMB_BETA_2, hyperparameters["optimizer"]["beta_2"]),
                (constants.OPT_LAMB_WEIGHT_DECAY,
                 hyperparameters["optimizer"]["weight_decay_rate"])):
            self._log.event(key=key, value=value)

    def run_started(self, samples):
        """The model is restored or initialised: init_stop, run_start, the first block."""
        self._log.end(key=constants.INIT_STOP)
        self._log.start(key=constants.RUN_START)
        self._log.start(key=constants.BLOCK_START, metadata={constants.SAMPLES_COUNT: samples})

    def evaluated(self, samples, accuracy, eval_samples, last):
        """An evaluation after `samples` training samples gave masked-LM `accuracy` on
        `eval_samples` sequences; `last`: training stops here."""
        if not self._eval_samples_logged:
            self._log.event(key=constants.EVAL_SAMPLES, value=eval_samples)
            self._eval_samples_logged = True
        self._log.end(key=constants.BLOCK_STOP, metadata={constants.SAMPLES_COUNT: samples})
        self._log.start(key=constants.EVAL_START, metadata={constants.EPOCH_NUM: samples})
        self._log.event(key=constants.EVAL_ACCURACY, value=accuracy,
                        metadata={constants.EPOCH_NUM: samples})
        self._log.end(key=constants.EVAL_STOP, metadata={constants.EPOCH_NUM: samples})
        if not last:
            self._log.start(key=constants.BLOCK_START,
                            metadata={constants.SAMPLES_COUNT: samples})

    def stopped(self, samples, success):
        """The run ends after `samples` training samples: reached the target or not."""
        self._log.event(key=constants.TRAIN_SAMPLES, value=samples)
        status = constants.SUCCESS if success else constants.ABORTED
        self._log.end(key=constants.RUN_STOP, metadata={constants.EPOCH_NUM: samples,
                                                        constants.STATUS: status})

    def close(self):
        """Flushes and closes the file."""
        self._handler.close()
