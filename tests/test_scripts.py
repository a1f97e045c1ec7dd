"""The seed-run scripts: each dry run prints its published set-up's flags, each runs a few real
steps on data made from the sample corpus, prepare_data.sh is resumable and checks md5s, and
the multi-node form (HOSTS, the SLURM batch script) launches the ranks it names."""

import json
import os
import subprocess

import pytest
from conftest import REPO, run_cli

TINY_CONFIG = {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
               "hidden_dropout_prob": 0.1, "hidden_size": 32, "initializer_range": 0.02,
               "intermediate_size": 64, "max_position_embeddings": 512, "num_attention_heads": 2,
               "num_hidden_layers": 1, "type_vocab_size": 2, "vocab_size": 30522}


# The design card's entry points live at the repository root; the other scripts in scripts/.
ROOT_SCRIPTS = ("run_1card_FPS.sh", "run_multi_card_FPS.sh")


def script(name, *args, env=None, check=True):
    """Runs a seed script as a user does, from the repository root: `bash run_1card_FPS.sh`,
    `bash scripts/run_mlperf.sh`."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    path = name if name in ROOT_SCRIPTS else os.path.join("scripts", name)
    result = subprocess.run(["bash", path, *map(str, args)],
                            cwd=REPO, env=environment, capture_output=True, text=True,
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{name} failed ({result.returncode}):\n{result.stdout[-2000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def dry(name, *args, env=None):
    return script(name, *args, env={"DRY_RUN": "1", **(env or {})}).stdout


@pytest.mark.parametrize(("name", "args", "env", "expected"), [
    ("run_pretraining_adam.sh", [], {},
     ["run_pretraining.py", "--max_seq_length=128", "--max_predictions_per_seq=20",
      "--train_batch_size=32", "--num_train_steps=1000000", "--num_warmup_steps=10000",
      "--learning_rate=1.25e-5", "--optimizer_type=adam", "--display_loss_steps=100",
      "--save_checkpoints_steps=10000"]),
    ("run_pretraining_adam.sh", ["/d", 4, 32, 1000000, "fp16", "true", 2], {},
     ["mpiexec", "-np 4", "--horovod", "--use_fp16", "--use_xla", "--input_files_dir=/d/tfrecord"]),
    ("run_pretraining_lamb.sh", [], {},
     ["-np 8", "--max_seq_length=128", "--max_predictions_per_seq=20", "--num_train_steps=7038",
      "--num_accumulation_steps=128", "--learning_rate=7.5e-4", "--max_seq_length=512",
      "--max_predictions_per_seq=80", "--num_train_steps=1564", "--num_accumulation_steps=512",
      "--learning_rate=5e-4", "--optimizer_type=lamb", "phase_1/model.ckpt-7038"]),
    ("run_1card_FPS.sh", ["--train_batch_size=6", "--init_checkpoint=ck/model.ckpt-28252"],
     {"CUDA_VISIBLE_DEVICES": ""},
     ["--max_seq_length=512", "--max_predictions_per_seq=76", "--train_batch_size=6",
      "--init_checkpoint=ck/model.ckpt-28252", "--optimizer_type=lamb", "--amp"]),
    ("run_multi_card_FPS.sh", ["--train_batch_size=6"], {"CUDA_VISIBLE_DEVICES": "0,1,2,3"},
     ["mpiexec", "-np 4", "--horovod", "--num_accumulation_steps=4", "--train_batch_size=6"]),
    ("run_mlperf.sh", ["config_A100x1x1"], {},
     ["--max_seq_length=512", "--max_predictions_per_seq=76", "--num_train_steps=25000",
      "--optimizer_type=lamb", "model.ckpt-28252", "eval_10k", "--max_eval_steps=625",
      "--mlperf_log_file=", "mlperf.log", "--eval_interval_samples=0", "--stop_threshold=0.720"]),
    ("run_mlperf.sh", ["config_A100x1x2"], {}, ["mpiexec", "-np 2", "--horovod"]),
    ("run_squad.sh", [], {},
     ["run_squad.py", "--train_batch_size=12", "--learning_rate=3e-5", "--num_train_epochs=2.0",
      "--max_seq_length=384", "--doc_stride=128", "--max_query_length=64", "--do_train=True",
      "--do_predict=True", "--warmup_proportion=0.1", "train-v1.1.json", "dev-v1.1.json"]),
    ("run_squad.sh", [4, "3e-5", "bf16", "true", 4], {},
     ["mpiexec", "-np 4", "--horovod", "--train_batch_size=4", "--amp", "--amp_dtype=bfloat16",
      "--use_xla"]),
])
def test_dry_run_prints_the_published_setup(name, args, env, expected):
    """DRY_RUN=1 prints the exact command with the flags of the published set-up, exit 0."""
    output = dry(name, *args, env=env)
    for flag in expected:
        assert flag in output, f"{flag} missing from:\n{output}"
    assert ("mpiexec" in output) == ("-np" in " ".join(expected))


def test_single_gpu_runs_have_no_mpiexec():
    assert "mpiexec" not in dry("run_pretraining_adam.sh", "data", 1)
    assert "--horovod" not in dry("run_multi_card_FPS.sh", env={"CUDA_VISIBLE_DEVICES": "0"})


def test_bert_config_at_the_root_is_dlperfs_bert_base():
    """bert_config.json at the root is BERT-base (DLPerf's run) and the Adam script's default."""
    import modeling

    config = modeling.BertConfig.from_json_file(os.path.join(REPO, "bert_config.json"))
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.intermediate_size, config.vocab_size) == (768, 12, 12, 3072, 30522)
    assert f"--bert_config_file={REPO}/bert_config.json" in dry("run_pretraining_adam.sh")


@pytest.mark.parametrize("name,args", [("run_pretraining_adam.sh", ["/d", 8]),
                                       ("run_multi_card_FPS.sh", []),
                                       ("run_mlperf.sh", ["config_A100x1x2"]),
                                       ("run_squad.sh", [8])])
def test_hosts_give_the_multi_node_command(name, args):
    """HOSTS=node1:8,node2:8 makes every launcher's dry run print mpiexec over both hosts with
    16 ranks, Horovod on, the environment passed to the remote ranks."""
    output = dry(name, *args, env={"HOSTS": "node1:8,node2:8"})
    for part in ("mpiexec", "-np 16", r"-H node1:8\,node2:8", "--map-by slot", "-x PATH",
                 "--horovod"):
        assert part in output, f"{part} missing from:\n{output}"


def test_bad_hosts_entry_is_one_line_error():
    result = script("run_pretraining_adam.sh", env={"DRY_RUN": "1", "HOSTS": "node1,node2:8"},
                    check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == ("run_pretraining_adam.sh: error: HOSTS entry 'node1' is not "
                                     "HOST:RANKS (e.g. HOSTS=node1:8,node2:8)")


def test_slurm_batch_script_runs_a_seed_script_over_its_nodes(tmp_path):
    """scripts/slurm_pretraining.sbatch turns the allocation (scontrol's host names, tasks per
    node) into HOSTS for the seed script it is given: one rank per task on every node."""
    scontrol = tmp_path / "scontrol"  # stands in for SLURM's: the allocation's host names
    scontrol.write_text("#!/bin/sh\nprintf 'gpu-a\\ngpu-b\\n'\n")
    scontrol.chmod(0o755)
    result = subprocess.run(
        ["bash", os.path.join("scripts", "slurm_pretraining.sbatch"),
         "scripts/run_pretraining_adam.sh", "/d", "4"],
        cwd=REPO, capture_output=True, text=True, check=True,
        env=dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", DRY_RUN="1",
                 SLURM_JOB_NODELIST="gpu-[a-b]", SLURM_NTASKS_PER_NODE="4",
                 SLURM_SUBMIT_DIR=REPO))
    assert r"-np 8 -H gpu-a:4\,gpu-b:4" in result.stdout, result.stdout
    assert "--horovod" in result.stdout


def test_missing_data_is_one_line_error(tmp_path):
    result = script("run_pretraining_adam.sh", tmp_path / "nope", env={
        "RESULTS_DIR": str(tmp_path / "r"), "LOG_DIR": str(tmp_path)}, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"run_pretraining_adam.sh: error: {tmp_path / 'nope'} is "
                                     "missing; create or mount it (or set the variable naming it)")


@pytest.fixture(scope="module")
def data(tmp_path_factory, vocab_file, sample_corpus):
    """Text files from the sample corpus and TFRecords of seq 128/20, 512/80 and 512/76."""
    root = tmp_path_factory.mktemp("scripts")
    with open(sample_corpus, encoding="utf-8") as f:
        documents = f.read().split("\n\n")
    text = root / "text"
    text.mkdir()
    for i in range(3):
        (text / f"part-{i}").write_text("\n\n".join(documents[10 * i:10 * i + 10]), "utf-8")
    (text / "eval.txt").write_text("\n\n".join(documents[30:36]), "utf-8")
    for seq, pred in ((128, 20), (512, 80), (512, 76)):
        for split in ("train", "eval"):
            out = root / f"{seq}_{pred}" / split
            out.mkdir(parents=True)
            source = text / ("eval.txt" if split == "eval" else "part-0")
            shards = ["part-0.tfrecord", "part-1.tfrecord"] if split == "train" else ["e.tfrecord"]
            run_cli(["create_pretraining_data.py", f"--input_file={source}",
                     f"--output_file={','.join(str(out / shard) for shard in shards)}",
                     f"--vocab_file={vocab_file}",
                     f"--max_seq_length={seq}", f"--max_predictions_per_seq={pred}",
                     "--dupe_factor=1"])
    (root / "bert_config.json").write_text(json.dumps(TINY_CONFIG), "utf-8")
    return root


def last_throughput(output_dir):
    with open(os.path.join(output_dir, "train_log.jsonl"), encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    return [r["data"]["throughput_train"] for r in lines if "throughput_train" in r["data"]][-1]


def test_adam_script_trains_and_logs(tmp_path, data):
    """run_pretraining_adam.sh runs 3 real steps (batch 4) and writes the DLPerf-named log."""
    (tmp_path / "d").mkdir()
    os.symlink(data / "128_20" / "train", tmp_path / "d" / "tfrecord")
    script("run_pretraining_adam.sh", tmp_path / "d", 1, 4, 3, "fp32", "false", 7, env={
        "BERT_CONFIG": str(data / "bert_config.json"), "RESULTS_DIR": str(tmp_path / "out"),
        "LOG_DIR": str(tmp_path / "logs")})
    assert os.path.exists(tmp_path / "out" / "model.ckpt-3.index")
    assert "step 3:" in (tmp_path / "logs" / "bert_b4_fp32_7.log").read_text()


def test_lamb_script_runs_both_phases(tmp_path, data):
    """Phase 1 (seq 128) then phase 2 (seq 512) from phase 1's last checkpoint, few real steps."""
    phases = tmp_path / "data"
    for n, source in ((1, "128_20"), (2, "512_80")):
        (phases / f"phase{n}").mkdir(parents=True)
        os.symlink(data / source / "train", phases / f"phase{n}" / "training")
        os.symlink(data / source / "eval", phases / f"phase{n}" / "test")
    # batch 4/2, eval 4, fp32, no XLA, 1 GPU, warm-up 1/1, 10 steps (9 + 10/10*4/2 = 2), accum 1/1
    script("run_pretraining_lamb.sh", 4, 2, 4, "1e-3", "1e-3", "fp32", "false", 1, 1, 1, 10, 100,
           1, 1, "base", env={"DATA_DIR": str(phases), "RESULTS_DIR": str(tmp_path / "out"),
                              "BERT_CONFIG": str(data / "bert_config.json")})
    assert os.path.exists(tmp_path / "out" / "phase_1" / "model.ckpt-9.index")
    assert os.path.exists(tmp_path / "out" / "phase_2" / "model.ckpt-2.index")
    assert "masked_lm_accuracy" in (tmp_path / "out" / "phase_2" / "eval_results.txt").read_text()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data):
    """A tiny-model checkpoint standing in for MLPerf's model.ckpt-28252."""
    out = tmp_path_factory.mktemp("ckpt")
    run_cli(["run_pretraining.py", f"--bert_config_file={data / 'bert_config.json'}",
             f"--input_files_dir={data / '512_76' / 'train'}", f"--output_dir={out}",
             "--do_train", "--train_batch_size=2", "--max_seq_length=512",
             "--max_predictions_per_seq=76", "--num_train_steps=1", "--num_warmup_steps=0"])
    return out / "model.ckpt-1"


