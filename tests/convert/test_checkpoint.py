"""Checkpoints know their model: version 2 records the architecture, width
and spec (input size, anchors, box coder, labels, NMS settings), so export
and train need no --model; version 1 files (the shipped demo weights) still load."""
import dataclasses
import json

import numpy as np
import pytest

from ssdkit.cli import main
from ssdkit.convert.checkpoint import read_checkpoint, resolve_model, write_checkpoint
from ssdkit.convert.zoo import ModelConfig, ModelDefinition, get_entry, shipped_weights
from ssdkit.runtime.spec import ModelSpec, PostProcessing

SHAPES = ("circle", "square", "triangle", "cross")


def test_the_shipped_version_1_checkpoint_still_loads():
    checkpoint = read_checkpoint(shipped_weights("ssd_mnv2"))
    assert checkpoint.version == 1 and checkpoint.meta["train"]["step"] == 5000
    definition = checkpoint.definition
    assert definition.architecture == get_entry("ssd_mnv2").architecture and definition.width == 1.0
    assert definition.spec == ModelConfig("ssd_mnv2", labels=SHAPES).definition().spec
    assert "block_1_expand/kernel:0" in checkpoint.weights


def custom_definition() -> ModelDefinition:
    """A network the zoo does not have, as an importer would describe one:
    ssd_mnv2's backbone with SSDLite layers and head, other anchors, its own NMS settings."""
    base = ModelConfig("ssd_mnv2", width=0.35, input_size=(96, 96), labels=("a", "b")).definition()
    architecture = dataclasses.replace(base.architecture, head="separable", separable_extra_layers=True,
                                       head_kernel_size=3, extra_depths=(256, 128, 128, 64))
    spec = dataclasses.replace(
        base.spec, name="my_detector", anchors=dataclasses.replace(base.spec.anchors, min_scale=0.1,
                                                                   aspect_ratios=(1.0, 2.0, 0.5)),
        postprocessing=PostProcessing(score_threshold=0.05, iou_threshold=0.5, max_detections=20,
                                      detections_per_class=10))
    return ModelDefinition(architecture, 0.35, spec)


def test_version_2_records_the_whole_definition(tmp_path):
    definition = custom_definition()
    weights = {"layer/kernel:0": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path = write_checkpoint(tmp_path / "c.npz", definition, weights, extra={"source": {"from": "a test"}})
    checkpoint = read_checkpoint(path)
    assert (checkpoint.version, checkpoint.definition, checkpoint.meta) == (2, definition, {"source": {"from": "a test"}})
    np.testing.assert_array_equal(checkpoint.weights["layer/kernel:0"], weights["layer/kernel:0"])
    assert checkpoint.definition.spec.anchors.min_scale == 0.1 and checkpoint.definition.spec.num_anchors == 172  # the zoo model's: 204


def _meta_of(path) -> dict:
    with np.load(path) as data:
        return json.loads(str(data["__meta__"]))


def _rewrite(path, meta: dict):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "__meta__"}
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)


@pytest.mark.parametrize("change, message", [
    (lambda m: {**m, "version": 3}, "checkpoint format 'ssdkit-checkpoint' v3, expected 'ssdkit-checkpoint' v1 or v2"),
    (lambda m: {**m, "model": {**m["model"], "width": "0.35"}},
     'checkpoint metadata: model.width is "0.35", expected a number'),
    (lambda m: {**m, "model": {**m["model"], "architecture": {**m["model"]["architecture"], "head": "dense"}}},
     'checkpoint metadata: model.architecture.head is "dense", expected one of "conv", "separable", "weight_shared"'),
    (lambda m: {k: v for k, v in m.items() if k != "model"}, "checkpoint metadata: missing 'model'"),
])
def test_bad_metadata_names_the_file_and_the_field(tmp_path, change, message):
    path = write_checkpoint(tmp_path / "c.npz", custom_definition(), {})
    _rewrite(path, change(_meta_of(path)))
    with pytest.raises(ValueError) as error:
        read_checkpoint(path)
    assert str(error.value) == f"{path}: {message}"


def test_the_commands_take_the_model_from_the_checkpoint():
    assert resolve_model(None, "c.npz") is None  # the checkpoint names it
    assert resolve_model(None, "auto") == resolve_model(None, None) == resolve_model(None, "none") == "ssd_mnv2"
    assert resolve_model("ssd_mnv1", "c.npz") == "ssd_mnv1"  # and must agree with it


def test_export_from_a_checkpoint_needs_no_model(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorflow")
    from ssdkit.convert.checkpoint import save_checkpoint
    from ssdkit.convert.models.ssd import build_model
    from ssdkit.runtime import Detector

    model = build_model(custom_definition())
    checkpoint = save_checkpoint(model, tmp_path / "my.npz")
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--weights", str(checkpoint), "--format", "savedmodel"]) == 0
    saved_model = tmp_path / "build" / "my_detector" / "saved_model"  # the default folder is named after it
    assert capsys.readouterr().out.strip() == str(saved_model.relative_to(tmp_path))
    spec = ModelSpec.from_json((saved_model / "assets.extra" / "ssdkit_spec.json").read_text())
    assert spec == model.spec and spec.postprocessing.max_detections == 20
    image = np.random.default_rng(0).integers(0, 256, (96, 96, 3), np.uint8)
    with Detector(saved_model, score_threshold=0.0) as detector:
        raw = detector.run_raw(image)
    tensor = (image[None].astype(np.float32) - 127.5) / 127.5
    expected = model.keras_model(tensor, training=False)
    np.testing.assert_allclose(raw.box_encodings, expected["box_encodings"].numpy()[0], atol=1e-4)
    assert raw.class_scores.shape == (172, 3)
    assert main(["export", "--weights", str(checkpoint), "--model", "ssd_mnv1", "--out", str(tmp_path / "x")]) == 2
    assert f"{checkpoint}: checkpoint is for my_detector, not ssd_mnv1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
