"""Standard TFLite metadata: read back here by an independent reader, and by
the real ``mediapipe`` package, whose ObjectDetector must load the models.

MediaPipe pins its own OpenCV and flatbuffers, so it lives in its own virtual
environment, created once in the ssdkit cache (``$SSDKIT_CACHE``, default
``~/.cache/ssdkit``) from the package registry: about 45 s and 650 MB; the
MediaPipe test then takes seconds. Without a registry it skips, saying why.
"""
import collections
import dataclasses
import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from flatbuffers import encode  # noqa: E402
from flatbuffers import number_types as N  # noqa: E402
from flatbuffers.table import Table  # noqa: E402
from tensorflow.lite.python import schema_py_generated as tflite_schema  # noqa: E402

from ssdkit.datasets.synth import cache_dir, iter_images  # noqa: E402
from ssdkit.convert.export import export  # noqa: E402
from ssdkit.convert.checkpoint import prepare_model  # noqa: E402
from ssdkit.convert.tflite.savedmodel2tflite import TFLiteOptions, export_tflite_variants  # noqa: E402
from ssdkit.convert.tflite.metadata import metadata_buffer, with_metadata  # noqa: E402
from ssdkit.runtime import Detector  # noqa: E402
from ssdkit.runtime.model_files import read_spec, tflite_associated_files  # noqa: E402
from ssdkit.runtime.roles import OutputRoles  # noqa: E402
from ssdkit.runtime.spec import Preprocessing  # noqa: E402

LABELS = ("cat", "dog")
SIZE = 96
MEDIAPIPE = "mediapipe==1.2.2"
ROLE_NAMES = {"detection_boxes": "location", "detection_classes": "category",
              "detection_scores": "score", "num_detections": "number of detections"}
