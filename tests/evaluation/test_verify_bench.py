"""`ssdkit eval`, `verify` and `bench` on a tiny exported model folder (SavedModel, fp32 TFLite, ONNX)."""
import importlib.util
import json
import shutil
from importlib import resources

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("pycocotools")

from ssdkit.cli import main  # noqa: E402
from ssdkit.evaluation.verify import Artifact, Row, _borrow_twin_differences, _check, find_artifacts, raw_twin

LABELS = ("circle", "square")  # two of the synthetic shapes, so mAP is defined


def _lively(model, seed: int) -> None:
    """Untrained exports output ~0 everywhere (0.03-std kernels through ~50
    layers); He-scaled kernels give outputs that vary by image, anchor and
    class, so comparisons can tell networks and detections apart."""
    import tf_keras as keras

    rng = np.random.default_rng(seed)
    for layer in model.keras_model.layers:
        weights = layer.get_weights()
        if weights and weights[0].ndim == 4:
            kernel = weights[0]
            fan_in = kernel.shape[0] * kernel.shape[1] * (1 if isinstance(layer, keras.layers.DepthwiseConv2D) else kernel.shape[2])
            weights[0] = rng.normal(0, np.sqrt(2 / fan_in), kernel.shape).astype(np.float32)
            layer.set_weights(weights)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from ssdkit.convert.export import ExportOptions, export
    from ssdkit.convert.checkpoint import prepare_model
    from ssdkit.convert.onnx.savedmodel2onnx import export_onnx
    from ssdkit.convert.tflite.savedmodel2tflite import TFLiteOptions

    with pytest.warns(UserWarning):
        model = prepare_model("ssd_mnv2", width=0.35, input_size=(96, 96), labels=LABELS, backbone_weights="none")
    _lively(model, 0)
    out = tmp_path_factory.mktemp("ssd_mnv2")
    saved_model, _ = export(model, "tflite", out, ExportOptions(tflite=TFLiteOptions(quant="fp32")))
    export_onnx(saved_model, model.spec, out)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from ssdkit.datasets.synth import generate

    return generate(tmp_path_factory.mktemp("data"), 4, seed=3, size=96) / "annotations.json"


def test_eval_a_tflite_file_and_a_savedmodel_folder(model_dir, data, tmp_path, capsys):
    results = {}
    for model in (model_dir / "ssd_mnv2_fp32.tflite", model_dir / "saved_model"):
        out = tmp_path / f"{model.stem}.json"
        assert main(["eval", str(model), "--data", str(data), "--json", str(out), "--max-images", "3"]) == 0
        results[model.name] = json.loads(out.read_text())
    stdout = capsys.readouterr().out
    assert "mAP@0.75" in stdout and "triangle" in stdout
    for result in results.values():
        assert result["images"] == 3 and result["threshold"] == 0.01
        assert set(result["metrics"]) == {"mAP", "mAP@0.5", "mAP@0.75", "mAP_small", "mAP_medium", "mAP_large"}
        assert set(result["per_class_AP"]) == {"circle", "square", "triangle", "cross"}
        assert result["per_class_AP"]["triangle"] == 0.0  # the model has no such class


def test_eval_with_foreign_labels_is_exit_2(model_dir, tmp_path, capsys):
    from ssdkit.datasets.synth import generate

    annotations = generate(tmp_path / "d", 1, seed=0, size=64) / "annotations.json"
    coco = json.loads(annotations.read_text())
    coco["categories"] = [{"id": c["id"], "name": f"thing{c['id']}"} for c in coco["categories"]]
    annotations.write_text(json.dumps(coco))
    assert main(["eval", str(model_dir / "ssd_mnv2_raw.onnx"), "--data", str(annotations)]) == 2
    assert "have no name in common" in capsys.readouterr().err


