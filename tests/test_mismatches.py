"""run_pretraining.py stops before the first step, in one line, when the checkpoint it would start
from (--init_checkpoint, or the latest in --output_dir) or the data does not fit the config."""

import json
import os
import shutil

import pytest
import tensorflow as tf
from conftest import run_cli
from test_run_pretraining import (  # noqa: F401 (data is a fixture)
    PRED,
    TINY_CONFIG,
    args,
    data,
    write_google_checkpoint,
)

import modeling
import session_setup

# Config changes the tiny model's checkpoint does not fit: (key, value in the config). The
# checkpoint (TINY_CONFIG) has vocab 30522, hidden 32, 2 layers, 64 positions, 2 token types,
# intermediate 64, 2 heads (the last only in the bert_config.json beside it).
CHECKPOINT_CASES = [
    ("vocab_size", 30600),
    ("hidden_size", 64),
    ("num_hidden_layers", 1),  # the checkpoint has more layers than the config
    ("num_hidden_layers", 3),  # ... fewer
    ("max_position_embeddings", 128),
    ("type_vocab_size", 3),
    ("intermediate_size", 128),
    ("num_attention_heads", 4),
]
CASE_IDS = ["vocab", "hidden", "more-layers", "fewer-layers", "positions", "token-types",
            "intermediate", "heads"]


def config_with(directory, key, value):
    path = directory / f"config_{key}_{value}.json"
    path.write_text(json.dumps(dict(TINY_CONFIG, **{key: value})))
    return path


def files_and_times(directory):
    return {path: os.path.getmtime(os.path.join(directory, path))
            for path in sorted(os.listdir(directory))}


