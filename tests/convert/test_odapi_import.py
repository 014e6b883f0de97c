"""``ssdkit import`` of TF1 OD API models: folders, archives, zoo names over
HTTP on 127.0.0.1, lone frozen graphs, checkpoints; parity, labels, errors,
and the import as a checkpoint for export and fine-tuning.

Sources are built by ``odapi_fixtures`` with the OD API's naming (slim
scopes, ``concat``/``concat_1``, ``Concatenate/concat``), random weights and
non-identity batch norms, at depth multiplier 0.25 and 96x96 to stay fast.
"""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from odapi_fixtures import Tf1Spec, archive, build_tf1_source  # noqa: E402

from ssdkit.cli import main  # noqa: E402
from ssdkit.convert.odapi import textproto  # noqa: E402
from ssdkit.convert.odapi.config import UnsupportedModel, read_label_map, read_pipeline_config  # noqa: E402
from ssdkit.runtime.spec import MultipleGridAnchors  # noqa: E402


@pytest.fixture(scope="module")
def v2_source(tmp_path_factory):
    return build_tf1_source(tmp_path_factory.mktemp("odapi") / "ssd_mobilenet_v2_coco_2018_03_29",
                            Tf1Spec("ssd_mobilenet_v2", labels=("cat", "dog", "bird")))


@pytest.fixture(scope="module")
def v2_import(v2_source):
    from ssdkit.convert.odapi.importer import import_model

    return import_model(str(v2_source), progress=False)


def test_textproto_reads_pipeline_config_syntax():
    message = textproto.parse("""
      # comment
      model { ssd { num_classes: 7 feature_extractor { type: 'ssd_mobilenet_v2' depth_multiplier: 0.5 }
        anchor_generator { ssd_anchor_generator { aspect_ratios: 1.0 aspect_ratios: [2.0, 0.5] } } } }
      train_config: { batch_size: 24, fine_tune_checkpoint: "a/" "b" }
      post_processing < score_converter: SIGMOID >
    """)
    assert message.path("model.ssd.num_classes") == 7
    assert message.path("model.ssd.feature_extractor.depth_multiplier") == 0.5
    assert message.message("model").message("ssd").message("anchor_generator").message(
        "ssd_anchor_generator").all("aspect_ratios") == [1.0, 2.0, 0.5]
    assert message.path("train_config.fine_tune_checkpoint") == "a/b"
    assert message.path("post_processing.score_converter") == "SIGMOID"
    with pytest.raises(textproto.TextProtoError, match="line 2"):
        textproto.parse("model {\n  ssd { num_classes 3 }\n}")


def test_pipeline_config_and_label_map(v2_source):
    config = read_pipeline_config(v2_source / "pipeline.config")
    assert (config.feature_extractor, config.num_classes, config.input_size) == ("ssd_mobilenet_v2", 3, (96, 96))
    assert config.anchors == MultipleGridAnchors()
    assert config.postprocessing.iou_threshold == 0.6 and config.postprocessing.score_activation == "sigmoid"
    assert read_label_map(v2_source / "label_map.pbtxt") == {1: "cat", 2: "dog", 3: "bird"}


def test_tf1_folder_imports_with_parity(v2_import):
    report = v2_import.parity
    assert report.runnable and report.source_kind == "the frozen graph"
    assert report.relative < 1e-4, report.table()
    assert all(row.top_identical for row in report.rows) and report.agreement == 1.0
    assert [row.photo for row in report.rows] == ["astronaut", "coffee", "chelsea"]
    spec = v2_import.model.spec
    assert spec.name == "ssd_mnv2_odapi" and spec.input_size == (96, 96) and spec.labels == ("cat", "dog", "bird")
    assert v2_import.model.definition.width == 0.25
    # A network of another seed is far from the source: the comparison can fail.
    from ssdkit.convert.odapi.parity import compare

    other = v2_import.model.keras_model.get_weights()
    v2_import.model.keras_model.set_weights([w * 1.01 for w in other])
    try:
        from ssdkit.convert.odapi import tf1
        from ssdkit.convert.odapi.parity import load_photos, tf1_runner

        source = Path(v2_import.source["origin"]) / "frozen_inference_graph.pb"
        graph_def = tf1.load_graph_def(source)
        runner = tf1_runner(graph_def, tf1.graph_facts(graph_def), "the frozen graph", source.name)
        assert not compare(runner, v2_import.model, load_photos(None)[:1]).passed
    finally:
        v2_import.model.keras_model.set_weights(other)


