"""An export never leaves another model's files beside its own and never
overwrites files ssdkit did not write; the same model's files stay.

The folder tests write artifacts the way the exporters carry their spec
(``model_files``: the SavedModel's assets.extra, the TFLite appended zip) and
a SavedModel whose variables stand for its weights; the last test exports
real SavedModels."""
import json
import os

import pytest

from ssdkit.convert.export_folder import ExportFolder, spec_difference
from ssdkit.convert.zoo import ModelConfig, model_spec
from ssdkit.runtime import model_files

TWO = model_spec(ModelConfig("ssd_mnv2", width=0.35, input_size=(96, 96), labels=("a", "b")))
THREE = model_spec(ModelConfig("ssd_mnv2", width=0.35, input_size=(96, 96), labels=("a", "b", "c")))


def saved_model(folder, spec, weights: bytes):
    model_files.write_savedmodel_spec(folder, spec)
    (folder / "variables").mkdir(parents=True, exist_ok=True)
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(weights)
    (folder / "saved_model.pb").write_bytes(b"graph")
    return folder


def tflite(path, spec):
    path.write_bytes(model_files.embed_in_tflite(b"TFL3" + bytes(64), spec))
    return path


def export_folder(tmp_path, spec=TWO, weights=b"w1"):
    out = tmp_path / "out"
    saved_model(out / "saved_model", spec, weights)
    tflite(out / f"{spec.name}_fp32.tflite", spec)
    tflite(out / f"{spec.name}_int8.tflite", spec)
    (out / "report.md").write_text("# Quantization report\n")
    return out


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_same_model_keeps_its_files(tmp_path, capsys):
    out = export_folder(tmp_path)
    before = snapshot(out)
    folder = ExportFolder(out, TWO)
    folder.check()
    folder.put_saved_model(lambda target: saved_model(target, TWO, b"w1"))
    assert snapshot(out) == before  # int8 beside fp32, the report: all kept
    assert capsys.readouterr().err == ""


def test_another_spec_is_refused_before_anything_is_written(tmp_path):
    out = export_folder(tmp_path)
    before = snapshot(out)
    with pytest.raises(FileExistsError) as error:
        ExportFolder(out, THREE).check()
    assert str(error.value) == (
        f"{out}: holds files this export would leave beside another model's or overwrite: saved_model/ (2 classes, "
        "not 3), ssd_mnv2_fp32.tflite (2 classes, not 3), ssd_mnv2_int8.tflite (2 classes, not 3), report.md (a "
        "report of another model); remove them, choose another --out, or pass --force to replace them")
    assert snapshot(out) == before


def test_force_replaces_another_spec_and_says_so(tmp_path, caplog):
    out = export_folder(tmp_path)
    (out / "notes.txt").write_text("mine")
    folder = ExportFolder(out, THREE, force=True)
    folder.check()
    folder.put_saved_model(lambda target: saved_model(target, THREE, b"w3"))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "saved_model"]  # the user's file stays
    assert model_files.read_spec(out / "saved_model") == THREE
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("ssdkit")] == [
        ("WARNING", f"replaced {out / 'saved_model'} (2 classes, not 3)"),
        ("WARNING", f"removed {out / 'ssd_mnv2_fp32.tflite'} (2 classes, not 3)"),
        ("WARNING", f"removed {out / 'ssd_mnv2_int8.tflite'} (2 classes, not 3)"),
        ("WARNING", f"removed {out / 'report.md'} (a report of another model)")]


def test_other_weights_are_found_from_the_savedmodel_and_refused_without_writing(tmp_path, caplog):
    out = export_folder(tmp_path)
    before = snapshot(out)
    folder = ExportFolder(out, TWO)
    folder.check()  # the spec is the same: only the weights tell
    with pytest.raises(FileExistsError, match=r"saved_model/ \(exported from other weights\), ssd_mnv2_fp32.tflite "
                                              r"\(exported from other weights\)"):
        folder.put_saved_model(lambda target: saved_model(target, TWO, b"w2"))
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    forced = ExportFolder(out, TWO, force=True)
    forced.put_saved_model(lambda target: saved_model(target, TWO, b"w2"))
    assert sorted(p.name for p in out.iterdir()) == ["saved_model"]
    assert any(r.getMessage().startswith("removed ") for r in caplog.records)


