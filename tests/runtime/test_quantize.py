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


def _int16_ops(path):
    """Output tensor name -> (input dtype, output dtype) of the ops with an int16 output."""
    interpreter, tensors, ops = _op_types(path)
    found = {}
    for op in ops:
        out = tensors[op["outputs"][0]]
        if out["dtype"] == np.int16 and op["op_name"] != "QUANTIZE":  # QUANTIZE: the int8/int16 borders
            found[out["name"]] = (op["op_name"], tensors[op["inputs"][0]]["dtype"])
    return found


def test_recipe_gives_the_named_layers_16_bit_activations(tiny_tflite, calibration_folder, tmp_path, capsys):
    """Single layers at a16w8 between int8 neighbours: int16 in and out, QUANTIZE ops at the borders."""
    from ssdkit.cli import main
    from ssdkit.runtime import Detector
    from ssdkit.runtime.quantize import op_outputs

    fp32 = tiny_tflite(quant="fp32", nms=False)
    interpreter, tensors, ops = _op_types(fp32)
    convs = [tensors[op["outputs"][0]]["name"] for op in ops if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    chosen = [convs[3], convs[8]]
    assert all(name in [outputs[0] for outputs in op_outputs(fp32)] for name in chosen)
    out = tmp_path / "tiny_a16w8.tflite"
    assert main(["quantize", str(fp32), "--calib-data", str(calibration_folder), "--recipe", ",".join(chosen),
                 "--out", str(out)]) == 0
    int16 = _int16_ops(out)
    assert set(int16) == set(chosen), f"int16 ops: {sorted(int16)}"
    assert all(input_dtype == np.int16 for _, input_dtype in int16.values())
    _, tensors, ops = _op_types(out)
    assert sum(op["op_name"] == "QUANTIZE" for op in ops) >= 2 * len(chosen)  # int8 -> int16 -> int8
    float_ops = [op["op_name"] for op in ops
                 if any(tensors[i]["dtype"] == np.float32 for i in [*op["inputs"], *op["outputs"]] if i >= 0)]
    assert float_ops == []
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    with Detector(out, score_threshold=0.0) as detector, Detector(fp32, score_threshold=0.0) as reference:
        raw, expected = detector.run_raw(image), reference.run_raw(image)
        assert len(detector.detect(image)) > 0
    np.testing.assert_allclose(raw.class_scores, expected.class_scores, atol=0.25)
    assert main(["quantize", str(fp32), "--calib-data", str(calibration_folder), "--recipe", "no/such/layer",
                 "--out", str(tmp_path / "x.tflite")]) == 2
    assert "no op with output 'no/such/layer'" in capsys.readouterr().err
    assert not (tmp_path / "x.tflite").exists()


def test_recipe_auto_takes_the_worst_layers_of_the_export_ranking(tiny_tflite, calibration_folder, tmp_path):
    """--recipe auto reads the node data an int8 export with --layer-errors wrote and puts its worst layers at int16."""
    import json
    import shutil

    from ssdkit.cli import main
    from ssdkit.runtime.model_files import node_data_path
    from ssdkit.runtime.quantize import op_outputs, ranked_layers

    folder = tiny_tflite(quant="int8", nms=False, layer_errors=True).parent  # the fixture returns report.md
    int8 = folder / "ssd_mnv2_int8_nonms.tflite"
    for name in ("ssd_mnv2_fp32_nonms.tflite", int8.name, node_data_path(int8).name):
        shutil.copy(folder / name, tmp_path / name)
    fp32 = tmp_path / "ssd_mnv2_fp32_nonms.tflite"
    ours = {outputs[0] for outputs in op_outputs(fp32) if outputs}
    ranking = [name for name, _ in ranked_layers(tmp_path / int8.name) if name in ours]
    results = json.loads(node_data_path(int8).read_text())["results"]
    assert len(ranking) >= 3 and len(results) >= len(ranking)
    assert main(["quantize", str(fp32), "--calib-data", str(calibration_folder), "--recipe", "auto",
                 "--recipe-layers", "3"]) == 0
    out = tmp_path / "ssd_mnv2_aeq_a16w8_nonms.tflite"
    assert set(_int16_ops(out)) == set(ranking[:3])
