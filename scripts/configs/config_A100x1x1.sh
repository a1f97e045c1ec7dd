# MLPerf BERT phase 2 on 1 node x 1 A100: from MLPerf's model.ckpt-28252 (seq 512, 76
# predictions, LAMB), 25,000 steps, eval on the 10,000-instance eval set. Sourced by run_mlperf.sh.
NUM_GPUS=1
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
