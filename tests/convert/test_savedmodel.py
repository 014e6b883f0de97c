"""SavedModel export: round trip, spec readable without TensorFlow, checkpoints."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from ssdkit.convert.savedmodel import tf_box_coder  # noqa: E402
from ssdkit.convert.checkpoint import read_checkpoint, save_checkpoint  # noqa: E402
from ssdkit.convert.export import export  # noqa: E402
from ssdkit.convert.checkpoint import prepare_model  # noqa: E402
from ssdkit.convert.models.ssd import UntrainedWarning  # noqa: E402
from ssdkit.runtime import box_coder  # noqa: E402
from ssdkit.runtime.spec import ModelSpec  # noqa: E402

LABELS = ("circle", "square", "triangle")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small ssd_mnv2 exported once for the module."""
    with pytest.warns(UntrainedWarning, match="ssd_mnv2 is untrained"):
        model = prepare_model("ssd_mnv2", width=0.35, input_size=(96, 96), labels=LABELS, backbone_weights="none")
    out = tmp_path_factory.mktemp("export")
    (path,) = export(model, "savedmodel", out)
    return model, path


def test_layout_and_spec_without_tensorflow(tiny):
    model, path = tiny
    assert path.name == "saved_model" and (path / "saved_model.pb").is_file()
    spec = ModelSpec.from_json((path / "assets.extra" / "ssdkit_spec.json").read_text())
    assert spec == model.spec
    assert (path / "assets.extra" / "labels.txt").read_text().split("\n")[:3] == list(LABELS)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_raw_signature_equals_keras(tiny):
    model, path = tiny
    loaded = tf.saved_model.load(str(path))
    image = np.random.default_rng(1).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    raw = loaded.signatures["raw"](normalized_images=tf.constant(image))
    keras_out = model.keras_model(image, training=False)
    assert raw["box_encodings"].shape == (1, model.spec.num_anchors, 4)
    assert raw["class_predictions"].shape == (1, model.spec.num_anchors, len(LABELS) + 1)
    np.testing.assert_allclose(raw["class_predictions"].numpy(), keras_out["class_predictions"].numpy(), atol=1e-5)
    batch = loaded.signatures["raw_batch"](normalized_images=tf.constant(np.concatenate([image, image])))
    assert batch["box_encodings"].shape == (2, model.spec.num_anchors, 4)
    np.testing.assert_allclose(batch["box_encodings"].numpy()[1], raw["box_encodings"].numpy()[0], atol=1e-5)


def test_serving_default_top_detection_is_best_decoded_anchor(tiny):
    model, path = tiny
    loaded = tf.saved_model.load(str(path))
    image = np.random.default_rng(2).integers(0, 256, (1, 96, 96, 3), dtype=np.uint8)
    out = loaded.signatures["serving_default"](images=tf.constant(image))
    assert set(out) == {"detection_boxes", "detection_classes", "detection_scores", "num_detections"}
    assert out["detection_boxes"].shape == (1, 100, 4)
    # The same image through the raw signature, decoded with the numpy coder.
    normalized = (image.astype(np.float32) - 127.5) / 127.5
    raw = loaded.signatures["raw"](normalized_images=tf.constant(normalized))
    scores = 1 / (1 + np.exp(-raw["class_predictions"].numpy()[0, :, 1:]))
    top_score = out["detection_scores"].numpy()[0, 0]
    assert top_score == pytest.approx(scores.max(), abs=1e-6)
    # Random weights give near-ties: accept any (anchor, class) pair with the top score.
    boxes = np.clip(box_coder.decode(raw["box_encodings"].numpy()[0], model.spec.anchor_corners()), 0, 1)
    candidates = [(a, c) for a, c in zip(*np.nonzero(np.abs(scores - top_score) < 1e-6))]
    assert any(
        out["detection_classes"].numpy()[0, 0] == c + 1  # 1-based, as the OD API exports
        and np.allclose(out["detection_boxes"].numpy()[0, 0], boxes[a], atol=1e-5)
        for a, c in candidates
    )
    assert out["num_detections"].numpy()[0] == 100  # score threshold 1e-8, as the OD API configs


def test_tf_box_coder_matches_numpy():
    rng = np.random.default_rng(3)
    corner = rng.uniform(0, 0.7, (20, 2))
    anchors = np.concatenate([corner, corner + rng.uniform(0.05, 0.3, (20, 2))], axis=1).astype(np.float32)
    boxes = (anchors + rng.uniform(-0.05, 0.05, anchors.shape)).astype(np.float32)
    scales = (10.0, 10.0, 5.0, 5.0)
    codes = tf_box_coder.encode(tf.constant(boxes), tf.constant(anchors), scales).numpy()
    np.testing.assert_allclose(codes, box_coder.encode(boxes, anchors, scales), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tf_box_coder.decode(tf.constant(codes), tf.constant(anchors), scales).numpy(),
                               box_coder.decode(codes, anchors, scales), atol=1e-5)


def test_checkpoint_round_trip(tiny, tmp_path):
    model, _ = tiny
    path = save_checkpoint(model, tmp_path / "tiny.npz", extra={"train": {"step": 3}})
    checkpoint = read_checkpoint(path)
    assert checkpoint.version == 2 and checkpoint.definition == model.definition
    assert checkpoint.definition.spec.labels == LABELS and checkpoint.meta == {"train": {"step": 3}}
    again = prepare_model(None, path)  # the checkpoint knows its model
    image = np.random.default_rng(4).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    for key in ("box_encodings", "class_predictions"):
        np.testing.assert_array_equal(again.keras_model(image)[key].numpy(), model.keras_model(image)[key].numpy())
    half = save_checkpoint(model, tmp_path / "half.npz", dtype="float16")
    assert half.stat().st_size < 0.6 * path.stat().st_size


def test_checkpoint_that_does_not_fit_names_the_problem(tiny, tmp_path):
    model, _ = tiny
    path = save_checkpoint(model, tmp_path / "tiny.npz")
    with pytest.raises(ValueError, match="checkpoint has width=0.35, which conflicts with 1.0"):
        prepare_model("ssd_mnv2", path, width=1.0)
    with pytest.raises(ValueError, match="checkpoint is for ssd_mnv2, not ssd_mnv1"):
        prepare_model("ssd_mnv1", path)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz: not an ssdkit checkpoint"):
        prepare_model("ssd_mnv2", bad)