@pytest.mark.parametrize("name,env,extra,evaluated_at", [
    ("run_1card_FPS.sh", {"CUDA_VISIBLE_DEVICES": "0"}, [], [3]),
    ("run_multi_card_FPS.sh", {"HOSTS": "localhost:2"}, ["--eval_interval_samples=8"], [2, 3])])
def test_fps_scripts_print_fps_and_accuracy(tmp_path, data, checkpoint, name, env, extra,
                                            evaluated_at):
    """The BI-V100 scripts, run from the repository root as their instructions say, train from
    a checkpoint with the published flags (steps overridden) and end with the FPS and eval
    accuracy lines. The multi-card one runs through the multi-node form (HOSTS) with 2 real
    ranks, evaluating during training (every 8 samples = 2 updates of 2 x 2, and at the last
    step): both ranks evaluate in their sessions and finish together."""
    result = script(name, f"--input_files_dir={data / '512_76' / 'train'}",
                    f"--eval_files_dir={data / '512_76' / 'eval'}",
                    f"--init_checkpoint={checkpoint}", "--train_batch_size=2",
                    f"--bert_config_file={data / 'bert_config.json'}", "--num_train_steps=3",
                    "--num_accumulation_steps=1", "--max_eval_steps=2", "--eval_batch_size=4",
                    "--display_loss_steps=1", *extra,
                    env={**env, "OUTPUT_DIR": str(tmp_path / "out")})
    lines = result.stdout.strip().splitlines()
    assert f"FPS: {last_throughput(tmp_path / 'out'):.2f} sequences/s" in lines
    assert any(line.startswith("eval masked_lm_accuracy: ") for line in lines)
    with open(tmp_path / "out" / "train_log.jsonl", encoding="utf-8") as f:
        evaluations = [r["data"] for r in map(json.loads, f) if r["type"] == "eval"]
    assert [e["global_step"] for e in evaluations] == evaluated_at


