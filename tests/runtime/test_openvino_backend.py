"""OpenVINO runs ssdkit's ONNX files as ONNX Runtime does: the same raw
outputs and the same detections through the same Detector (the checked-in
fixtures; the tiny export's int8 QDQ file is in tests/convert/test_onnx_export.py)."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

from ssdkit.runtime import Detector  # noqa: E402
from ssdkit.runtime.backends import open_backend  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models"
IMAGES = Path(__file__).resolve().parents[1] / "fixtures" / "images"


def _photo(name: str) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    return cv2.cvtColor(cv2.imread(str(IMAGES / name)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def photos():
    return [_photo("astronaut.png"), _photo("chelsea.png")]


def _pairs(a, b):
    assert len(a) == len(b) and a, (len(a), len(b))
    for x, y in zip(sorted(a, key=lambda d: -d.score), sorted(b, key=lambda d: -d.score)):
        assert x.label == y.label
        np.testing.assert_allclose(x.box, y.box, atol=0.05)  # pixels
        assert abs(x.score - y.score) < 1e-4


def test_raw_outputs_match_onnx_runtime(photos):
    path = MODELS / "ssdlite_mnv3_small_raw.onnx"
    with Detector(path, backend="onnx") as ort, Detector(path, backend="openvino") as ov:
        assert ov.backend.name == "openvino" and ov.spec == ort.spec  # the spec read from OpenVINO's rt_info
        for photo in photos:
            a, b = ort.run_raw(photo), ov.run_raw(photo)
            np.testing.assert_allclose(b.box_encodings, a.box_encodings, atol=1e-4, rtol=1e-4)
            np.testing.assert_allclose(b.class_scores, a.class_scores, atol=1e-5)


@pytest.mark.parametrize("name", ["ssdlite_mnv3_small_raw.onnx", "ssdlite_mnv3_small_nms.onnx"])
def test_detections_match_onnx_runtime_batched_and_single(photos, name):
    path = MODELS / name
    with Detector(path, backend="onnx", score_threshold=0.3) as ort, \
            Detector(path, backend="openvino", score_threshold=0.3) as ov:
        expected = ort.detect_batch(photos)
        batched = ov.detect_batch(photos)  # a dynamic batch: one call for both photos
        for want, got, photo in zip(expected, batched, photos):
            _pairs(want, got)
            _pairs(want, ov.detect(photo))


def test_unknown_device_is_one_clear_error():
    with pytest.raises(ValueError, match=r"cannot compile the model for device 'NOSUCH' \(available: .*CPU"):
        open_backend(MODELS / "ssdlite_mnv3_small_raw.onnx", "openvino:NOSUCH")
    with pytest.raises(ValueError, match="unknown backend 'onnx:GPU'"):
        open_backend(MODELS / "ssdlite_mnv3_small_raw.onnx", "onnx:GPU")


def test_a_file_openvino_cannot_read_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.onnx: not a model OpenVINO can read"):
        open_backend(bad, "openvino")


def test_an_openvino_ir_with_the_spec_in_rt_info_runs_as_its_onnx(photos, tmp_path):
    """An IR (``.xml`` + ``.bin``) from ``ov.convert_model`` with the spec as
    rt_info ``ssdkit_spec``: opened by file name, spec read without TensorFlow."""
    import openvino as ov

    from ssdkit.runtime.model_files import ONNX_KEY

    onnx_path = MODELS / "ssdlite_mnv3_small_raw.onnx"
    with Detector(onnx_path, backend="onnx", score_threshold=0.3) as ort:
        model = ov.convert_model(str(onnx_path))
        model.set_rt_info(ort.backend.metadata()[ONNX_KEY], [ONNX_KEY])
        ov.save_model(model, str(tmp_path / "model.xml"), compress_to_fp16=False)
        with Detector(tmp_path / "model.xml", score_threshold=0.3) as ir:
            assert ir.backend.name == "openvino" and ir.spec == ort.spec
            _pairs(ort.detect(photos[0]), ir.detect(photos[0]))