def test_files_ssdkit_did_not_write_are_never_overwritten(tmp_path):
    out = tmp_path / "out"
    (out / "saved_model").mkdir(parents=True)
    (out / "saved_model" / "saved_model.pb").write_bytes(b"someone else's model")
    (out / "ssd_mnv2_int8.tflite").write_bytes(b"TFL3 not ours")
    (out / "their_model.tflite").write_bytes(b"TFL3 a third-party model")  # a name this export never writes
    with pytest.raises(FileExistsError) as error:
        ExportFolder(out, TWO).check()
    assert "saved_model/ (not written by ssdkit), ssd_mnv2_int8.tflite (not written by ssdkit);" in str(error.value)
    assert "their_model" not in str(error.value)
    report_only = tmp_path / "reports"
    report_only.mkdir()
    (report_only / "report.md").write_text("my own report")
    with pytest.raises(FileExistsError, match=r"report.md \(not written by ssdkit\)"):
        ExportFolder(report_only, TWO).check()
    ExportFolder(tmp_path / "new", TWO).check()  # a folder that does not exist yet: nothing in the way


def test_spec_differences_in_words():
    assert spec_difference(TWO, TWO) is None
    assert spec_difference(TWO, model_spec(ModelConfig("ssdlite_mnv2", labels=("a", "b")))) == \
        "model ssd_mnv2, not ssdlite_mnv2"
    assert spec_difference(TWO, model_spec(ModelConfig("ssd_mnv2", input_size=(128, 128), labels=("a", "b")))) == \
        "input 96x96, not 128x128"
    assert spec_difference(TWO, model_spec(ModelConfig("ssd_mnv2", input_size=(96, 96), labels=("a", "c")))) == \
        "other class names"
    import dataclasses

    nms = dataclasses.replace(TWO, postprocessing=dataclasses.replace(TWO.postprocessing, max_detections=10))
    assert spec_difference(TWO, nms) is None  # each file may set its own NMS


def test_export_into_another_models_folder_is_refused_before_tensorflow(tmp_path, cli_in_fresh_process):
    """The issue's case: a 90-class file beside a 3-class export."""
    out = tmp_path / "out"
    out.mkdir()
    tflite(out / "ssd_mnv2_raw.onnx.tflite", model_spec(ModelConfig("ssd_mnv2")))
    before = snapshot(out)
    [result] = cli_in_fresh_process([["export", "--weights", "none", "--num-classes", "3", "--out", str(out)]], tmp_path)
    assert result["code"] == 2 and not result["heavy"]
    assert result["stderr"].splitlines() == [
        f"ssdkit export: error: {out}: holds files this export would leave beside another model's or overwrite: "
        "ssd_mnv2_raw.onnx.tflite (90 classes, not 3); remove them, choose another --out, or pass --force to "
        "replace them"]
    assert snapshot(out) == before


def test_real_exports_keep_the_same_model_and_refuse_other_weights(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    from ssdkit.cli import main

    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    out = tmp_path / "out"

    def export(*extra):
        code = main(["export", "--format", "savedmodel", "--weights", "none", "--backbone-weights", "none",
                     "--width", "0.35", "--input-size", "96", "--labels", str(labels), "--out", str(out), *extra])
        return code, capsys.readouterr().err

    assert export("--seed", "0")[0] == 0
    (out / "report.json").write_text(json.dumps({"int8_vs_fp32": {}}))  # a report made from this model
    code, err = export("--seed", "0")  # the same weights again: byte-identical variables
    assert code == 0 and "removed" not in err and "replaced" not in err
    assert (out / "report.json").exists()
    first = snapshot(out)
    code, err = export("--seed", "1")
    assert code == 2 and "saved_model/ (exported from other weights), report.json (a report of another model)" in err
    assert snapshot(out) == first and not [p for p in os.listdir(out) if p.startswith(".")]