def test_import_folder_is_a_checkpoint_for_export_and_fine_tuning(v2_import, v2_source, tmp_path):
    from ssdkit.convert.checkpoint import prepare_model, read_checkpoint
    from ssdkit.convert.odapi.importer import write_import
    from ssdkit.convert.odapi.parity import export_spec

    out = write_import(v2_import, tmp_path / "imported")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "labels.txt", "parity.json", "parity.md",
                                                      "source.json"]
    assert json.loads((out / "parity.json").read_text())["passed"]
    # A version 2 checkpoint: the OD API-exact definition (architecture with the source's own
    # settings, spec) and where it came from, so export and train need no --model.
    checkpoint = read_checkpoint(out)
    assert checkpoint.version == 2 and checkpoint.definition == v2_import.model.definition
    assert checkpoint.definition.architecture.variant == "odapi"
    assert checkpoint.meta["source"]["tf_version"] == 1 and checkpoint.meta["source"]["zoo_entry"] == "ssd_mnv2_odapi"
    model = prepare_model(None, out)
    assert model.definition == v2_import.model.definition
    x = np.random.default_rng(0).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    a, b = model.keras_model(x), v2_import.model.keras_model(x)
    assert np.array_equal(a["class_predictions"].numpy(), b["class_predictions"].numpy())
    # Fine-tuning to other classes: only the class head changes shape and starts afresh.
    tuned = prepare_model(None, out, labels=("a", "b"), new_classes=True)
    assert tuned.spec.labels == ("a", "b") and tuned.spec.anchors == model.spec.anchors
    new = {w.name: w.numpy() for w in tuned.keras_model.weights}
    for w in model.keras_model.weights:
        if "ClassPredictor/" in w.name and w.name.endswith(("kernel:0", "bias:0")):
            assert new[w.name].shape[-1] == 3 * 3 or new[w.name].shape != w.shape
        else:
            assert np.array_equal(new[w.name], w.numpy()), w.name
    # The command line: export from the folder alone (no --model, no NMS flags), then the export
    # against the OD API source it came from.
    exported = tmp_path / "exported"
    assert main(["export", "--weights", str(out), "--format", "savedmodel", "--out", str(exported)]) == 0
    spec = export_spec(exported)
    for field in ("name", "input_size", "anchors", "box_coder", "postprocessing", "labels"):
        assert getattr(spec, field) == getattr(v2_import.model.spec, field), field
    assert main(["verify", "--against", str(v2_source), str(exported)]) == 0
    # Writing again over an earlier import is allowed; over a user's folder it is not.
    write_import(v2_import, out)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an earlier import"):
        write_import(v2_import, user)
    assert (user / "notes.txt").read_text() == "mine"


def test_lone_frozen_graph_recovers_architecture_and_anchors(v2_source, tmp_path, recwarn):
    from ssdkit.convert.odapi.importer import LabelsWarning, import_model

    lone = tmp_path / "frozen_inference_graph.pb"
    shutil.copy(v2_source / "frozen_inference_graph.pb", lone)
    imported = import_model(str(lone), progress=False)
    spec = imported.model.spec
    assert spec.anchors == MultipleGridAnchors() and spec.input_size == (96, 96)
    assert spec.labels == ("class_1", "class_2", "class_3")
    assert any(issubclass(w.category, LabelsWarning) for w in recwarn)
    assert imported.model.definition.width == 0.25 and imported.parity.relative < 1e-4
    assert "recovered from the graph" in " ".join(imported.notes)
    assert spec.box_coder.scales == (10.0, 10.0, 5.0, 5.0)
    # --labels names them.
    named = import_model(str(lone), labels_file=("x", "y", "z"), progress=False)
    assert named.model.spec.labels == ("x", "y", "z")


