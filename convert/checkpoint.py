"""ssdkit checkpoints: a model's weights with the definition that rebuilds it.

One ``.npz`` file: ``__meta__`` holds JSON and every Keras weight is stored
as ``w/<variable name>``, so loading matches by name and reports exactly
what is missing or mis-shaped. Weights may be stored as float16 to ship
small files.

``__meta__``, version 2 (written since the re-cut of the vocabulary)::

    {"format": "ssdkit-checkpoint", "version": 2,
     "model": {"architecture": {...zoo.Architecture...}, "width": 1.0,
               "spec": {...runtime.spec.ModelSpec: input size, anchors, feature maps, box coder,
                        labels, postprocessing (NMS settings)...}},
     "train": {"step": ..., "mAP": ...},        # optional: what wrote it
     "qat": {"scheme": "tfmot-default-8bit"},   # optional: a quantization-aware network (models/qat.py),
                                                 # its weights include the fake-quant ranges
     "source": {...}}                            # optional: e.g. an importer's origin

Version 1 (``"config"``: zoo name, width, input size, labels; ``"spec"``)
still loads: its architecture is the zoo entry's. ``write_checkpoint`` is
what an importer calls with a ``ModelDefinition`` and the arrays (by
ssdkit's variable names, those of ``build_model(definition)``);
``prepare_model`` builds a network with its weights, for export and
training alike.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ssdkit.fileio import atomic_path
from ssdkit.runtime.spec import ModelSpec

from .zoo import SHIPPED_TRAINING_DATA, DEFAULT_MODEL, ModelConfig, ModelDefinition, get_entry, shipped_weights

if TYPE_CHECKING:  # reading and writing checkpoints needs no TensorFlow; building the network does
    from .models.ssd import SSDModel

FORMAT = "ssdkit-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class Checkpoint:
    """A read checkpoint: the model's definition, its weights by variable
    name, the other ``__meta__`` entries (``train``, ``source``, ...) and the
    format version it was written in."""

    definition: ModelDefinition
    weights: dict[str, np.ndarray]
    meta: dict[str, Any]
    version: int
    path: Path


def write_checkpoint(path: str | Path, definition: ModelDefinition, weights: dict[str, np.ndarray],
                     dtype: str = "float32", extra: dict | None = None) -> Path:
    """Writes a version 2 checkpoint atomically: ``weights`` by ssdkit variable
    name (as ``build_model(definition)`` names them), stored as ``dtype``;
    ``extra`` entries (e.g. ``{"train": ...}`` or ``{"source": ...}``) join the metadata."""
    path = Path(path)
    reserved = {"format", "version", "model"} & set(extra or {})
    if reserved:
        raise ValueError(f"checkpoint metadata keys {sorted(reserved)} are the format's own")
    meta = {"format": FORMAT, "version": VERSION, "model": definition.to_dict(), **(extra or {})}
    arrays = {f"w/{name}": np.asarray(value).astype(dtype) for name, value in weights.items()}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, __meta__=np.array(json.dumps(meta)), **arrays)
    return path


def save_checkpoint(model: SSDModel, path: str | Path, dtype: str = "float32", extra: dict | None = None) -> Path:
    """``write_checkpoint`` of a built model's definition and current weights
    (a QAT network's with its ``qat`` record and quantization ranges, in float32)."""
    if model.qat is not None:
        extra, dtype = {**(extra or {}), "qat": model.qat}, "float32"
    return write_checkpoint(path, model.definition, {w.name: w.numpy() for w in model.keras_model.weights},
                            dtype, extra)


def checkpoint_file(path: str | Path) -> Path:
    """``path`` itself, or for a folder (an ``ssdkit import`` output) the one
    ``.npz`` checkpoint in it."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.npz"))
        if len(found) != 1:
            raise FileNotFoundError(f"{path}: expected one .npz checkpoint in the folder, found {len(found)}")
        return found[0]
    return path


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Reads a version 1 or 2 checkpoint.

    ``path`` may be an ``ssdkit import`` output folder (its one ``.npz``).

    Raises:
      FileNotFoundError: no such file, or a folder without exactly one ``.npz``.
      ValueError: not an ssdkit checkpoint, another format version, or
        metadata of the wrong shape (the message names the field).
    """
    path = checkpoint_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
            weights = {k[2:]: data[k] for k in data.files if k.startswith("w/")}
    except (ValueError, KeyError, OSError) as exc:
        raise ValueError(f"{path}: not an ssdkit checkpoint ({exc})") from exc
    version = meta.get("version") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or version not in READABLE_VERSIONS:
        found = f"{meta.get('format')!r} v{version}" if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path}: checkpoint format {found}, expected {FORMAT!r} v"
                         + " or v".join(map(str, READABLE_VERSIONS)))
    try:
        definition = _definition_v1(meta) if version == 1 else ModelDefinition.from_dict(meta["model"])
    except (ValueError, KeyError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"{path}: checkpoint metadata: {what}") from exc
    rest = {k: v for k, v in meta.items() if k not in ("format", "version", "model", "config", "spec")}
    return Checkpoint(definition, weights, rest, version, path)


def _definition_v1(meta: dict) -> ModelDefinition:
    """Version 1 stored the zoo name and options, and the spec: the architecture is the zoo entry's."""
    config = ModelConfig.from_dict(meta["config"])
    return ModelDefinition(get_entry(config.model).architecture, config.width, ModelSpec.from_dict(meta["spec"]))


