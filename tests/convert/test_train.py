"""Training: targets and losses by hand, a few real steps, kill and resume, tf.distribute."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ssdkit.convert.train.targets import IGNORED, UNMATCHED, assign, match
from ssdkit.runtime.box_coder import encode

tf = pytest.importorskip("tensorflow")

ANCHORS = np.array([
    [0.0, 0.0, 0.5, 0.5],   # 0: IoU 1 with gt 0
    [0.0, 0.0, 0.4, 0.4],   # 1: IoU 0.64 with gt 0
    [0.5, 0.5, 1.0, 1.0],   # 2: nothing
    [0.6, 0.6, 0.7, 0.7],   # 3: IoU 0.25 with gt 1, its best anchor -> forced match
], np.float32)
GT = np.array([[0.0, 0.0, 0.5, 0.5], [0.55, 0.55, 0.75, 0.75]], np.float32)


def test_argmax_matcher_with_forced_matches_by_hand():
    assert list(match(GT, ANCHORS)) == [0, 0, UNMATCHED, 1]
    assert list(match(np.zeros((0, 4), np.float32), ANCHORS)) == [UNMATCHED] * 4


def test_targets_by_hand():
    t = assign(GT, np.array([2, 0]), ANCHORS, num_classes=3)
    np.testing.assert_array_equal(t.box_weights, [1, 1, 0, 1])
    np.testing.assert_array_equal(t.class_weights, [1, 1, 1, 1])
    np.testing.assert_array_equal(t.class_targets, [[0, 0, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_allclose(t.box_targets[0], [0, 0, 0, 0], atol=1e-5)
    # anchor 1 (centre 0.2, size 0.4) against gt 0 (centre 0.25, size 0.5), scales 10, 10, 5, 5
    np.testing.assert_allclose(t.box_targets[1], [1.25, 1.25, 5 * np.log(1.25), 5 * np.log(1.25)], rtol=1e-4)
    np.testing.assert_allclose(t.box_targets[3], encode(GT[1:], ANCHORS[3:])[0], rtol=1e-5)


def test_crowd_boxes_are_ignored_not_background():
    crowd = np.array([False, True])
    anchors = np.concatenate([ANCHORS, [[0.55, 0.55, 0.75, 0.75]]]).astype(np.float32)
    t = assign(GT, np.array([2, 0]), anchors, 3, crowd=crowd)
    assert t.matches[4] == IGNORED and t.class_weights[4] == 0 and t.box_weights[4] == 0
    assert t.matches[3] == UNMATCHED  # a crowd box forces no match


def test_losses_by_hand():
    from ssdkit.convert.train.losses import hard_negative_mask, smooth_l1

    loss = smooth_l1(tf.constant([[[0.5, 2.0, 0.0, 0.0]]]), tf.zeros([1, 1, 4]), tf.ones([1, 1]))
    assert float(loss[0, 0]) == pytest.approx(0.5 * 0.25 + (2.0 - 0.5))
    class_loss = tf.constant([[5.0, 1.0, 4.0, 3.0, 2.0, 0.5, 0.1, 9.0]])
    positives = tf.constant([[1.0, 0, 0, 0, 0, 0, 0, 0]])
    weights = tf.constant([[1.0, 1, 1, 1, 1, 1, 1, 0]])  # anchor 7 ignored despite its loss
    mask = hard_negative_mask(class_loss, positives, weights).numpy()[0]
    np.testing.assert_array_equal(mask, [1, 0, 1, 1, 1, 0, 0, 0])  # the positive + the 3 hardest negatives


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from ssdkit.datasets.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root / "train", 24, seed=10, size=96)
    generate(root / "val", 6, seed=11, size=96)
    return root


TINY = ["--model", "ssd_mnv2", "--width", "0.35", "--input-size", "96", "--backbone-weights", "none", "--batch-size", "4"]


def _train_args(tiny_data, out, steps, *extra):
    return ["train", *TINY, "--data", str(tiny_data / "train" / "annotations.json"),
            "--val-data", str(tiny_data / "val" / "annotations.json"), "--steps", str(steps),
            "--out", str(out), "--warmup-steps", "2", "--lr", "0.02", *extra]


def test_a_few_steps_lower_the_loss(tiny_data, tmp_path):
    from ssdkit.datasets.coco import read_coco
    from ssdkit.convert.checkpoint import prepare_model
    from ssdkit.convert.train.loop import TrainConfig, train

    data = read_coco(tiny_data / "train" / "annotations.json")
    config = TrainConfig(steps=24, batch_size=4, learning_rate=0.02, warmup_steps=2, checkpoint_every=100,
                         eval_every=100, augment=False)
    history = train(lambda: prepare_model("ssd_mnv2", width=0.35, input_size=(96, 96), labels=data.labels,
                                          backbone_weights="none"), data, None, tmp_path, config)
    losses = history["loss"]
    assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6])
    assert (tmp_path / "ssd_mnv2.npz").is_file()


def test_killed_run_resumes_from_its_last_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ssdkit", *_train_args(tiny_data, out, 40, "--checkpoint-every", "4", "--eval-every", "40")]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # ssdkit's own default
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list((out / "state").glob("ckpt-8.index")) and time.monotonic() < deadline:
        assert process.poll() is None, "training ended before it could be killed"
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "ssd_mnv2.npz").exists()
    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    restored = int(resumed.stderr.split("at step ")[1].split()[0])
    assert restored >= 8
    assert "step 40/40" in resumed.stderr and "validation mAP" in resumed.stderr
    # Nothing but ssdkit's own lines: TensorFlow's C++ and Python logs are silenced without -v.
    assert all(line.startswith("ssdkit train: ") for line in resumed.stderr.splitlines()), resumed.stderr
    assert "untrained" not in resumed.stderr  # no "untrained: see `ssdkit train`" while training
    from ssdkit.convert.checkpoint import read_checkpoint

    assert read_checkpoint(out / "ssd_mnv2.npz").meta["train"]["step"] == 40


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "batch size must be an integer from 1 to 1024, got 0"),
    ("steps", 0, "step count must be an integer from 1 to 100000000, got 0"),
    ("learning_rate", -0.1, "learning rate must be a number above 0 and at most 10, got -0.1"),
    ("eval_every", 0, "evaluation interval must be an integer from 1 to 100000000, got 0"),
])
def test_train_config_rejects_bad_numbers_as_the_command_does(field, value, message):
    from ssdkit.convert.train.loop import TrainConfig

    with pytest.raises(ValueError) as error:
        TrainConfig(**{field: value})
    assert str(error.value) == message


def test_mirrored_strategy_on_two_logical_cpus(tiny_data, tmp_path):
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from ssdkit.cli import main
raise SystemExit(main({_train_args(tiny_data, tmp_path / 'mirrored', 3, '--strategy', 'mirrored', '--eval-every', '100')!r}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "step 3/3" in result.stderr
    assert (tmp_path / "mirrored" / "ssd_mnv2.npz").is_file()