def test_tf1_checkpoint_with_and_without_meta(v2_source, tmp_path, recwarn):
    from ssdkit.convert.odapi.importer import ParityWarning, import_model

    with_meta = import_model(str(v2_source / "model.ckpt"), progress=False)
    assert with_meta.parity.source_kind == "the checkpoint's .meta graph"
    assert with_meta.parity.relative < 1e-4
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in v2_source.iterdir():
        if path.name != "model.ckpt.meta" and not path.name.endswith(".pb"):
            shutil.copy(path, bare / path.name)
    without = import_model(str(bare / "model.ckpt"), progress=False)
    assert not without.parity.runnable and "not checked" in without.parity.table()
    assert any(issubclass(w.category, ParityWarning) for w in recwarn)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_zoo_name_downloads_over_http_checks_and_caches(v2_source, tmp_path, monkeypatch):
    from ssdkit.convert.odapi.zoo import fetch_if_zoo_name

    served = tmp_path / "served"
    served.mkdir()
    archive(v2_source, served / "ssd_mobilenet_v2_coco_2018_03_29.tar.gz")
    (served / "ssdlite_mobilenet_v2_coco_2018_05_09.tar.gz").write_bytes(
        (served / "ssd_mobilenet_v2_coco_2018_03_29.tar.gz").read_bytes()[:5000])  # truncated
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("SSDKIT_ODAPI_ZOO_URL", f"http://127.0.0.1:{server.server_port}/")
        monkeypatch.setenv("SSDKIT_CACHE", str(tmp_path / "cache"))
        path = Path(fetch_if_zoo_name("ssd_mobilenet_v2_coco_2018_03_29", progress=False))
        assert path == tmp_path / "cache" / "odapi" / "ssd_mobilenet_v2_coco_2018_03_29.tar.gz" and path.is_file()
        with pytest.raises(ValueError, match="not a complete .tar.gz"):
            fetch_if_zoo_name("ssdlite_mobilenet_v2_coco_2018_05_09", progress=False)
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # nothing partial left
        out = tmp_path / "out"
        assert main(["import", "ssd_mobilenet_v2_coco_2018_03_29", "--out", str(out), "--no-progress"]) == 0
        assert json.loads((out / "source.json").read_text())["origin"] == "ssd_mobilenet_v2_coco_2018_03_29"
    finally:
        server.shutdown()
    # Offline: one line saying where to put the archive.
    monkeypatch.setenv("SSDKIT_ODAPI_ZOO_URL", f"http://127.0.0.1:{server.server_port}/")
    with pytest.raises(OSError, match="put the archive at .*ssd_mobilenet_v1_coco_2018_01_28.tar.gz"):
        fetch_if_zoo_name("ssd_mobilenet_v1_coco_2018_01_28", progress=False)


@pytest.mark.parametrize("kind", ["ssd_mobilenet_v1", "ssdlite_mobilenet_v2"])
def test_other_tf1_architectures(kind, tmp_path):
    from ssdkit.convert.odapi.importer import import_model

    # ssd_mobilenet_v1 builds its batch norms unfused (fused=False); SSDLite has depthwise extra layers and heads.
    source = build_tf1_source(tmp_path / kind, Tf1Spec(kind, fused_bn=kind != "ssd_mobilenet_v1", bn_scale=False,
                                                       input_size=64 if kind == "ssd_mobilenet_v1" else 96))
    imported = import_model(str(source / "model.ckpt"), progress=False)
    assert imported.model.spec.name == {"ssd_mobilenet_v1": "ssd_mnv1_odapi",
                                        "ssdlite_mobilenet_v2": "ssdlite_mnv2_odapi"}[kind]
    assert imported.parity.relative < 1e-4 and all(r.top_identical for r in imported.parity.rows)