IMAGE_PROPERTIES, BOUNDING_BOX, NORMALIZATION, RGB, BOUNDARIES, VALUE_LABELS = 2, 3, 1, 1, 1, 3


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny ssd_mnv2 as fp32 and int8 (uint8 input) TFLite with embedded NMS."""
    with pytest.warns(UserWarning, match="untrained"):
        model = prepare_model("ssd_mnv2", width=0.35, input_size=(SIZE, SIZE), labels=LABELS, backbone_weights="none")
    out = tmp_path_factory.mktemp("metadata")
    (saved_model,) = export(model, "savedmodel", out)
    variants = [TFLiteOptions(quant="fp32", score_threshold=0.0), TFLiteOptions(quant="int8", score_threshold=0.0)]
    fp32, int8 = export_tflite_variants(saved_model, model.spec, out, variants, list(iter_images(7, 4, SIZE)))
    return {"fp32": fp32, "int8": int8}


class Fb:
    """A flatbuffer table read by field slot, as metadata_schema.fbs orders
    them: a reader that shares no code with the writer."""

    def __init__(self, buf: bytes, pos: int):
        self.t = Table(buf, pos)

    @classmethod
    def root(cls, buf: bytes) -> "Fb":
        return cls(buf, encode.Get(N.UOffsetTFlags.packer_type, buf, 0))

    def _at(self, slot: int) -> int:
        return self.t.Offset(4 + 2 * slot)

    def string(self, slot):
        o = self._at(slot)
        return self.t.String(self.t.Pos + o).decode() if o else None

    def byte(self, slot):
        o = self._at(slot)
        return self.t.Get(N.Int8Flags, self.t.Pos + o) if o else 0

    def table(self, slot):
        o = self._at(slot)
        return Fb(self.t.Bytes, self.t.Indirect(self.t.Pos + o)) if o else None

    def _items(self, slot):
        o = self._at(slot)
        return [self.t.Vector(o) + 4 * i for i in range(self.t.VectorLen(o))] if o else []

    def tables(self, slot):
        return [Fb(self.t.Bytes, self.t.Indirect(at)) for at in self._items(slot)]

    def strings(self, slot):
        return [self.t.String(at).decode() for at in self._items(slot)]

    def numbers(self, slot, flags=N.Float32Flags):
        o = self._at(slot)
        return self.t.GetVectorAsNumpy(flags, o).tolist() if o else []


def tflite_metadata(path):
    """(the TFLITE_METADATA flatbuffer, the model's input type, its output tensor names)."""
    data = path.read_bytes()
    model = tflite_schema.Model.GetRootAsModel(data, 0)
    entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    graph = model.Subgraphs(0)
    outputs = [graph.Tensors(graph.Outputs(i)).Name().decode() for i in range(graph.OutputsLength())]
    return model.Buffers(entries["TFLITE_METADATA"]).DataAsNumpy().tobytes(), graph.Tensors(graph.Inputs(0)).Type(), outputs


def test_runtime_reads_spec_and_labels_from_the_one_zip(models):
    for path in models.values():
        files = tflite_associated_files(path)
        assert sorted(files) == ["labels.txt", "ssdkit_spec.json"]
        with zipfile.ZipFile(path) as archive:  # stored, as TFLite metadata readers need
            assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
        spec = read_spec(path)
        assert spec.labels == LABELS and files["labels.txt"].decode().splitlines() == list(LABELS)
        assert Detector(path, score_threshold=0.0).detect(np.zeros((40, 60, 3), np.uint8))


def test_uint8_input_takes_raw_pixels(models):
    """Calibration pins the input range to pixels 0..255, so pipelines that
    feed camera pixels straight in (Coral, MediaPipe) see what the runtime
    feeds: real = (q - zero_point) * scale = (pixel - 127.5) / 127.5."""
    with Detector(models["int8"]) as detector:
        info = detector.backend.inputs[0]
    assert info.dtype == np.uint8
    assert info.scale == pytest.approx(1 / 127.5, rel=1e-3) and info.zero_point in (127, 128)


@pytest.mark.parametrize("key", ["fp32", "int8"])
def test_metadata_matches_the_spec(models, key):
    spec = read_spec(models[key])
    buf, input_type, output_names = tflite_metadata(models[key])
    assert buf[4:8] == b"M001"
    root = Fb.root(buf)
    assert root.string(0) == spec.name and root.string(7) == "1.2.0"
    assert [f.string(0) for f in root.tables(6)] == ["ssdkit_spec.json"]
    (subgraph,) = root.tables(3)

    (image,) = subgraph.tables(2)
    assert image.string(0) == "image"
    content = image.table(3)
    assert content.byte(0) == IMAGE_PROPERTIES and content.table(1).byte(0) == RGB
    (unit,) = image.tables(4)
    assert unit.byte(0) == NORMALIZATION
    assert unit.table(1).numbers(0) == list(spec.preprocessing.mean)
    assert unit.table(1).numbers(1) == list(spec.preprocessing.std)
    stats = image.table(5)  # max, min: the tensor's value range
    if key == "int8":
        assert input_type == tflite_schema.TensorType.UINT8 and (stats.numbers(1), stats.numbers(0)) == ([0], [255])
    else:
        assert input_type == tflite_schema.TensorType.FLOAT32 and (stats.numbers(1), stats.numbers(0)) == ([-1] * 3, [1] * 3)

    # One entry per model output, in the model's order, named by the output's role.
    roles = {name: role for role, name in spec.outputs.names}
    outputs = {t.string(0): t for t in subgraph.tables(3)}
    assert list(outputs) == [ROLE_NAMES[roles[name]] for name in output_names]
    (labels,) = outputs["category"].tables(6)
    assert (labels.string(0), labels.byte(2)) == ("labels.txt", VALUE_LABELS)
    box = outputs["location"].table(3)
    assert box.byte(0) == BOUNDING_BOX
    assert box.table(1).numbers(0, N.Uint32Flags) == [1, 0, 3, 2] and box.table(1).byte(1) == BOUNDARIES
    (group,) = subgraph.tables(8)
    assert (group.string(0), group.strings(1)) == ("detection_result", ["location", "category", "score"])


def test_raw_outputs_are_described_by_role(models):
    spec = read_spec(models["fp32"])
    raw = OutputRoles("raw", (("box_encodings", "boxes:0"), ("class_predictions", "scores:0")), scores_activated=True)
    root = Fb.root(metadata_buffer(dataclasses.replace(spec, outputs=raw), "INT8", ["scores:0", "boxes:0"]))
    (subgraph,) = root.tables(3)
    assert [t.string(0) for t in subgraph.tables(3)] == ["class_predictions", "box_encodings"]
    assert subgraph.tables(8) == [] and root.string(7) == "1.0.0"
    assert subgraph.tables(2)[0].table(5).numbers(0) == []  # no value range for an int8 image
    # The class axis has a background column labels.txt lacks: labels at the model level.
    assert [f.string(0) for f in root.tables(6)] == ["ssdkit_spec.json", "labels.txt"]


def test_what_metadata_cannot_describe_is_an_error(models):
    spec = read_spec(models["fp32"])
    _, _, names = tflite_metadata(models["fp32"])
    bgr = dataclasses.replace(spec, preprocessing=Preprocessing(SIZE, SIZE, color_order="BGR"))
    with pytest.raises(ValueError, match="RGB stretched inputs only"):
        metadata_buffer(bgr, "FLOAT32", names)
    with pytest.raises(ValueError, match="do not match the spec's output roles"):
        metadata_buffer(spec, "FLOAT32", names[:3] + ["other"])
    with pytest.raises(ValueError, match="has TFLITE_METADATA already"):
        with_metadata(models["fp32"].read_bytes(), spec)


@pytest.fixture(scope="session")
def mediapipe_python():
    """The python of a venv holding MediaPipe, created once and cached."""
    venv = cache_dir() / "mediapipe-venv"
    python, stamp = venv / "bin" / "python", venv / "ssdkit-installed"
    if python.exists() and stamp.is_file() and stamp.read_text() == MEDIAPIPE:
        return python
    shutil.rmtree(venv, ignore_errors=True)  # a half-made or outdated one
    for command in ([sys.executable, "-m", "venv", str(venv)], [str(python), "-m", "pip", "install", "--quiet", MEDIAPIPE]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
        except subprocess.TimeoutExpired:
            pytest.skip(f"cannot create the MediaPipe venv {venv}: {' '.join(command[2:])} timed out")
        if done.returncode:
            error = (done.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"cannot create the MediaPipe venv {venv} ({' '.join(command[2:])}): {error}")
    stamp.write_text(MEDIAPIPE)
    return python


# Run in the MediaPipe venv: detect with ObjectDetector, and write the reference
# metadata with MediaPipe's own object-detector writer on the model without ours.
MEDIAPIPE_SCRIPT = r"""
import json, sys, types
try:
    from mediapipe.tasks.python.metadata import metadata
except ModuleNotFoundError:
    # mediapipe 1.2.2's wheel lacks the extension that metadata.py imports
    # for min_parser_version alone; the writer runs without it.
    package = "mediapipe.tasks.cc.metadata.python"
    for i in range(3, 6):
        sys.modules.setdefault(".".join(package.split(".")[:i]), types.ModuleType("stub"))
    stub = types.ModuleType("_pywrap_metadata_version")
    stub.GetMinimumMetadataParserVersion = lambda buffer: "unknown"
    sys.modules[package + "._pywrap_metadata_version"] = sys.modules[package]._pywrap_metadata_version = stub
    from mediapipe.tasks.python.metadata import metadata
import flatbuffers
import mediapipe as mp
import numpy as np
from mediapipe.tasks.metadata import schema_py_generated as tflite_schema
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core.base_options import BaseOptions
from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, object_detector

args = json.loads(sys.argv[1])
image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.load(args["image"]))
results = {}
for path in args["models"]:
    options = vision.ObjectDetectorOptions(base_options=BaseOptions(model_asset_path=path), score_threshold=0.0)
    with vision.ObjectDetector.create_from_options(options) as detector:
        detections = detector.detect(image).detections
    data = open(path, "rb").read()
    model = tflite_schema.ModelT.InitFromObj(tflite_schema.Model.GetRootAsModel(data, 0))
    model.metadata = [m for m in model.metadata if m.name != b"TFLITE_METADATA"]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), b"TFL3")
    writer = object_detector.MetadataWriter.create_for_models_with_nms(
        builder.Output(), args["mean"], args["std"], metadata_writer.Labels().add(args["labels"]))
    displayer = metadata.MetadataDisplayer.with_model_buffer(data)
    results[path] = {
        "labels": [d.categories[0].category_name for d in detections],
        "scores": [d.categories[0].score for d in detections],
        "origins": [[d.bounding_box.origin_x, d.bounding_box.origin_y] for d in detections],
        "metadata": json.loads(displayer.get_metadata_json()),
        "packed": displayer.get_packed_associated_file_list(),
        "reference": json.loads(writer.populate()[1]),
    }
print(json.dumps(results))
"""


def test_mediapipe_object_detector_loads_the_models(models, mediapipe_python, tmp_path):
    spec = read_spec(models["fp32"])
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    args = {"models": [str(p) for p in models.values()], "image": str(tmp_path / "image.npy"),
            "mean": list(spec.preprocessing.mean), "std": list(spec.preprocessing.std), "labels": list(LABELS)}
    done = subprocess.run([str(mediapipe_python), "-c", MEDIAPIPE_SCRIPT, json.dumps(args)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for key, path in models.items():
        result = results[str(path)]
        assert result["labels"] and set(result["labels"]) <= set(LABELS), key
        assert all(0 <= s <= 1 for s in result["scores"]) and all(0 <= v < SIZE for o in result["origins"] for v in o)
        # What MediaPipe's own object-detector writer produces, tensor for tensor.
        assert result["metadata"]["subgraph_metadata"] == result["reference"]["subgraph_metadata"], key
        assert sorted(result["packed"]) == ["labels.txt", "ssdkit_spec.json"]
    # fp32 sees the same input in both: the same detections, label for label.
    ours = Detector(models["fp32"], score_threshold=0.0).detect(image)
    assert collections.Counter(results[str(models["fp32"])]["labels"]) == collections.Counter(d.label for d in ours)
