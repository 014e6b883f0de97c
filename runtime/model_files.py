"""How the spec travels inside exported artifacts: written and read here, so
exporters and the runtime share one definition.

- SavedModel folder: ``assets.extra/ssdkit_spec.json`` and ``labels.txt``
  (TensorFlow ignores that folder).
- TFLite: TFLite's metadata convention appends a zip archive of "associated
  files" to the flatbuffer; the file stays a valid model and becomes a valid
  zip. ``ssdkit_spec.json`` and ``labels.txt`` live in that zip, so the
  runtime reads them with ``zipfile`` alone. A model that already carries an
  archive (standard TFLite metadata, written by tflite-support's
  ``MetadataPopulator``) keeps it: the files join that archive. Write the
  standard metadata first, then ``embed_in_tflite``: the metadata writer
  rebuilds the flatbuffer and does not keep files it did not add.
- ONNX: ``metadata_props`` key ``ssdkit_spec`` (read through ONNX Runtime
  or OpenVINO, so a device needs no ``onnx`` package).
- OpenVINO IR (``.xml`` + ``.bin``): ``rt_info`` key ``ssdkit_spec``.
- Any file: a sidecar ``<file>.spec.json`` (third-party models), or the JSON
  given to ``Detector(spec=...)`` / ``ssdkit detect --spec``.

The embedded spec is the model's ``ModelSpec`` with ``outputs`` set: which
output tensor plays which role (see ``spec.OutputRoles``).
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

from .spec import ModelSpec

SPEC_NAME = "ssdkit_spec.json"
LABELS_NAME = "labels.txt"
ONNX_KEY = "ssdkit_spec"
SAVEDMODEL_FOLDER = "saved_model"  # an export folder's SavedModel: build/MODEL/saved_model/
SAVEDMODEL_ASSETS = "assets.extra"  # the SavedModel's files TensorFlow ignores: the spec, labels.txt
SAVEDMODEL_SPEC = f"{SAVEDMODEL_ASSETS}/{SPEC_NAME}"
SIDECAR_SUFFIX = ".spec.json"
NODE_DATA_SUFFIX = ".node_data.json"  # the int8 export's per-layer error (evaluation/node_data.py writes it)


def spec_files(spec: ModelSpec) -> dict[str, bytes]:
    """The files that carry ``spec``: its JSON and the labels, one per line."""
    return {SPEC_NAME: spec.to_json().encode(), LABELS_NAME: "".join(f"{label}\n" for label in spec.labels).encode()}


def append_associated_files(model_bytes: bytes, files: dict[str, bytes]) -> bytes:
    """The TFLite model with ``files`` in its appended zip (uncompressed, as
    TFLite metadata wants); files of the same name are replaced, other files
    of an existing archive are kept in their order."""
    body, existing = _split(model_bytes)
    merged = {**existing, **files}
    buffer = io.BytesIO(body)
    # Mode "a" on bytes that are not a zip appends a new archive after them,
    # exactly as tflite-support's MetadataPopulator does.
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_STORED) as archive:
        for name, data in merged.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def embed_in_tflite(model_bytes: bytes, spec: ModelSpec) -> bytes:
    """The TFLite model carrying ``spec`` (and its labels) in its associated files."""
    return append_associated_files(model_bytes, spec_files(spec))


def write_savedmodel_spec(saved_model_dir: str | Path, spec: ModelSpec) -> None:
    """Writes the spec files into ``saved_model_dir/assets.extra``."""
    folder = Path(saved_model_dir) / SAVEDMODEL_ASSETS
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in spec_files(spec).items():
        (folder / name).write_bytes(data)


def onnx_metadata(spec: ModelSpec) -> dict[str, str]:
    """``metadata_props`` entries for ``onnx.helper.set_model_props``."""
    return {ONNX_KEY: spec.to_json()}


def sidecar_path(model_path: str | Path) -> Path:
    path = Path(model_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def node_data_path(model: str | Path) -> Path:
    """``MODEL_int8.tflite`` -> ``MODEL_int8.node_data.json`` (beside it): the
    quantization debugger's per-layer error as Model Explorer node data, which
    ``ssdkit explore`` shows and ``ssdkit quantize --recipe auto`` ranks by."""
    model = Path(model)
    return model.with_name(model.stem + NODE_DATA_SUFFIX)


def tflite_associated_files(path: str | Path) -> dict[str, bytes]:
    """The files of a TFLite model's appended zip ({} when it has none).
    zipfile reads the archive from the end of the file, not the whole model."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {info.filename: archive.read(info) for info in archive.infolist()}
    except zipfile.BadZipFile:
        return {}


def embedded_spec_text(path: str | Path, onnx_metadata_map: dict[str, str] | None = None) -> str | None:
    """The spec JSON stored in a SavedModel folder, TFLite or ONNX file, or None.

    ``onnx_metadata_map`` is the ONNX model's metadata when the caller has a
    session open already (``Backend.metadata()``), so the file is not loaded twice.
    """
    path = Path(path)
    if path.is_dir():
        spec_file = path / SAVEDMODEL_SPEC
        return spec_file.read_text() if spec_file.is_file() else None
    if path.suffix.lower() in (".onnx", ".xml"):  # ONNX metadata_props; an OpenVINO IR's rt_info
        metadata = _onnx_metadata(path) if onnx_metadata_map is None else onnx_metadata_map
        return metadata.get(ONNX_KEY)
    data = tflite_associated_files(path).get(SPEC_NAME)
    return data.decode() if data is not None else None


def read_spec(path: str | Path) -> ModelSpec | None:
    """The ssdkit spec embedded in (or beside) an artifact, or None if it has none."""
    path = Path(path)
    text, source = embedded_spec_text(path), f"{path}: the embedded ssdkit spec"
    if text is None and sidecar_path(path).is_file():
        text, source = sidecar_path(path).read_text(), str(sidecar_path(path))
    if text is None:
        return None
    try:
        return ModelSpec.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{source} is invalid: {exc}") from exc


def _split(model_bytes: bytes) -> tuple[bytes, dict[str, bytes]]:
    """(the bytes before the appended zip, the zip's files); all bytes and {} without one."""
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            files = {info.filename: archive.read(info) for info in archive.infolist()}
            # zipfile reports offsets from the start of the buffer (it corrects
            # for data before the archive), so the first local header (or the
            # central directory of an empty archive) is where the flatbuffer ends.
            start = min((info.header_offset for info in archive.infolist()), default=archive.start_dir)
    except zipfile.BadZipFile:
        return model_bytes, {}
    return model_bytes[:start], files


def _onnx_metadata(path: Path) -> dict[str, str]:
    """The model's metadata through ONNX Runtime, else OpenVINO (an IR, or
    an install with OpenVINO only)."""
    from .backends.onnx import OnnxBackend
    from .backends.openvino import OpenVinoBackend

    backend = None
    if path.suffix.lower() == ".onnx":
        try:
            backend = OnnxBackend(path)
        except RuntimeError:  # ONNX Runtime is not installed
            backend = None
    backend = backend or OpenVinoBackend(path)
    try:
        return backend.metadata()
    finally:
        backend.close()