def _cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_errors_are_one_line_exit_2_and_write_nothing(v2_source, tmp_path, capsys):
    out = tmp_path / "out"
    truncated = tmp_path / "truncated" / "frozen_inference_graph.pb"
    truncated.parent.mkdir()
    truncated.write_bytes((v2_source / "frozen_inference_graph.pb").read_bytes()[:3000])
    code, _, err = _cli(["import", str(truncated), "--out", str(out)], capsys)
    errors = [line for line in err.splitlines() if line.startswith("ssdkit import: error:")]
    assert code == 2 and len(errors) == 1 and "truncated" in errors[0] and str(truncated) in errors[0]
    assert err.strip().splitlines()[-1] == errors[0]  # progress messages come before it, nothing after
    code, _, err = _cli(["-q", "import", str(truncated), "--out", str(out)], capsys)
    assert code == 2 and err.strip().splitlines() == errors  # -q: the error line alone

    # Not an SSD: a graph without a MobileNet feature extractor.
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.constant(np.ones((3, 3, 3, 8), np.float32), name="resnet/conv1/weights")
    not_ssd = tmp_path / "notssd.pb"
    not_ssd.write_bytes(graph.as_graph_def().SerializeToString())
    code, _, err = _cli(["import", str(not_ssd), "--out", str(out)], capsys)
    assert code == 2 and "not a TF OD API SSD graph" in err

    # An unsupported backbone named in the config.
    other = tmp_path / "inception"
    shutil.copytree(v2_source, other)
    config = other / "pipeline.config"
    config.write_text(config.read_text().replace("type: 'ssd_mobilenet_v2'", "type: 'ssd_inception_v2'"))
    code, _, err = _cli(["import", str(other), "--out", str(out)], capsys)
    assert code == 2 and "ssd_inception_v2" in err and "Inception backbones are not implemented" in err

    # Weights whose shapes do not fit the config's network.
    wide = tmp_path / "wide"
    shutil.copytree(v2_source, wide)
    config = wide / "pipeline.config"
    config.write_text(config.read_text().replace("depth_multiplier: 0.25", "depth_multiplier: 1.0"))
    code, _, err = _cli(["import", str(wide), "--out", str(out)], capsys)
    assert code == 2 and "do not fit" in err and "expected" in err
    assert not out.exists()

    # Parity over the tolerance: exit 2, the table printed, nothing written; --force keeps it.
    code, stdout, err = _cli(["import", str(v2_source), "--out", str(out), "--tolerance", "1e-12"], capsys)
    assert code == 2 and "differs from the source" in err and "box enc max|d|" in stdout and not out.exists()
    code, _, _ = _cli(["import", str(v2_source), "--out", str(out), "--tolerance", "1e-12", "--force"], capsys)
    assert code == 0 and json.loads((out / "source.json").read_text())["forced"]
    assert "tolerance 1e-12" in (out / "parity.md").read_text()


def test_unsupported_configs_say_why(v2_source):
    from ssdkit.convert.odapi.config import interpret

    text = (v2_source / "pipeline.config").read_text()
    for old, new, expected in (
        ("ssd {", "faster_rcnn {", "not an SSD"),
        ("num_layers_before_predictor: 0", "num_layers_before_predictor: 2", "num_layers_before_predictor"),
        ("score_converter: SIGMOID", "score_converter: IDENTITY", "score_converter"),
        ("min_depth: 16", "min_depth: 16 use_explicit_padding: true", "use_explicit_padding is true"),
        ("fixed_shape_resizer { height: 96 width: 96 }", "keep_aspect_ratio_resizer { min_dimension: 96 }",
         "fixed_shape_resizer"),
    ):
        with pytest.raises(UnsupportedModel, match=expected):
            interpret(textproto.parse(text.replace(old, new, 1)), "pipeline.config")


def test_tf2_folder_imports_from_checkpoint_with_savedmodel_parity(tmp_path, recwarn):
    from odapi_fixtures import build_tf2_source

    from ssdkit.convert.odapi.importer import ParityWarning, import_model

    source = build_tf2_source(tmp_path / "ssd_mobilenet_v2_320x320_coco17_tpu-8")
    imported = import_model(str(source), progress=False)
    assert imported.parity.source_kind == "the TF2 SavedModel"
    assert imported.parity.relative < 1e-4 and all(r.top_identical for r in imported.parity.rows)
    assert imported.model.spec.name == "ssd_mnv2_odapi" and imported.model.spec.labels == ("thing1", "thing2", "thing3")
    # The checkpoint alone (no saved_model/): imports, parity not checked, with a warning.
    shutil.rmtree(source / "saved_model")
    alone = import_model(str(source / "checkpoint" / "ckpt-0"), progress=False)
    assert not alone.parity.runnable and any(issubclass(w.category, ParityWarning) for w in recwarn)
    a = alone.model.keras_model.get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, imported.model.keras_model.get_weights()))


def test_label_map_named_in_pipeline_config_wins_over_labels(v2_import, v2_source, recwarn):
    """Issue 15's order: the label map pipeline.config names, then --labels, COCO's 90, class_N."""
    from ssdkit.convert.odapi.config import read_pipeline_config
    from ssdkit.convert.odapi.importer import LabelsWarning, resolve_labels
    from ssdkit.convert.odapi.sources import open_source

    config = read_pipeline_config(v2_source / "pipeline.config")
    notes = []
    with open_source(v2_source) as source:
        labels = resolve_labels(config, source, 3, ("x", "y", "z"), notes)
        assert labels == ("cat", "dog", "bird")
        assert any(issubclass(w.category, LabelsWarning) and "--labels ignored" in str(w.message) for w in recwarn)
        assert "--labels ignored" in " ".join(notes)
        # The same labels given twice: no warning.
        recwarn.clear()
        assert resolve_labels(config, source, 3, ("cat", "dog", "bird"), []) == labels and not recwarn.list
        with pytest.raises(ValueError, match="--labels has 2 labels, the model 3 classes"):
            resolve_labels(config, source, 3, ("x", "y"), [])


