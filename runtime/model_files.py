"""How the spec travels inside exported artifacts, written and read here.

- SavedModel folder: ``assets.extra/ssdkit_spec.json`` (TensorFlow ignores it).
- TFLite: TFLite's metadata convention appends a zip archive of "associated
  files" to the flatbuffer; the file stays a valid model and becomes a valid
  zip. ``ssdkit_spec.json`` and ``labels.txt`` live in that zip, so the
  runtime reads them with ``zipfile`` alone.
- ONNX: ``metadata_props`` key ``ssdkit_spec``.
- Any file: a sidecar ``<file>.spec.json`` (for third-party models).
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

from .spec import ModelSpec

SPEC_NAME = "ssdkit_spec.json"
LABELS_NAME = "labels.txt"
ONNX_KEY = "ssdkit_spec"
SAVEDMODEL_SPEC = f"assets.extra/{SPEC_NAME}"


def append_associated_files(model_bytes: bytes, files: dict[str, bytes]) -> bytes:
    """Returns the TFLite model with ``files`` in its appended zip.

    If the model already ends with a zip (e.g. from standard TFLite metadata),
    the files are added to that archive instead of starting a second one.
    """
    existing = {}
    body = model_bytes
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            existing = {name: archive.read(name) for name in archive.namelist()}
            # zipfile reports header offsets from the start of the file: the
            # first local header is where the flatbuffer ends.
            body = model_bytes[: min((i.header_offset for i in archive.infolist()), default=len(model_bytes))]
    except zipfile.BadZipFile:
        pass
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in {**existing, **files}.items():
            archive.writestr(name, data)
    return body + buffer.getvalue()


def tflite_associated_files(path: str | Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}


def read_spec(path: str | Path) -> ModelSpec | None:
    """The spec embedded in (or beside) an artifact, or None if it has none."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".spec.json")
    if path.is_dir():
        text = (path / SAVEDMODEL_SPEC).read_text() if (path / SAVEDMODEL_SPEC).is_file() else None
    elif path.suffix == ".tflite":
        data = tflite_associated_files(path).get(SPEC_NAME)
        text = data.decode() if data else None
    elif path.suffix == ".onnx":
        text = _onnx_spec(path)
    else:
        text = None
    if text is None and sidecar.is_file():
        text = sidecar.read_text()
    if text is None:
        return None
    try:
        return ModelSpec.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: the embedded ssdkit spec is invalid: {exc}") from exc


def _onnx_spec(path: Path) -> str | None:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.get_modelmeta().custom_metadata_map.get(ONNX_KEY)
