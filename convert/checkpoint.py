"""ssdkit checkpoints: a model's weights with the config that rebuilds it.

One ``.npz`` file: ``__meta__`` holds JSON (format version, the
``ModelConfig``, the spec) and every Keras weight is stored under its
variable name, so loading matches by name and reports exactly what is
missing or mis-shaped. Weights may be stored as float16 to ship small files.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ssdkit.fileio import atomic_path

from .models.ssd import SSDModel
from .zoo import ModelConfig

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