@pytest.fixture(scope="module")
def tf1_sources(tmp_path_factory):
    """One small source per TF1 architecture added after the first three (built on first use)."""
    built = {}

    def get(kind):
        if kind not in built:
            spec = {
                "ssdlite_mobilenet_v3_small": Tf1Spec("ssdlite_mobilenet_v3_small", 1.0, 64),
                "ssdlite_mobilenet_v3_large": Tf1Spec("ssdlite_mobilenet_v3_large", 0.75, 64),
                "ssd_mobilenet_v1_fpn": Tf1Spec("ssd_mobilenet_v1_fpn", 0.25, 64, tower_depth=64, tower_layers=2),
            }[kind]
            built[kind] = build_tf1_source(tmp_path_factory.mktemp("odapi") / kind, spec)
        return built[kind]

    return get


@pytest.mark.parametrize("kind, entry, width", [
    ("ssdlite_mobilenet_v3_small", "ssdlite_mnv3_small_odapi", 1.0),
    ("ssdlite_mobilenet_v3_large", "ssdlite_mnv3_large_odapi", 0.75),
    ("ssd_mobilenet_v1_fpn", "ssd_mnv1_fpn_odapi", 0.25),
])
def test_more_tf1_architectures_import_exactly(kind, entry, width, tf1_sources, tmp_path):
    """MobileNetV3 (slim's detection variant: halved last stage, squeeze-excite, hard-swish) and the
    MobileNetV1 FPN with separate box and class towers: from the folder (pipeline.config) and from
    the lone frozen graph (architecture, width, FPN levels and anchors recovered from the graph)."""
    from ssdkit.convert.odapi.importer import import_model

    source = tf1_sources(kind)
    imported = import_model(str(source), progress=False)
    report = imported.parity
    assert imported.model.spec.name == entry and imported.model.definition.width == width
    assert report.relative < 1e-4 and all(r.top_identical for r in report.rows), report.table()
    lone = tmp_path / "frozen_inference_graph.pb"
    shutil.copy(source / "frozen_inference_graph.pb", lone)
    recovered = import_model(str(lone), labels_file=("a", "b", "c"), progress=False)
    assert recovered.model.spec.name == entry and recovered.model.definition.width == width
    assert recovered.model.spec.anchors == imported.model.spec.anchors
    assert recovered.model.definition.architecture == imported.model.definition.architecture
    assert recovered.parity.relative < 1e-4
    if kind == "ssdlite_mobilenet_v3_large":
        _check_v3_large_detection_channels(imported.model.keras_model)


def _check_v3_large_detection_channels(model):
    """The OD API's halved last stage (V3_LARGE_DETECTION: 80 and 480 where the classifier has 160
    and 960) and slim's rounding at width 0.75, read back from the imported network."""
    s = "FeatureExtractor/MobilenetV3"

    def out(layer):
        return model.get_layer(layer).kernel.shape[-1]

    assert out(f"{s}/expanded_conv_11/project") == 88  # 112 * 0.75 -> 84 -> 88
    assert out(f"{s}/expanded_conv_12/project") == 64  # 160 / 2 * 0.75 = 60 -> 64
    assert out(f"{s}/Conv_1") == 360  # 960 / 2 * 0.75
    assert out(f"{s}/expanded_conv_12/squeeze_excite/Conv") == 136  # 88 * 6 = 528 expanded channels / 4


