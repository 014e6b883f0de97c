"""``ssdkit quantize``: ai-edge-quantizer on the tiny network's fp32 raw export,
calibrated through the runtime's preprocessing; the result is integer-only and
runs in the runtime with outputs close to the float model's."""
import numpy as np
import pytest

pytest.importorskip("ai_edge_quantizer")


def _op_types(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return interpreter, tensors, [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]


@pytest.fixture(scope="module")
def calibration_folder(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_quantized_model_is_integer_and_runs_in_the_runtime(tiny_tflite, calibration_folder, tmp_path, capsys):
    from ssdkit.cli import main
    from ssdkit.runtime import Detector

    fp32 = tiny_tflite(quant="fp32", nms=False)
    out = tmp_path / "tiny_aeq.tflite"
    assert main(["quantize", str(fp32), "--calib-data", str(calibration_folder), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    interpreter, tensors, ops = _op_types(out)
    dtypes = {tensors[i]["name"]: tensors[i]["dtype"] for op in ops for i in op["outputs"]}
    float_ops = [op["op_name"] for op in ops
                 if any(tensors[i]["dtype"] == np.float32 for i in [*op["inputs"], *op["outputs"]] if i >= 0)]
    assert float_ops == [], f"float ops left: {float_ops}"
    assert sum(dtype == np.int8 for dtype in dtypes.values()) > 10
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    with Detector(out, score_threshold=0.0) as detector, Detector(fp32, score_threshold=0.0) as reference:
        raw, expected = detector.run_raw(image), reference.run_raw(image)
        assert len(detector.detect(image)) > 0
    for got, want in ((raw.box_encodings, expected.box_encodings), (raw.class_scores, expected.class_scores)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=0.25)  # int8 of an untrained net: same outputs, coarser


def test_quantize_refuses_models_it_cannot_serve(tiny_tflite, calibration_folder, tmp_path, capsys):
    from ssdkit.cli import main

    assert main(["quantize", str(tiny_tflite(quant="fp32")), "--calib-data", str(calibration_folder),
                 "--out", str(tmp_path / "a.tflite")]) == 2
    assert "has the postprocess op" in capsys.readouterr().err
    int8 = tiny_tflite(quant="int8", nms=False).parent / "ssd_mnv2_int8_nonms.tflite"  # the fixture returns report.md
    assert main(["quantize", str(int8), "--calib-data", str(calibration_folder),
                 "--out", str(tmp_path / "b.tflite")]) == 2
    assert "expected a float32 model" in capsys.readouterr().err
    existing = tmp_path / "c.tflite"
    existing.write_bytes(b"mine")
    assert main(["quantize", str(tiny_tflite(quant="fp32", nms=False)), "--calib-data", str(calibration_folder),
                 "--out", str(existing)]) == 2
    assert existing.read_bytes() == b"mine"
    assert not list(tmp_path.glob("[ab].tflite"))
