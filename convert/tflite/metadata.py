"""The standard TFLite model metadata of ssdkit's detectors.

Why: MediaPipe Tasks' ``ObjectDetector`` (and the TFLite Task Library, Android
Studio's model binding, Netron) read the model's ``TFLITE_METADATA`` entry,
a ``ModelMetadata`` flatbuffer (``metadata_schema.fbs``, identifier ``M001``):
the input's normalization and colour space, which output is location,
category, score and count, and the labels file among the associated files in
the zip appended to the model. With it, MediaPipe loads the embedded-NMS
models unchanged. The metadata is what MediaPipe's object-detector writer
(``metadata_writers.object_detector.MetadataWriter.create_for_models_with_nms``)
produces, which ``tests/convert/test_tflite_metadata.py`` checks against the
real package, plus a model-level record of ``ssdkit_spec.json``.

Why written with the flatbuffers builder: tflite-support, the writers'
original home, pins protobuf < 4, which TensorFlow 2.20 cannot share, and
MediaPipe pins its own OpenCV. The few tables used are below, each field at
its slot in ``metadata_schema.fbs`` (a union field takes two slots: its type,
then its value).

Raw-output models (``--no-nms``) get the same input metadata and their
outputs described by role; their class axis has a background column that
``labels.txt`` does not list, so the labels are recorded at the model level.
Files are recorded here by name; ``ssdkit.runtime.model_files`` packs them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import flatbuffers
import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from ssdkit.runtime.model_files import LABELS_NAME, SPEC_NAME
from ssdkit.runtime.spec import ModelSpec

METADATA_NAME = "TFLITE_METADATA"  # the name readers look the entry up by
_IDENTIFIER = b"M001"
_TFLITE_IDENTIFIER = b"TFL3"

# metadata_schema.fbs enum values
_FILE_UNKNOWN, _FILE_VALUE_LABELS = 0, 3  # AssociatedFileType
_RGB = 1  # ColorSpaceType
_BOUNDARIES = 1  # BoundingBoxType
_RATIO = 0  # CoordinateType
_FEATURE, _IMAGE, _BOX = 1, 2, 3  # ContentProperties members
_NORMALIZATION = 1  # ProcessUnitOptions member

# The writers' vocabulary: MediaPipe finds the detection outputs by these names.
_DETECTION_GROUP = ("detection_result", ("location", "category", "score"))
_BOX_INDEX = (1, 0, 3, 2)  # the op's boxes are (ymin, xmin, ymax, xmax): left, top, right, bottom at 1, 0, 3, 2
_PER_BOX = (2, 2)  # content range: the dimension that holds one value per box
_TYPE_NAMES = {code: name for name, code in vars(schema.TensorType).items() if not name.startswith("_")}


@dataclass(frozen=True)
class _File:
    name: str
    description: str
    type: int = _FILE_UNKNOWN


@dataclass(frozen=True)
class _Tensor:
    """One TensorMetadata; ``stats`` is (min, max), ``normalization`` (mean, std)."""

    name: str
    description: str
    content: int = _FEATURE
    value_range: tuple[int, int] | None = None
    stats: tuple[Sequence[float], Sequence[float]] | None = None
    normalization: tuple[Sequence[float], Sequence[float]] | None = None
    files: tuple[_File, ...] = ()


_LABELS = _File(LABELS_NAME, "Labels for categories that the model can recognize.", _FILE_VALUE_LABELS)
_SPEC = _File(SPEC_NAME, "The ssdkit model spec: anchors, box coder, labels, input normalization, output roles.")
_DETECTION_OUTPUTS = {
    "detection_boxes": _Tensor("location", "The locations of the detected boxes.", _BOX, _PER_BOX),
    "detection_classes": _Tensor("category", "The categories of the detected boxes.", value_range=_PER_BOX, files=(_LABELS,)),
    "detection_scores": _Tensor("score", "The scores of the detected boxes.", value_range=_PER_BOX),
    "num_detections": _Tensor("number of detections", "The number of the detected boxes."),
}
_RAW_OUTPUTS = {
    "box_encodings": _Tensor("box_encodings", f"Box encodings (ty, tx, th, tw) relative to the anchors of {SPEC_NAME}."),
    "class_predictions": _Tensor("class_predictions",
                                 f"Scores per anchor and class: column 0 the background, then the classes of {LABELS_NAME}."),
}


def metadata_buffer(spec: ModelSpec, input_type: str, output_names: Sequence[str]) -> bytes:
    """The ModelMetadata flatbuffer of a model exported from ``spec``.

    ``input_type`` is the image input's TFLite type name ("UINT8", "FLOAT32",
    ...); ``output_names`` are the model's output tensor names in order,
    matched to roles through ``spec.outputs``.
    """
    pre = spec.preprocessing
    if pre.color_order != "RGB" or pre.resize != "stretch":
        raise ValueError(f"TFLite metadata describes RGB stretched inputs only, not {pre.color_order} {pre.resize}")
    if spec.outputs is None:
        raise ValueError("the spec names no output roles; set spec.outputs from the converted model")
    detections = spec.outputs.kind == "detections"
    roles = {name: role for role, name in spec.outputs.names}
    table = _DETECTION_OUTPUTS if detections else _RAW_OUTPUTS
    if sorted(roles.get(name, "") for name in output_names) != sorted(table):
        raise ValueError(f"model outputs {list(output_names)} do not match the spec's output roles {list(spec.outputs.names)}")
    outputs = [table[roles[name]] for name in output_names]
    model_files = (_SPEC,) if detections else (_SPEC, _File(LABELS_NAME, _LABELS.description))

    b = flatbuffers.Builder(1024)
    subgraph = _table(b, [
        (2, _vector(b, [_tensor(b, _input(spec, input_type))])),
        (3, _vector(b, [_tensor(b, t) for t in outputs])),
        (8, _vector(b, [_group(b, *_DETECTION_GROUP)]) if detections else None),
    ])
    root = _table(b, [
        (0, b.CreateString(spec.name)),
        (1, b.CreateString(f"SSD object detector {spec.name}, {pre.input_height}x{pre.input_width}, exported by ssdkit.")),
        (3, _vector(b, [subgraph])),
        (6, _vector(b, [_file(b, f) for f in model_files])),
        # The largest "Added in" version of the fields used: output_tensor_groups came in 1.2.0.
        (7, b.CreateString("1.2.0" if detections else "1.0.0")),
    ])
    b.Finish(root, file_identifier=_IDENTIFIER)
    return bytes(b.Output())


def with_metadata(model_bytes: bytes, spec: ModelSpec) -> bytes:
    """The freshly converted TFLite model with ``TFLITE_METADATA`` describing it.

    Rebuilds the flatbuffer, so call it before appending associated files."""
    if model_bytes[4:8] != _TFLITE_IDENTIFIER:
        raise ValueError(f"not a TFLite flatbuffer (file identifier {model_bytes[4:8]!r}, expected {_TFLITE_IDENTIFIER!r})")
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1:
        raise ValueError(f"expected one image input, the model has {len(graph.inputs)}")
    input_type = _TYPE_NAMES[graph.tensors[graph.inputs[0]].type]
    if any(m.name.decode() == METADATA_NAME for m in model.metadata or []):
        raise ValueError(f"the model has {METADATA_NAME} already")
    output_names = [graph.tensors[i].name.decode() for i in graph.outputs]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata_buffer(spec, input_type, output_names), np.uint8)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME.encode(), len(model.buffers)
    model.buffers.append(buffer)
    model.metadata = [*(model.metadata or []), entry]
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=_TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _input(spec: ModelSpec, input_type: str) -> _Tensor:
    """The image input as the writers describe it: raw pixel range for uint8,
    the normalized range for float, none for other types."""
    pre = spec.preprocessing
    if input_type == "UINT8":
        stats = ([0.0], [255.0])
    elif input_type == "FLOAT32":
        stats = ([(0 - m) / s for m, s in zip(pre.mean, pre.std)], [(255 - m) / s for m, s in zip(pre.mean, pre.std)])
    else:
        stats = None
    return _Tensor("image", "Input image to be processed.", _IMAGE, stats=stats, normalization=(pre.mean, pre.std))


def _table(b: flatbuffers.Builder, fields: Sequence[tuple[int, int | None]], bytes_: Sequence[tuple[int, int]] = ()) -> int:
    """A table from (slot, offset) fields (None: absent) and (slot, byte) scalars
    (the schema's byte enums and ubyte union types); every child must be built already."""
    b.StartObject(max(slot for slot, _ in [*fields, *bytes_]) + 1)
    for slot, offset in fields:
        if offset is not None:
            b.PrependUOffsetTRelativeSlot(slot, offset, 0)
    for slot, value in bytes_:
        b.PrependInt8Slot(slot, value, 0)
    return b.EndObject()


def _vector(b: flatbuffers.Builder, offsets: Sequence[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _floats(b: flatbuffers.Builder, values: Sequence[float]) -> int:
    return b.CreateNumpyVector(np.asarray(values, np.float32))


def _file(b: flatbuffers.Builder, f: _File) -> int:  # AssociatedFile
    return _table(b, [(0, b.CreateString(f.name)), (1, b.CreateString(f.description))], [(2, f.type)])


def _group(b: flatbuffers.Builder, name: str, tensor_names: Sequence[str]) -> int:  # TensorGroup
    return _table(b, [(0, b.CreateString(name)), (1, _vector(b, [b.CreateString(n) for n in tensor_names]))])


def _content(b: flatbuffers.Builder, t: _Tensor) -> int:  # Content
    if t.content == _IMAGE:  # ImageProperties: color_space
        properties = _table(b, [], [(0, _RGB)])
    elif t.content == _BOX:  # BoundingBoxProperties: index, type, coordinate_type
        properties = _table(b, [(0, b.CreateNumpyVector(np.asarray(_BOX_INDEX, np.uint32)))], [(1, _BOUNDARIES), (2, _RATIO)])
    else:  # FeatureProperties: no fields
        b.StartObject(0)
        properties = b.EndObject()
    value_range = None
    if t.value_range is not None:  # ValueRange: min, max
        b.StartObject(2)
        b.PrependInt32Slot(0, t.value_range[0], 0)
        b.PrependInt32Slot(1, t.value_range[1], 0)
        value_range = b.EndObject()
    return _table(b, [(1, properties), (2, value_range)], [(0, t.content)])


def _tensor(b: flatbuffers.Builder, t: _Tensor) -> int:  # TensorMetadata
    content = _content(b, t)
    units = None
    if t.normalization is not None:  # ProcessUnit(NormalizationOptions: mean, std)
        options = _table(b, [(0, _floats(b, t.normalization[0])), (1, _floats(b, t.normalization[1]))])
        units = _vector(b, [_table(b, [(1, options)], [(0, _NORMALIZATION)])])
    # Stats (max, min) is written even when empty, as the writers do.
    stats = _table(b, [(0, _floats(b, t.stats[1])), (1, _floats(b, t.stats[0]))] if t.stats else [(0, None)])
    files = _vector(b, [_file(b, f) for f in t.files]) if t.files else None
    return _table(b, [(0, b.CreateString(t.name)), (1, b.CreateString(t.description)), (3, content),
                      (4, units), (5, stats), (6, files)])