def training_data(checkpoint: Checkpoint) -> str | None:
    """What ``checkpoint`` was trained on: the ``"train": {"data": ...}`` that
    ``ssdkit train`` records (``datasets.synth.SYNTHETIC_DATA`` or the
    dataset's path), or for the zoo's shipped weights its table's entry;
    None when unknown (an imported model, an older checkpoint)."""
    train = checkpoint.meta.get("train")
    if isinstance(train, dict) and isinstance(train.get("data"), str):
        return train["data"]
    try:
        shipped = shipped_weights(checkpoint.definition.name)
    except (ValueError, RuntimeError):  # not a zoo name, or an install without its weights
        shipped = None
    if shipped is not None and Path(str(shipped)).resolve() == checkpoint.path.resolve():
        return SHIPPED_TRAINING_DATA.get(checkpoint.path.name)
    return None


def is_class_head(name: str) -> bool:
    """A weight of the class-prediction layers (re-initialised when the classes change)."""
    return "ClassPredictor" in name


def apply_weights(model: SSDModel, weights: dict[str, np.ndarray], source: str | Path,
                  skip_class_head: bool = False) -> None:
    """Assigns stored weights to the model by variable name; every variable
    must be present with its exact shape (``skip_class_head``: except the
    class head's that the number of classes shapes, which keep their initialisation)."""
    variables = {w.name: w for w in model.keras_model.weights}
    if skip_class_head:
        resized = {n for n, w in variables.items()
                   if is_class_head(n) and n in weights and tuple(w.shape) != weights[n].shape}
        variables = {n: w for n, w in variables.items() if n not in resized}
        weights = {n: w for n, w in weights.items() if n not in resized}
    missing = sorted(set(variables) - set(weights))
    unexpected = sorted(set(weights) - set(variables))
    wrong = sorted(n for n in set(variables) & set(weights) if tuple(variables[n].shape) != weights[n].shape)
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''} ({len(names)})"
            for what, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if names
        )
        raise ValueError(f"{source}: checkpoint does not fit {model.spec.name} at width {model.definition.width}: "
                         f"{details}")
    for name, variable in variables.items():
        variable.assign(weights[name].astype(variable.dtype.as_numpy_dtype))


def resolve_model(model: str | None, weights: str | Path | None) -> str | None:
    """The zoo model a command works on: ``--model`` if given; else None when
    ``--weights`` names a checkpoint (it knows its model); else ``DEFAULT_MODEL``."""
    if model is not None or weights not in (None, "auto", "none"):
        return model
    return DEFAULT_MODEL


def resolve_weights(model_name: str | None, weights: str | Path | None, customised: bool) -> str | Path | None:
    """``weights`` as the export commands take it: a checkpoint path, "none"
    (untrained), or "auto"/None: the shipped demo checkpoint when the zoo has
    one and the network asked for is the one it fits (no custom width, input
    size or classes), else untrained."""
    if weights not in (None, "auto"):
        return None if str(weights) == "none" else weights
    shipped = None if customised or model_name is None else shipped_weights(model_name)
    return Path(str(shipped)) if shipped is not None else None


def prepare_model(
    model_name: str | None,
    weights: str | Path | Checkpoint | None = None,
    *,
    width: float | None = None,
    input_size: tuple[int, int] | None = None,
    labels: tuple[str, ...] | None = None,
    backbone_weights: str = "auto",
    seed: int = 0,
    new_classes: bool = False,
) -> SSDModel:
    """Builds the network with its weights: a checkpoint's (its definition
    decides the network; ``model_name`` and the options, when given, must
    agree with it), else the zoo model ``model_name`` with ImageNet backbone
    weights when available and a random head, with an ``UntrainedWarning``.
    ``new_classes``: ``labels`` replace the checkpoint's and only the class
    head starts afresh (fine-tuning an imported or trained model to other classes)."""
    import tf_keras as keras

    from .models.ssd import build_model, load_backbone_weights, warn_untrained

    keras.utils.set_random_seed(seed)
    asked = {"width": width, "input_size": input_size, "labels": labels}
    if weights is None:
        if model_name is None:
            raise ValueError("name a zoo model (--model) or give a checkpoint (--weights)")
        model = build_model(ModelConfig(model_name, **{k: v for k, v in asked.items() if v is not None}).definition())
        warn_untrained(model.spec, load_backbone_weights(model, backbone_weights))
        return model
    checkpoint = weights if isinstance(weights, Checkpoint) else read_checkpoint(weights)
    definition, source = checkpoint.definition, checkpoint.path
    if model_name is not None and model_name != definition.name:
        raise ValueError(f"{source}: checkpoint is for {definition.name}, not {model_name}")
    reinit = new_classes and labels is not None and tuple(labels) != definition.spec.labels
    if reinit:
        definition = dataclasses.replace(definition, spec=dataclasses.replace(definition.spec, labels=tuple(labels)))
    held = {"width": definition.width, "input_size": definition.spec.input_size, "labels": definition.spec.labels}
    for field, value in asked.items():
        if value is not None and value != held[field]:
            raise ValueError(f"{source}: checkpoint has {field}={held[field]!r}, which conflicts with {value!r}")
    model = build_model(definition)
    if "qat" in checkpoint.meta:  # a quantization-aware network: its fake-quant ranges are weights too
        from .models.qat import SCHEME, quantize_for_training

        scheme = checkpoint.meta["qat"].get("scheme") if isinstance(checkpoint.meta["qat"], dict) else None
        if scheme != SCHEME:
            raise ValueError(f"{source}: checkpoint QAT scheme {scheme!r}, expected {SCHEME!r}")
        model = quantize_for_training(model)
    apply_weights(model, checkpoint.weights, source, skip_class_head=reinit)
    model.trained_on = training_data(checkpoint)
    return model
