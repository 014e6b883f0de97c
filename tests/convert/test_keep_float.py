"""--keep-float: the quantization debugger's ranking, int8 models with float
layers, and ``auto`` driven by the quantization report."""
import contextlib
import io
import json
import logging
import math
import re

import pytest

tf = pytest.importorskip("tensorflow")

from ssdkit.datasets.synth import generate, iter_images, render  # noqa: E402
from ssdkit.cli import main  # noqa: E402
from ssdkit.convert.tflite import quant_debug  # noqa: E402
from ssdkit.convert.tflite.savedmodel2tflite import TFLiteOptions, TFLiteSession, export_tflite  # noqa: E402
from ssdkit.convert.tflite.flatbuffer import ops, read_custom_options  # noqa: E402
from ssdkit.runtime import Detector  # noqa: E402
from ssdkit.runtime.model_files import read_spec, tflite_associated_files  # noqa: E402

SIZE = 96
TINY = ("--model", "ssd_mnv2", "--width", "0.35", "--input-size", str(SIZE), "--backbone-weights", "none",
        "--num-classes", "2")
BODY_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D"}


def _two_class_coco(folder):
    """8 synthetic images as a COCO set whose categories are the tiny model's class_1 and class_2."""
    path = generate(folder, 8, seed=5, size=SIZE) / "annotations.json"
    data = json.loads(path.read_text())
    data["categories"] = [{"id": 1, "name": "class_1"}, {"id": 2, "name": "class_2"}]
    for annotation in data["annotations"]:
        annotation["category_id"] = (annotation["category_id"] - 1) % 2 + 1
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def auto_export(tmp_path_factory):
    """A tiny raw-output int8 export with ``--keep-float auto`` on a labelled
    set and a budget no model can meet (-100 points): the debugger ranks the
    layers, one mix is tried (one step instead of four, for time), and the
    pure int8 model stays."""
    tmp = tmp_path_factory.mktemp("keep_float")
    out, err = tmp / "out", io.StringIO()
    eval_data = _two_class_coco(tmp / "eval")
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(err):
        patch.setenv("SSDKIT_CACHE", str(tmp / "cache"))
        patch.setattr(quant_debug, "KEEP_FLOAT_STEPS", (2,))
        code = main(["export", *TINY, "--format", "tflite", "--no-nms", "--calib-samples", "4",
                     "--keep-float", "auto", "--max-map-drop", "-100", "--eval-data", str(eval_data),
                     "--out", str(out)])
    assert code == 0, err.getvalue()
    return out, err.getvalue(), eval_data


def test_auto_writes_the_ranking_and_the_trade_off_into_the_report(auto_export):
    out, err, _ = auto_export
    assert sorted(p.name for p in out.iterdir()) == sorted(  # --no-nms: the int8 model is its own raw variant
        ["saved_model", "ssd_mnv2_int8_nonms.tflite", "ssd_mnv2_fp32_nonms.tflite", "report.json", "report.md"])
    report = json.loads((out / "report.json").read_text())
    section = report["keep_float"]
    ranking = section["ranking"]
    assert len(ranking) == 10
    assert all(math.isfinite(layer["rmse/scale"]) and layer["rmse/scale"] > 0 for layer in ranking)
    errors = [layer["rmse/scale"] for layer in ranking]
    assert errors == sorted(errors, reverse=True)
    model_ops = ops((out / "ssd_mnv2_int8_nonms.tflite").read_bytes())
    writers = {tensor.name: op.name for op in model_ops for tensor in op.outputs}
    assert all(writers[layer["tensor"]] == layer["op"] for layer in ranking)  # names the exported model uses
    (trial,) = section["trials"]
    assert trial["layers_in_float"] == 2 and set(trial) >= {"size_mb", "latency_ms", "mAP@0.5", "mAP@0.5_drop_points"}
    assert section["kept_in_float"] == [] and section["budget_points"] == -100
    assert section["int8"]["size_mb"] == report["models"]["int8"]["size_mb"]
    # Gave up: the int8 model is still pure int8.
    assert all(t.dtype == "INT8" for op in model_ops if op.name in BODY_OPS for t in op.outputs)
    md = (out / "report.md").read_text()
    assert "## Keep-float" in md and f"| `{ranking[0]['tensor']}` | {ranking[0]['op']} |" in md
    assert "| mixed | 2 |" in md and "stays pure int8" in md
    assert "no mix of up to 2 layers in float met the budget of -100.0 points" in err
    assert "warning: int8 loses" in err and "tf.lite.Interpreter is deprecated" not in err


def test_keep_float_names_leave_those_layers_float_through_every_export_step(auto_export, tmp_path):
    out, _, _ = auto_export
    ranking = json.loads((out / "report.json").read_text())["keep_float"]["ranking"]
    worst = ranking[0]["tensor"]
    saved_model = out / "saved_model"
    options = TFLiteOptions(keep_float=(worst,), regular_nms=True, detections_per_class=2)
    path = export_tflite(saved_model, read_spec(saved_model), tmp_path, options, list(iter_images(7, 4, SIZE)))
    assert path.name == "ssd_mnv2_int8.tflite"
    model = path.read_bytes()
    body = [op for op in ops(model) if op.name in BODY_OPS]
    (kept,) = [op for op in body if op.outputs[0].name == worst]
    assert kept.outputs[0].dtype == "FLOAT32" and all(t.dtype == "FLOAT32" for t in kept.inputs)
    assert all(op.outputs[0].dtype == "INT8" for op in body if op is not kept)
    assert ops(model)[0].inputs[0].dtype == "UINT8"  # the export's I/O types, not the debugger's float ones
    assert read_custom_options(model, "TFLite_Detection_PostProcess")[0]["detections_per_class"] == 2
    assert read_spec(path).labels == ("class_1", "class_2")
    assert b"class_1" in tflite_associated_files(path)["labels.txt"]
    assert Detector(path, score_threshold=0.0).detect(render(1, 3, 150)[0])