def test_quantization_aware_graph_checked_by_detections_and_its_float_twin(tmp_path):
    """A TF1 quantization-aware graph (batch norms folded, FakeQuant on weights and activations):
    the import holds the float weights; raw outputs differ by quantization, so parity is the
    detection agreement plus the exact comparison with the graph's FakeQuant nodes bypassed."""
    from ssdkit.convert.odapi.importer import import_model

    source = build_tf1_source(tmp_path / "ssd_mobilenet_v2_quantized", Tf1Spec("ssd_mobilenet_v2", quantized=True))
    assert "graph_rewriter" in (source / "pipeline.config").read_text()
    imported = import_model(str(source), progress=False)
    report = imported.parity
    assert report.fake_quant > 100 and report.passed
    assert report.relative > 1e-3  # against the FakeQuant graph: quantization-sized
    assert report.float_twin_relative < 1e-4 and report.agreement >= 0.5
    table = report.table()
    assert "FakeQuant nodes" in table and "bypassed" in table
    # A wrong weight is caught by the float twin even where detections still agree.
    from ssdkit.convert.odapi import tf1
    from ssdkit.convert.odapi.parity import compare, load_photos, tf1_runner

    layer = imported.model.keras_model.get_layer("BoxPredictor_0/BoxEncodingPredictor")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + 0.01])
    graph_def = tf1.load_graph_def(source / "frozen_inference_graph.pb")
    runner = tf1_runner(graph_def, tf1.graph_facts(graph_def), "the frozen graph", "frozen_inference_graph.pb")
    try:
        assert not compare(runner, imported.model, load_photos(None)[:1]).passed
    finally:
        runner.close()


def test_tf2_fpnlite_imports_with_savedmodel_parity(tmp_path):
    """TF2 ssd_mobilenet_v2_fpn_keras (FPN-lite): Keras names (projection_N, smoothing_N_depthwise_conv,
    bottom_up_Conv2d_N, PredictionTower/conv2d_j/BatchNorm/feature_i, BoxPredictor / ClassPredictor)
    onto the OD API-exact network; the label map pipeline.config names (label_map.txt)."""
    from odapi_fixtures import build_tf2_fpnlite_source

    from ssdkit.convert.odapi.importer import import_model

    source = build_tf2_fpnlite_source(tmp_path / "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8", 64, tower_layers=2)
    imported = import_model(str(source), progress=False)
    report = imported.parity
    assert report.source_kind == "the TF2 SavedModel"
    assert report.relative < 1e-4 and all(r.top_identical for r in report.rows), report.table()
    spec, arch = imported.model.spec, imported.model.definition.architecture
    assert spec.name == "ssd_mnv2_fpnlite_odapi" and spec.labels == ("thing1", "thing2", "thing3")
    assert spec.num_anchors == (64 + 16 + 4 + 1 + 1) * 6
    assert arch.tower_layers == 2
    assert "labels: label_map.txt (named in pipeline.config)" in imported.notes


def _source_outputs(folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The frozen graph's raw outputs (``concat``, ``concat_1``) on each photo."""
    import tensorflow as tf

    from ssdkit.convert.odapi.parity import load_photos

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString((folder / "frozen_inference_graph.pb").read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return [tuple(session.run(["concat:0", "concat_1:0"], {"image_tensor:0": photo[None]}))
                for _, photo in load_photos(None)]


def test_fixture_sources_from_given_weights_and_with_realistic_scores(v2_source, v2_import, tmp_path):
    """What tools/import_int8_check.py builds on: a source written from given
    weights by OD API name (an import's, mapped back with ``tf1_name``) computes
    what the source they came from computes, bit for bit, whatever the seed;
    and a class bias shift leaves a handful of scores over 0.5 per photo where
    random weights put about half of them there."""
    from odapi_fixtures import with_realistic_scores

    from ssdkit.convert.odapi.architectures import tf1_name

    weights = {tf1_name(w.name): w.numpy() for w in v2_import.model.keras_model.weights}
    again = build_tf1_source(tmp_path / "again", Tf1Spec("ssd_mobilenet_v2", labels=("cat", "dog", "bird"), seed=7,
                                                         weights=weights))
    for a, b in zip(_source_outputs(v2_source), _source_outputs(again)):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(KeyError, match="Tf1Spec.weights has no FeatureExtractor/MobilenetV2/Conv/weights"):
        build_tf1_source(tmp_path / "partial", Tf1Spec("ssd_mobilenet_v2", weights={"x/weights": np.zeros(1)}))

    spec = Tf1Spec("ssd_mobilenet_v2", num_classes=3)
    shifted = with_realistic_scores(spec, per_photo=5)
    assert shifted.class_bias_shift < 0
    share = {}
    for kind, folder in (("random", v2_source), ("shifted", build_tf1_source(tmp_path / "shifted", shifted))):
        logits = [classes[..., 1:] for _, classes in _source_outputs(folder)]
        share[kind] = [int((photo > 0).sum()) for photo in logits], logits[0].size
    over, pairs = share["shifted"]
    assert 1 <= np.mean(over) <= 15, over
    over, pairs = share["random"]
    assert np.mean(over) / pairs > 0.2, (over, pairs)