def test_mlperf_runner_trains_from_config(tmp_path, data, checkpoint):
    """run_mlperf.sh config_A100x1x1 with MAX_STEPS/BATCHSIZE overrides trains in MLPerf mode:
    evaluations during training, OUTPUT_DIR/mlperf.log ending "aborted" (a tiny model misses
    0.720) that the compliance checker accepts (open division: the closed one also demands the
    target), and the accuracy and time-to-train lines at the end."""
    from test_time_to_train import check_log, mlperf_events

    mlperf = tmp_path / "mlperf"
    mlperf.mkdir()
    os.symlink(data / "512_76" / "train", mlperf / "training")
    os.symlink(data / "512_76" / "eval", mlperf / "eval_10k")
    result = script("run_mlperf.sh", "config_A100x1x1", "--max_eval_steps=2",
                    "--mlperf_division=open", env={
                        "DATA_DIR": str(mlperf), "INIT_CHECKPOINT": str(checkpoint),
                        "MAX_STEPS": "4", "BATCHSIZE": "2", "EVAL_BATCHSIZE": "4",
                        "EVAL_INTERVAL_SAMPLES": "4", "OUTPUT_DIR": str(tmp_path / "out"),
                        "BERT_CONFIG": str(data / "bert_config.json")})
    assert os.path.exists(tmp_path / "out" / "model.ckpt-4.index")
    assert "eval masked_lm_accuracy: " in result.stdout
    assert "time to train: " in result.stdout and "(aborted), 4 steps" in result.stdout
    log = tmp_path / "out" / "mlperf.log"
    events = mlperf_events(log)
    assert [m["epoch_num"] for k, _, m in events if k == "eval_accuracy"] == [4, 8]
    assert events[-1][0] == "run_stop" and events[-1][2]["status"] == "aborted"
    checked = check_log(log)
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]


