"""The shipped ssd_mnv2 demo checkpoint: the export default, it detects, and
its int8 export (calibrated like `make tflite`) detects the same shapes."""
import numpy as np
import pytest

from ssdkit.datasets.synth import LABELS, render
from ssdkit.runtime import Detector
from ssdkit.runtime.boxes import iou_matrix

pytest.importorskip("tensorflow")

VALIDATION = [render(seed=1, index=i) for i in range(12)]  # unseen images: the validation split's seed


def test_auto_weights_pick_the_shipped_checkpoint_only_for_the_stock_network():
    from ssdkit.convert.checkpoint import read_checkpoint
    from ssdkit.convert.checkpoint import resolve_weights

    shipped = resolve_weights("ssd_mnv2", "auto", customised=False)
    definition = read_checkpoint(shipped).definition
    assert (definition.name, definition.width, definition.spec.labels) == ("ssd_mnv2", 1.0, LABELS)
    assert shipped.stat().st_size < 10 * 2**20
    assert resolve_weights("ssd_mnv2", "auto", customised=True) is None
    assert resolve_weights("ssd_mnv1", None, customised=False) is None  # no shipped weights: untrained
    assert resolve_weights("ssd_mnv2", "none", customised=False) is None
    assert resolve_weights("ssd_mnv2", "my.npz", customised=False) == "my.npz"


def test_the_shipped_checkpoint_is_known_to_be_trained_on_the_synthetic_shapes(tmp_path):
    """The quantization report's synthetic mAP is for such models only; a copy
    of the file elsewhere, without a training record, is of unknown data."""
    from ssdkit.convert.checkpoint import read_checkpoint, resolve_weights, training_data
    from ssdkit.datasets.synth import SYNTHETIC_DATA

    shipped = resolve_weights("ssd_mnv2", "auto", customised=False)
    assert training_data(read_checkpoint(shipped)) == SYNTHETIC_DATA
    copy = tmp_path / shipped.name
    copy.write_bytes(shipped.read_bytes())
    assert training_data(read_checkpoint(copy)) is None


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from ssdkit.calibration.representative import representative_images
    from ssdkit.convert.checkpoint import prepare_model, resolve_weights
    from ssdkit.convert.savedmodel.keras2savedmodel import export_savedmodel
    from ssdkit.convert.tflite.savedmodel2tflite import TFLiteOptions, export_tflite_variants

    model = prepare_model("ssd_mnv2", resolve_weights("ssd_mnv2", "auto", customised=False))
    out = tmp_path_factory.mktemp("shipped")
    saved_model = export_savedmodel(model, out / "saved_model")
    variants = [TFLiteOptions(quant="fp32"), TFLiteOptions(quant="int8")]
    fp32, int8 = export_tflite_variants(saved_model, model.spec, out, variants, representative_images(None, 16))
    return {"fp32": fp32, "int8": int8}


def _recall(path) -> float:
    """Fraction of the validation shapes found (IoU >= 0.5, same class) at score 0.5."""
    found = total = 0
    with Detector(path, score_threshold=0.5) as detector:
        for image, boxes, classes in VALIDATION:
            total += len(boxes)
            detections = detector.detect(image)
            if detections:
                predicted = np.array([d.box for d in detections]) / image.shape[0]
                same_class = classes[:, None] == np.array([d.class_id for d in detections])[None, :]
                found += int(((iou_matrix(boxes, predicted) >= 0.5) & same_class).any(axis=1).sum())
    return found / total


def test_shipped_checkpoint_detects_validation_shapes(exported):
    assert _recall(exported["fp32"]) > 0.7


def test_int8_finds_what_fp32_finds(exported):
    assert _recall(exported["int8"]) > _recall(exported["fp32"]) - 0.05