def assert_one_line_error(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("run_pretraining.py: error:"), result.stderr[-2000:]
    for needle in needles:
        assert needle in last, (needle, last)
    # No session was made (MonitoredSession logs this when it builds one): no step ran.
    assert "Graph was finalized" not in result.stderr
    return last


@pytest.fixture(scope="module")
def google_checkpoint(tmp_path_factory):
    """The tiny model's weights as Google releases them: bert_model.ckpt + bert_config.json."""
    directory = tmp_path_factory.mktemp("google")
    write_google_checkpoint(str(directory / "bert_model.ckpt"), 0.5)
    (directory / "bert_config.json").write_text(json.dumps(TINY_CONFIG))
    return directory / "bert_model.ckpt"


@pytest.fixture(scope="module")
def trained_run(data, tmp_path_factory):  # noqa: F811 (the fixture)
    """An output_dir of 2 training steps of the tiny model, with the config beside it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run_cli(args(data, out, "--do_train", steps=2))
    (out / "bert_config.json").write_text(json.dumps(TINY_CONFIG))
    return out


def assert_names_the_difference(message, key, value, *needles):
    """`message` names the config key, the checkpoint's value, the config's and `needles`."""
    for needle in (f"{key} is {TINY_CONFIG[key]} in the checkpoint", f"but {value} in the",
                   *needles):
        assert needle in message, (needle, message)


@pytest.mark.parametrize("key, value", CHECKPOINT_CASES, ids=CASE_IDS)
def test_every_architecture_difference_is_named(google_checkpoint, trained_run, tmp_path, key,
                                                value):
    """Property: a checkpoint as Google releases it and a checkpoint of our own runs (optimizer
    slots beside the weights) are both found not to fit a config that differs in `key`, in one
    line naming the checkpoint, the config file, the key, both values and the fix (the check
    the CLI runs before building anything; the CLI tests below run it end to end)."""
    config_file = config_with(tmp_path, key, value)
    config = modeling.BertConfig.from_json_file(str(config_file))
    latest = tf.train.latest_checkpoint(str(trained_run))
    for prefix in (str(google_checkpoint), latest):
        with pytest.raises(ValueError) as error:
            session_setup.check_checkpoint_fits(prefix, f"checkpoint {prefix}", config,
                                                str(config_file), "the fix")
        message = str(error.value)
        assert "\n" not in message
        assert message.startswith(f"checkpoint {prefix} does not fit --bert_config_file="
                                  f"{config_file}: ") and message.endswith("; the fix")
        assert_names_the_difference(message, key, value)
    tiny = modeling.BertConfig.from_dict(TINY_CONFIG)
    session_setup.check_checkpoint_fits(str(google_checkpoint), "fits", tiny, "tiny.json",
                                        "the fix")  # the unchanged config fits: no error


# End to end, for a difference the variables' shapes show and one only bert_config.json shows.
CLI_CASES = [("vocab_size", 30600), ("num_attention_heads", 4)]


@pytest.mark.parametrize("key, value", CLI_CASES, ids=["vocab", "heads"])
def test_init_checkpoint_that_does_not_fit_the_config_fails_first(
        data, google_checkpoint, tmp_path, key, value):  # noqa: F811
    """Property: an --init_checkpoint whose architecture differs from --bert_config_file in
    `key` stops the run before any graph or step, with one line naming the checkpoint, the
    config file, the key, both values and the fix; nothing is written to --output_dir."""
    config = config_with(tmp_path, key, value)
    out = tmp_path / "run"
    result = run_cli([*args(data, out, "--do_train", f"--init_checkpoint={google_checkpoint}",
                            f"--bert_config_file={config}", steps=3)], check=False)
    last = assert_one_line_error(result)
    assert_names_the_difference(last, key, value, f"--init_checkpoint={google_checkpoint}",
                                str(config),
                                "pass the bert_config.json the checkpoint was trained with")
    assert not out.exists()


@pytest.mark.parametrize("key, value", [("num_hidden_layers", 3)], ids=["fewer-layers"])
def test_resume_checkpoint_that_does_not_fit_the_config_fails_first(
        trained_run, data, tmp_path, key, value):  # noqa: F811
    """Property: re-running an --output_dir with a --bert_config_file whose `key` differs from
    the checkpoint there stops before restoring or stepping, in one line naming the checkpoint,
    the key, both values and the fix; the checkpoint and every file beside it stay unchanged."""
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    before = files_and_times(out)
    config = config_with(tmp_path, key, value)
    result = run_cli([*args(data, out, "--do_train", f"--bert_config_file={config}", steps=4)],
                     check=False)
    latest = tf.train.latest_checkpoint(str(out))
    last = assert_one_line_error(result)
    assert_names_the_difference(last, key, value, f"the checkpoint {latest} in --output_dir",
                                str(config), "or a new --output_dir")
    assert files_and_times(out) == before
    assert latest.endswith("model.ckpt-2")


@pytest.mark.parametrize("change, needles", [
    ({"max_predictions_per_seq": PRED + 2},
     [f"--max_predictions_per_seq={PRED + 2} but the records of", f"--max_predictions_per_seq={PRED}"]),
    ({"vocab_size": 1000},
     ["the first record has token id", "vocab_size of --bert_config_file=", "is 1000",
      "made with a bigger vocabulary"]),
    ({"type_vocab_size": 1},
     ["the first record has segment id 1 in segment_ids", "type_vocab_size of",
      "is 1", "type_vocab_size > 1"]),
], ids=["predictions", "token-ids", "segment-ids"])
def test_data_that_does_not_fit_the_flags_or_config_fails_first(data, tmp_path, change,  # noqa: F811
                                                                needles):
    """Property: records with a different max_predictions_per_seq than the flag, token ids
    beyond the config's vocab_size (data made with a bigger vocabulary) or segment ids beyond
    its type_vocab_size stop the run before any graph or step, in one line naming the file and
    the fix; nothing is written."""
    out = tmp_path / "run"
    extra = ["--do_train"]
    if "max_predictions_per_seq" in change:
        extra.append(f"--max_predictions_per_seq={change['max_predictions_per_seq']}")
    else:
        [(key, value)] = change.items()
        extra.append(f"--bert_config_file={config_with(tmp_path, key, value)}")
    result = run_cli([*args(data, out, *extra, steps=2)], check=False)
    last = assert_one_line_error(result, *needles)
    assert str(data / "train") in last
    assert not out.exists()