def test_prepare_data_is_resumable_and_checks_md5(tmp_path, data):
    """A bad md5 stops before any work, naming the file; a run writes one shard per text file
    and the eval set; a re-run after deleting one shard rewrites only that shard."""
    text, out = data / "text", tmp_path / "prepared"
    md5_file = tmp_path / "md5.txt"
    md5_file.write_text("0" * 32 + "  part-1\n")
    env = {"SEQ": "128", "PREDICTIONS": "20", "DUPE": "1", "EVAL_DUPE": "2",
           "EVAL_EXAMPLES": "20", "JOBS": "2"}
    bad = script("prepare_data.sh", text, out, env={**env, "MD5_FILE": str(md5_file)},
                 check=False)
    assert bad.returncode == 1 and f"check_md5: {text / 'part-1'}: FAILED" in bad.stderr
    assert not out.exists()

    first = script("prepare_data.sh", text, out, env=env)
    shards = sorted(os.listdir(out / "training"))
    assert shards == ["part-0.tfrecord", "part-1.tfrecord", "part-2.tfrecord"]
    assert "[prepare] training 3/3" in first.stdout
    assert "picked 20 of" in first.stdout
    kept = (out / "training" / "part-0.tfrecord").stat().st_mtime_ns
    (out / "training" / "part-2.tfrecord").unlink()
    second = script("prepare_data.sh", text, out, env=env)
    assert "2 already done, 1 to write" in second.stdout
    assert "eval set already done" in second.stdout
    assert (out / "training" / "part-0.tfrecord").stat().st_mtime_ns == kept
    assert os.path.exists(out / "training" / "part-2.tfrecord")