def test_an_unknown_layer_name_is_a_clear_error_and_writes_nothing(auto_export, tmp_path):
    out, _, _ = auto_export
    worst = json.loads((out / "report.json").read_text())["keep_float"]["ranking"][0]["tensor"]
    saved_model = out / "saved_model"
    with pytest.raises(ValueError, match=re.escape(f"no layer named {worst[:-1]!r} (did you mean {worst!r}?)")):
        export_tflite(saved_model, read_spec(saved_model), tmp_path / "out", TFLiteOptions(keep_float=(worst[:-1],)),
                      list(iter_images(7, 4, SIZE)))
    assert not (tmp_path / "out").exists()


def test_auto_within_the_budget_says_so_and_does_nothing(caplog):
    caplog.set_level(logging.INFO, logger="ssdkit")
    report = {"models": {"int8": {"size_mb": 1.0, "latency_ms": 2.0}}, "int8_vs_fp32": {"mAP@0.5_drop_points": 0.4}}
    assert quant_debug.keep_float_auto(None, TFLiteOptions(), None, 1.0, report, None) is None
    assert "int8 is within the budget (0.4 <= 1.0 points of mAP@0.5); every layer stays int8" in caplog.text


@pytest.mark.parametrize("argv, message", [
    (["--edgetpu", "--keep-float", "auto"], "the Edge TPU cannot run float layers"),
    (["--edgetpu", "--keep-float", "a/b"], "the Edge TPU cannot run float layers"),
    (["--quant", "fp16", "--keep-float", "a/b"], "--quant fp16 has no int8 layers"),
    (["--keep-float", "auto", "--no-report"], "--keep-float auto works from the quantization report: drop --no-report"),
])
def test_bad_keep_float_options_exit_2_before_any_work(tmp_path, capsys, argv, message):
    code = main(["export", *TINY, "--format", "tflite", *argv, "--out", str(tmp_path / "out")])
    _, err = capsys.readouterr()
    assert code == 2
    assert message in err, err
    assert not (tmp_path / "out").exists()


def test_keep_float_names_are_parsed_from_a_comma_list():
    from ssdkit.convert.cli import _keep_float

    assert _keep_float("none") == "none" and _keep_float("auto") == "auto"
    assert _keep_float("a/b;c, d/e") == ("a/b;c", "d/e")
    assert TFLiteOptions(keep_float=["x"]).keep_float == ("x",)  # hashable whatever sequence is given


def test_auto_replaces_the_int8_model_with_the_first_mix_within_the_budget(auto_export, tmp_path, monkeypatch, caplog):
    from ssdkit.datasets.reader import read_dataset
    from ssdkit.evaluation.quant_report import EvaluationData, measure_row, write_report

    out, _, eval_data = auto_export
    caplog.set_level(logging.INFO, logger="ssdkit")
    monkeypatch.setenv("SSDKIT_CACHE", str(out.parent / "cache"))
    monkeypatch.setattr(quant_debug, "KEEP_FLOAT_STEPS", (1, 2))
    # A report where int8 lost 5 points from an fp32 model at mAP 0: any mix
    # (mAP >= 0) is within the budget of 1, so the first one replaces int8.
    report = json.loads((out / "report.json").read_text())
    del report["keep_float"]
    report["models"]["fp32"]["mAP@0.5"] = 0.0
    report["int8_vs_fp32"]["mAP@0.5_drop_points"] = 5.0
    int8 = tmp_path / "ssd_mnv2_int8_nonms.tflite"
    int8.write_bytes((out / int8.name).read_bytes())
    saved_model = out / "saved_model"
    options = TFLiteOptions(nms=False)
    session = TFLiteSession(saved_model, read_spec(saved_model), list(iter_images(7, 4, SIZE)))
    data = EvaluationData.from_dataset(read_dataset(eval_data), ("class_1", "class_2"), "test")
    section = quant_debug.keep_float_auto(session, options, int8, 1.0, report, lambda path: measure_row(path, data))
    assert session.calibration_passes == 1  # the debugger and the trial reuse one calibration
    assert [t["layers_in_float"] for t in section["trials"]] == [1]
    assert section["kept_in_float"] == section["ranking"][:1]
    (kept,) = [op for op in ops(int8.read_bytes()) if op.outputs[0].name == section["kept_in_float"][0]["tensor"]]
    assert kept.outputs[0].dtype == "FLOAT32"
    assert sorted(p.name for p in tmp_path.iterdir()) == [int8.name]  # the trial folder is gone
    assert "keeps the worst 1 of its layers in float: mAP@0.5 drop" in caplog.text
    _, md = write_report({**report, "keep_float": section}, tmp_path)
    assert "now keeps the layers marked above in float (1), within the budget" in md.read_text()
    assert "| yes |" in md.read_text()