def test_eval_class_map_maps_renamed_categories_and_names_an_unmapped_one(model_dir, data, tmp_path, capsys):
    """--class-map (export's parser and strict mapping): the model's circle and
    square scored against categories renamed round and box give the same
    metrics as under their own names; a category left unmapped is one line
    naming it, exit 2."""
    coco = json.loads(data.read_text())
    kept = {c["id"]: c["name"] for c in coco["categories"] if c["name"] in LABELS}
    coco["categories"] = [c for c in coco["categories"] if c["id"] in kept]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] in kept]
    for image in coco["images"]:
        image["file_name"] = str((data.parent / image["file_name"]).resolve())
    same, renamed = tmp_path / "same.json", tmp_path / "renamed.json"
    same.write_text(json.dumps(coco))
    names = {"circle": "round", "square": "box"}
    coco["categories"] = [{**c, "name": names[c["name"]]} for c in coco["categories"]]
    renamed.write_text(json.dumps(coco))
    model = model_dir / "ssd_mnv2_fp32.tflite"
    results = {}
    for name, argv in (("same", [str(same)]), ("mapped", [str(renamed), "--class-map", "circle=round, square=box"])):
        out = tmp_path / f"{name}.json"
        assert main(["eval", str(model), "--data", *argv, "--json", str(out)]) == 0
        results[name] = json.loads(out.read_text())
    assert results["mapped"]["per_class_AP"] == {"round": results["same"]["per_class_AP"]["circle"],
                                                 "box": results["same"]["per_class_AP"]["square"]}
    assert results["mapped"]["metrics"] == results["same"]["metrics"]
    capsys.readouterr()

    assert main(["eval", str(model), "--data", str(renamed), "--class-map", "circle=round"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "categories box match no label of the model" in err, err
    assert "unmatched model labels: square" in err and "--class-map" in err


def test_verify_passes_on_a_clean_export(model_dir, data, capsys):
    assert main(["verify", str(model_dir), "--data", str(data), "--images", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert set(rows) == {"saved_model/", "ssd_mnv2_fp32.tflite", "ssd_mnv2_raw.onnx"}
    assert rows["saved_model/"].rstrip().endswith("reference")
    assert rows["ssd_mnv2_raw.onnx"].rstrip().endswith("pass") and rows["ssd_mnv2_fp32.tflite"].rstrip().endswith("pass")


def test_verify_fails_on_a_perturbed_and_a_corrupted_file(model_dir, data, tmp_path, capsys):
    from onnx import numpy_helper

    broken = shutil.copytree(model_dir, tmp_path / "broken")
    onnx_path = broken / "ssd_mnv2_raw.onnx"
    proto = onnx.load(str(onnx_path))
    weights = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(weights)
    noise = np.random.default_rng(1).normal(0, values.std(), values.shape).astype(values.dtype)
    weights.CopyFrom(numpy_helper.from_array(values + noise, weights.name))
    onnx.save(proto, str(onnx_path))
    tflite_path = broken / "ssd_mnv2_fp32.tflite"
    tflite_path.write_bytes(tflite_path.read_bytes()[:4096])
    assert main(["verify", str(broken), "--data", str(data), "--images", "2"]) == 1
    err = capsys.readouterr().err
    assert "ssd_mnv2_raw.onnx: raw outputs differ from the SavedModel's by up to" in err
    assert "ssd_mnv2_fp32.tflite:" in err


def test_verify_without_a_savedmodel_is_exit_2(model_dir, tmp_path, capsys):
    shutil.copy(model_dir / "ssd_mnv2_raw.onnx", tmp_path)
    assert main(["verify", str(tmp_path)]) == 2
    assert "no saved_model/ to compare" in capsys.readouterr().err


def test_bench_writes_the_table_json_markdown_and_chart(model_dir, data, tmp_path, capsys):
    device = json.loads(resources.files("ssdkit.devices").joinpath("profiles/desktop_cpu.json").read_text())
    device_file = tmp_path / "one_thread.json"
    device_file.write_text(json.dumps({**device, "name": "one_thread", "threads": 1}))
    out = tmp_path / "bench"
    assert main(["bench", str(model_dir), "--data", str(data), "--runs", "3", "--images", "2",
                 "--device", str(device_file), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "latency ms median / p90" in stdout and "ssd_mnv2_raw.onnx" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.md", "bench.png"]
    result = json.loads((out / "bench.json").read_text())
    assert result["settings"]["threads"] == 1 and result["evaluation_set"]["images"] == 2
    assert result["machine"]["cores"] >= 1 and result["machine"]["cpu"]
    assert "tensorflow" in result["machine"]["packages"]
    assert [f["file"] for f in result["formats"]] == ["saved_model/", "ssd_mnv2_fp32.tflite", "ssd_mnv2_raw.onnx"]
    for entry in result["formats"]:
        assert entry["size_mb"] > 0 and entry["load_s"] > 0
        # Its own process's memory: not the parent's, which holds TensorFlow (over 1 GB).
        assert 0 < entry["peak_rss_mb"] < (2000 if entry["kind"] == "savedmodel" else 500)
        assert 0 < entry["latency_ms"]["median"] <= entry["latency_ms"]["p90"]
        assert entry["throughput_ips"] > 0 and entry["metrics"] is not None
    assert [f["check"] for f in result["formats"]] == ["reference", "pass", "pass"]
    # A runtime column: every installed runtime on every file it can run, the fastest marked, one recommended.
    runtimes = {f["file"]: [r["runtime"] for r in f["runtimes"]] for f in result["formats"]}
    onnx_runtimes = ["onnx", "openvino"] if importlib.util.find_spec("openvino") else ["onnx"]
    assert runtimes == {"saved_model/": ["savedmodel"], "ssd_mnv2_fp32.tflite": ["tflite"],
                        "ssd_mnv2_raw.onnx": onnx_runtimes}
    onnx_entry = result["formats"][2]
    assert onnx_entry["runtime"] == min(onnx_entry["runtimes"], key=lambda r: r["latency_ms"]["median"])["runtime"]
    timed = [(r["latency_ms"]["median"], f["file"], r["runtime"]) for f in result["formats"][1:] for r in f["runtimes"]]
    best = min(timed)
    assert result["recommended"] == {"file": best[1], "runtime": best[2], "latency_ms_median": best[0]}
    assert f"recommended on this machine: {best[1]} in {best[2]}" in stdout
    markdown = (out / "bench.md").read_text()
    table_lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table_lines) == 2 + 3 + len(onnx_runtimes) - 1 and "| runtime |" in table_lines[0]  # header, rule, rows
    assert sum("(recommended)" in line for line in table_lines) == 1
    if len(onnx_runtimes) > 1:
        assert sum("(fastest)" in line or "(recommended)" in line for line in table_lines if "raw.onnx" in line) == 1
    assert (out / "bench.png").read_bytes().startswith(b"\x89PNG")


# -- the check's rules, on rows made by hand --------------------------------

def test_find_artifacts_reads_precision_from_names_and_skips_edgetpu(tmp_path):
    (tmp_path / "saved_model").mkdir()
    (tmp_path / "saved_model" / "saved_model.pb").write_bytes(b"")
    for name in ("m_int8.tflite", "m_int8_edgetpu.tflite", "m_fp16_nonms.tflite", "m_raw.onnx", "report.json"):
        (tmp_path / name).write_bytes(b"")
    found = [(a.name, a.kind, a.precision) for a in find_artifacts(tmp_path)]
    assert found == [("saved_model/", "savedmodel", "fp32"), ("m_fp16_nonms.tflite", "tflite", "fp16"),
                     ("m_int8.tflite", "tflite", "int8"), ("m_raw.onnx", "onnx", "fp32")]
    assert Artifact(tmp_path / "m_int8_edgetpu.tflite", "tflite", "int8") in find_artifacts(tmp_path, edgetpu=True)
    with pytest.raises(FileNotFoundError, match="no saved_model/, .tflite or .onnx files"):
        find_artifacts(tmp_path / "saved_model")


def test_raw_twins_of_files_with_nms():
    assert raw_twin("m_fp32.tflite") == "m_fp32_nonms.tflite"
    assert raw_twin("m_nms.onnx") == "m_raw.onnx" and raw_twin("m_nms_int8.onnx") == "m_raw_int8.onnx"


def test_nms_files_borrow_their_twin_and_otherwise_need_agreement():
    small = {"box_encodings": {"max": 0.5, "mean": 0.1, "reference_max": 20.0},  # 0.025 of the largest box value
             "class_predictions": {"max": 0.01, "mean": 0.001, "reference_max": 1.0}}
    rows = [Row("a_fp32.tflite", "tflite", "fp32", "detections", agreement=0.5),
            Row("a_fp32_nonms.tflite", "tflite", "fp32", "raw", raw_difference=small, agreement=0.5),
            Row("a_fp16.tflite", "tflite", "fp16", "detections", agreement=0.8),
            Row("a_int8.tflite", "tflite", "int8", "detections", agreement=0.1)]
    _borrow_twin_differences(rows)
    for row in rows:
        _check(row, True, tolerance=0.05, min_agreement=0.9)
    assert rows[0].raw_source == "a_fp32_nonms.tflite" and rows[0].check == "pass"
    assert rows[1].check == "pass"
    assert rows[2].check == "FAIL" and "finds 80.0% of the SavedModel's detections" in rows[2].problem
    assert rows[3].check == "-"  # quantized: reported, not checked