def test_squad_script_fine_tunes_predicts_and_reports(tmp_path):
    """run_squad.sh with a tiny BERT (random weights) on a few SQuAD questions: trains,
    predicts, and prints EM, F1, sequences/s and where predictions.json is."""
    import tensorflow as tf
    from test_squad import DEV, TRAIN, subset

    import modeling

    bert_dir = tmp_path / "bert"
    bert_dir.mkdir()
    (bert_dir / "bert_config.json").write_text(json.dumps(TINY_CONFIG), "utf-8")
    os.symlink(os.path.join(REPO, "data", "vocab.txt"), bert_dir / "vocab.txt")
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        modeling.BertModel(modeling.BertConfig.from_dict(TINY_CONFIG), False,
                           tf.zeros([1, 8], tf.int32))
        session.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(session, str(bert_dir / "bert_model.ckpt"))
    result = script("run_squad.sh", 16, "1e-3", "fp32", "false", 1, 128, 64, 1.0, env={
        "BERT_DIR": str(bert_dir), "TRAIN_FILE": subset(TRAIN, tmp_path / "train.json", 60),
        "PREDICT_FILE": subset(DEV, tmp_path / "dev.json", 80),
        "RESULTS_DIR": str(tmp_path / "out"), "LOG_DIR": str(tmp_path / "logs")})
    lines = result.stdout.splitlines()
    assert any(line.startswith("EM: ") and "F1: " in line for line in lines), result.stdout[-2000:]
    assert any(line.startswith("training: ") for line in lines)
    assert f"predictions: {tmp_path / 'out' / 'predictions.json'}" in lines
    assert (tmp_path / "logs" / "squad_b16_fp32_1gpu.log").exists()
