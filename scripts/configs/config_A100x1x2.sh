# MLPerf BERT phase 2 on 1 node x 2 A100 (Horovod, 2 ranks): as config_A100x1x1 with the
# global batch doubled; learning rate per GPU (multiplied by the rank count, as NVIDIA's code).
NUM_GPUS=2
BATCHSIZE=24
GRADIENT_STEPS=1
LR=4e-5
MAX_STEPS=25000
WARMUP_STEPS=0
EVAL_BATCHSIZE=16
# MLPerf mode: evaluate every EVAL_INTERVAL_SAMPLES training samples (0: MLPerf's interval for
# the global batch) and stop at the quality target.
EVAL_INTERVAL_SAMPLES=0
TARGET_ACCURACY=0.720
