"""ssdkit checkpoints: a model's weights with the config that rebuilds it.

One ``.npz`` file: ``__meta__`` holds JSON (format version, the
``ModelConfig``, the spec) and every Keras weight is stored under its
variable name, so loading matches by name and reports exactly what is
missing or mis-shaped. Weights may be stored as float16 to ship small files.
``prepare_model`` builds a zoo network with its weights (a checkpoint, or
ImageNet backbone weights and a random head), for export and training alike.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ssdkit.fileio import atomic_path

from .models.ssd import SSDModel, build_model, load_backbone_weights, warn_untrained
from .zoo import ModelConfig, shipped_weights

FORMAT = "ssdkit-checkpoint"
VERSION = 1


def save_checkpoint(model: SSDModel, path: str | Path, dtype: str = "float32", extra: dict | None = None) -> Path:
    path = Path(path)
    meta = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "spec": model.spec.to_dict(),
            **(extra or {})}
    arrays = {f"w/{w.name}": w.numpy().astype(dtype) for w in model.keras_model.weights}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, __meta__=np.array(json.dumps(meta)), **arrays)
    return path


def read_checkpoint(path: str | Path) -> tuple[ModelConfig, dict, dict[str, np.ndarray]]:
    """Returns (config, meta, weights by variable name)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
            weights = {k[2:]: data[k] for k in data.files if k.startswith("w/")}
    except (ValueError, KeyError, OSError) as exc:
        raise ValueError(f"{path}: not an ssdkit checkpoint ({exc})") from exc
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint format {meta.get('format')!r} v{meta.get('version')}, expected {FORMAT!r} v{VERSION}")
    return ModelConfig.from_dict(meta["config"]), meta, weights


def apply_weights(model: SSDModel, weights: dict[str, np.ndarray], source: str | Path) -> None:
    """Assigns stored weights to the model by variable name; every variable
    must be present with its exact shape."""
    variables = {w.name: w for w in model.keras_model.weights}
    missing = sorted(set(variables) - set(weights))
    unexpected = sorted(set(weights) - set(variables))
    wrong = sorted(n for n in set(variables) & set(weights) if tuple(variables[n].shape) != weights[n].shape)
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''} ({len(names)})"
            for what, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if names
        )
        raise ValueError(f"{source}: checkpoint does not fit {model.spec.name} at width {model.config.width}: {details}")
    for name, variable in variables.items():
        variable.assign(weights[name].astype(variable.dtype.as_numpy_dtype))


def resolve_weights(model_name: str, weights: str | Path | None, customised: bool) -> str | Path | None:
    """``weights`` as the export commands take it: a checkpoint path, "none"
    (untrained), or "auto"/None: the shipped demo checkpoint when the zoo has
    one and the network asked for is the one it fits (no custom width, input
    size or classes), else untrained."""
    if weights not in (None, "auto"):
        return None if str(weights) == "none" else weights
    shipped = None if customised else shipped_weights(model_name)
    return Path(str(shipped)) if shipped is not None else None


def prepare_model(
    model_name: str,
    weights: str | Path | None = None,
    *,
    width: float | None = None,
    input_size: tuple[int, int] | None = None,
    labels: tuple[str, ...] | None = None,
    backbone_weights: str = "auto",
    seed: int = 0,
) -> SSDModel:
    """Builds the network with its weights: an ssdkit checkpoint if given
    (options given explicitly must agree with it), else ImageNet backbone
    weights when available and a random head, with an ``UntrainedWarning``."""
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    asked = {"width": width, "input_size": input_size, "labels": labels}
    if weights is None:
        config = ModelConfig(model_name, **{k: v for k, v in asked.items() if v is not None})
        model = build_model(config)
        warn_untrained(model.spec, load_backbone_weights(model, backbone_weights))
        return model
    config, _, arrays = read_checkpoint(weights)
    if config.model != model_name:
        raise ValueError(f"{weights}: checkpoint is for {config.model}, not {model_name}")
    for field, value in asked.items():
        if value is not None and value != getattr(config, field):
            raise ValueError(f"{weights}: checkpoint has {field}={getattr(config, field)!r}, which conflicts with {value!r}")
    model = build_model(config)
    apply_weights(model, arrays, weights)
    return model
