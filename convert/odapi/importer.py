"""``ssdkit import``: an OD API model in, an ssdkit checkpoint out, with parity.

Steps: find the files (``sources.py``; a zoo name is downloaded by
``zoo.py``), read ``pipeline.config`` (``config.py``) and the weights (TF1:
``tf1.py``; TF2: ``tf2.py``), decide the network (``architectures.py``),
build it and load the weights, compare it with the source on photographs
(``parity.py``), then write the output folder in one step: the checkpoint,
``labels.txt``, ``parity.md``/``parity.json`` and ``source.json``. A failed
check writes nothing unless forced.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssdkit.fileio import atomic_path

from ..checkpoint import save_checkpoint
from ..zoo import coco_labels
from . import architectures as arch_mod
from .config import OdapiConfig, UnsupportedModel, labels_from_map, read_label_map, read_pipeline_config
from .parity import DEFAULT_TOLERANCE, ParityReport, compare, load_photos, tf1_runner
from .sources import Source, open_source

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.npz"
MARKER = "ssdkit-import"


class ParityFailed(RuntimeError):
    """The import differs from its source by more than the tolerance."""

    def __init__(self, imported: "Imported"):
        self.imported = imported
        self.report = report = imported.parity
        super().__init__(f"the imported model differs from the source by {report.relative:.3g} (relative), more than "
                         f"the tolerance {report.tolerance:g}; nothing written (--force keeps it with the table)")


class LabelsWarning(UserWarning):
    """The model's class names could not be found and are placeholders."""


class ParityWarning(UserWarning):
    """Parity could not be checked."""


@dataclass
class Imported:
    """What ``import_model`` made (before writing)."""

    model: object
    parity: ParityReport
    source: dict
    notes: list[str] = field(default_factory=list)


def resolve_labels(config: OdapiConfig | None, source: Source, num_classes: int,
                   labels_file: tuple[str, ...] | None, notes: list[str]) -> tuple[str, ...]:
    """Class names, in the order issue 15 sets: the ``label_map.pbtxt`` that
    ``pipeline.config`` names (found beside it or in the source); else
    ``--labels FILE``; else any other ``*label_map*.pbtxt`` in the source;
    COCO's 90 for a 90-class model; else class_1..class_N with a warning.

    The label map the model was trained with is the model's own record of
    its classes, so it wins over ``--labels``; a ``--labels`` that disagrees
    with it is reported (a warning and a note), not silently dropped.
    """
    if labels_file and len(labels_file) != num_classes:
        raise ValueError(f"--labels has {len(labels_file)} labels, the model {num_classes} classes")
    named = []
    if config is not None and config.label_map_path and source.folder is not None:
        name = Path(config.label_map_path).name
        named += [p for p in (source.folder / name, source.folder.parent / name) if p.is_file()]
        named += sorted(source.folder.rglob(name))
    if named:
        path = named[0]
        labels = labels_from_map(read_label_map(path), num_classes, str(path))
        notes.append(f"labels: {path.name} (named in pipeline.config)")
        if labels_file and tuple(labels_file) != labels:
            warnings.warn(f"--labels ignored: {path} (the label map pipeline.config names) gives the model's "
                          f"classes ({', '.join(labels[:3])}{', ...' if len(labels) > 3 else ''})",
                          LabelsWarning, stacklevel=2)
            notes.append("labels: --labels ignored (it differs from the label map pipeline.config names)")
        return labels
    if labels_file:
        notes.append("labels: --labels")
        return tuple(labels_file)
    if source.label_map is not None:
        labels = labels_from_map(read_label_map(source.label_map), num_classes, str(source.label_map))
        notes.append(f"labels: {source.label_map.name}")
        return labels
    if num_classes == 90:
        notes.append("labels: COCO's 90 (a 90-class model without a label map)")
        return coco_labels()
    warnings.warn(f"no label map for the {num_classes} classes (pass --labels FILE): named class_1..class_{num_classes}",
                  LabelsWarning, stacklevel=2)
    notes.append("labels: placeholders class_1..class_N (no label map found)")
    return tuple(f"class_{i}" for i in range(1, num_classes + 1))


def _num_classes(weights: dict, per_location0: int, source: str) -> int:
    for key in ("BoxPredictor_0/ClassPredictor/biases", "WeightSharedConvolutionalBoxPredictor/ClassPredictor/biases"):
        if key in weights:
            slots, rest = divmod(weights[key].shape[-1], per_location0)
            if rest or slots < 2:
                raise ValueError(f"{source}: {key} has {weights[key].shape[-1]} values, not a multiple of the "
                                 f"{per_location0} anchors per location")
            return slots - 1
    raise UnsupportedModel(f"{source}: no ClassPredictor biases: not an SSD")


def _evaluate(graph_def, facts, tensor: str, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run(tensor, {facts.input_tensor: x})


def import_model(spec: str, labels_file: tuple[str, ...] | None = None, photos_dir: str | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, progress: bool = True) -> Imported:
    """Reads and checks the source; raises ParityFailed (with the report) on a mismatch."""
    from .zoo import fetch_if_zoo_name

    started = time.monotonic()
    location = fetch_if_zoo_name(spec, progress=progress)
    with open_source(location) as source:
        return _import(source, spec, labels_file, photos_dir, tolerance, started)


def _import(source: Source, origin: str, labels_file, photos_dir, tolerance, started) -> Imported:
    import tf_keras as keras

    from ..checkpoint import apply_weights
    from ..models.ssd import build_model
    from . import tf1

    notes: list[str] = []
    config = read_pipeline_config(source.pipeline_config) if source.pipeline_config else None
    tf_version = source.tf_version
    graph_def = facts = None
    if tf_version == 2:
        from . import tf2

        return tf2.import_tf2(source, origin, config, labels_file, photos_dir, tolerance, started, notes)
    log.info(f"reading {source.frozen_graph or source.tf1_checkpoint} (TF1)")
    if source.frozen_graph is not None:
        graph_def = tf1.load_graph_def(source.frozen_graph)
        weights = tf1.graph_constants(graph_def)
        facts = tf1.graph_facts(graph_def)
        notes.append(f"weights: {source.frozen_graph.name}")
    else:
        weights = tf1.checkpoint_weights(source.tf1_checkpoint)
        notes.append(f"weights: {source.tf1_checkpoint.name}")
        if source.meta_graph is not None:
            from tensorflow.core.protobuf import meta_graph_pb2

            meta = meta_graph_pb2.MetaGraphDef()
            try:
                meta.ParseFromString(source.meta_graph.read_bytes())
            except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError
                raise ValueError(f"{source.meta_graph}: not a MetaGraphDef, or truncated ({exc})") from None
            facts = tf1.graph_facts(meta.graph_def)
    where = str(source.frozen_graph or source.tf1_checkpoint)
    if facts is not None and facts.explicit_padding:
        raise UnsupportedModel(f"{where}: the feature extractor pads explicitly ({facts.explicit_padding} Pad nodes: "
                               "use_explicit_padding true); ssdkit's networks pad SAME, which differs at stride 2")
    if facts is not None and facts.bn_epsilons - {0.001}:
        raise UnsupportedModel(f"{where}: batch norm epsilon {sorted(facts.bn_epsilons - {0.001})}; ssdkit's "
                               "networks use 0.001")
    if config is not None:
        network = arch_mod.fit_to_weights(arch_mod.network_from_config(config, 1), weights)
        found = arch_mod.network_from_names(weights, where) if weights else None
        if found is not None and found.zoo_name != network.zoo_name:
            raise ValueError(f"{where}: the weights are a {found.zoo_name} network, but {config.source} describes "
                             f"{network.zoo_name}")
        notes.append(f"architecture: {config.source} (feature_extractor {config.feature_extractor})")
    else:
        network = arch_mod.network_from_names(weights, where)
        notes.append("architecture: recovered from the graph's variable names and shapes (no pipeline.config)")
    input_size = config.input_size if config is not None and config.input_size else (facts.input_size if facts else None)
    if input_size is None:
        raise ValueError(f"{where}: the input size is not in the graph; pass the model's pipeline.config beside it")
    entry_anchors = config.anchors if config is not None else None
    per_location = _per_location(weights, network)
    num_classes = config.num_classes if config is not None else _num_classes(weights, per_location[0], where)
    anchors = entry_anchors
    if anchors is None:
        if facts is None or facts.anchors is None or facts.input_tensor is None:
            raise ValueError(f"{where}: no anchor tensor in the graph; pass the model's pipeline.config beside it")
        corners = _evaluate(graph_def, facts, facts.anchors, np.zeros((1, *input_size, 3), np.float32))
        anchors = arch_mod.fit_anchors(np.asarray(corners).reshape(-1, 4), network, input_size, per_location, where)
        notes.append("anchors: fitted to the graph's anchor tensor")
    box_coder = config.box_coder if config is not None else arch_mod.box_coder_from_graph(facts)
    postprocessing = config.postprocessing if config is not None else arch_mod.postprocessing_from_graph(facts)
    labels = resolve_labels(config, source, num_classes, labels_file, notes)
    log.info(building_message(network, input_size, labels))
    keras.backend.clear_session()
    try:
        model = build_model(network.definition(input_size, labels, anchors, box_coder, postprocessing))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    apply_weights(model, arch_mod.map_tf1_weights(model, weights, where), where)
    runner = None
    if graph_def is not None and facts.input_tensor and facts.box_encodings:
        runner = tf1_runner(graph_def, facts, "the frozen graph", source.frozen_graph.name)
    elif source.meta_graph is not None and facts is not None and facts.input_tensor and facts.box_encodings:
        runner = tf1_runner(None, facts, "the checkpoint's .meta graph", source.meta_graph.name,
                            checkpoint=source.tf1_checkpoint, meta=source.meta_graph)
    parity = _parity(runner, model, photos_dir, tolerance,
                     "a TF1 checkpoint without its .meta graph has nothing to run" if runner is None else "")
    return finish(Imported(model, parity, _provenance(source, origin, network, started), notes))


def source_runner(spec: str):
    """(Runner or None, why not) for SOURCE as ``ssdkit import`` finds it."""
    from . import tf1

    location = __import__("ssdkit.convert.odapi.zoo", fromlist=["fetch_if_zoo_name"]).fetch_if_zoo_name(spec, False)
    source = open_source(location)
    if source.tf_version == 2:
        from . import tf2

        return tf2.saved_model_runner(source), source
    log.info(f"reading {source.frozen_graph or source.tf1_checkpoint} (TF1)")
    if source.frozen_graph is not None:
        graph_def = tf1.load_graph_def(source.frozen_graph)
        facts = tf1.graph_facts(graph_def)
        if facts.input_tensor and facts.box_encodings:
            return tf1_runner(graph_def, facts, "the frozen graph", source.frozen_graph.name), source
    if source.meta_graph is not None:
        from tensorflow.core.protobuf import meta_graph_pb2

        meta = meta_graph_pb2.MetaGraphDef()
        meta.ParseFromString(source.meta_graph.read_bytes())
        facts = tf1.graph_facts(meta.graph_def)
        if facts.input_tensor and facts.box_encodings:
            return tf1_runner(None, facts, "the checkpoint's .meta graph", source.meta_graph.name,
                              checkpoint=source.tf1_checkpoint, meta=source.meta_graph), source
    return None, source


def finish(imported: Imported) -> Imported:
    """Raises ParityFailed when the comparison failed, else returns ``imported``."""
    if not imported.parity.passed:
        raise ParityFailed(imported)
    return imported


def _per_location(weights: dict, network: arch_mod.Network) -> list[int]:
    from ..zoo import ZOO

    count = []
    for i in range(16):
        key = f"BoxPredictor_{i}/BoxEncodingPredictor/biases"
        if key not in weights:
            break
        count.append(weights[key].shape[-1] // 4)
    if not count:
        key = "WeightSharedConvolutionalBoxPredictor/BoxPredictor/biases"
        arch = dataclasses.replace(ZOO[network.zoo_name].architecture, **dict(network.architecture))
        if key in weights:
            count = [weights[key].shape[-1] // 4] * (arch.fpn_max_level - arch.fpn_min_level + 1)
    return count or ZOO[network.zoo_name].anchors.per_location()


def _parity(runner, model, photos_dir, tolerance, why_not: str) -> ParityReport:
    if runner is None:
        warnings.warn(f"parity could not be checked: {why_not}", ParityWarning, stacklevel=3)
        return ParityReport(False, note=why_not, tolerance=tolerance)
    try:
        photos = load_photos(photos_dir)
        log.info(f"parity: running {runner.kind} and the import on {len(photos)} photos")
        return compare(runner, model, photos, tolerance)
    finally:
        runner.close()


def building_message(network, input_size, labels) -> str:
    height, width = input_size
    return (f"building {network.zoo_name} ({height}x{width}, width {network.width:g}, {len(labels)} classes) "
            "and loading its weights")


def _provenance(source: Source, origin: str, network, started: float) -> dict:
    files = {}
    for label in ("frozen_graph", "pipeline_config", "meta_graph", "label_map"):
        path = getattr(source, label)
        if path is not None:
            files[label] = {"name": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {"format": MARKER, "origin": origin, "source": source.describe(), "files": files,
            "tf_version": source.tf_version, "zoo_entry": network.zoo_name, "width": network.width,
            "architecture": dict(network.architecture), "seconds": round(time.monotonic() - started, 1)}


def write_import(imported: Imported, out_dir: str | Path, forced: bool = False) -> Path:
    """Writes the import folder in one step (a temporary folder renamed into
    place). An existing ``out_dir`` is replaced only if an earlier import
    wrote it; anything else there is a user's folder and is refused."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir}: exists and is not a folder; choose another --out")
        previous = out_dir / "source.json"
        is_import = previous.is_file() and json.loads(previous.read_text() or "{}").get("format") == MARKER
        if any(out_dir.iterdir()) and not is_import:
            raise FileExistsError(f"{out_dir}: exists and is not an earlier import; choose another --out")
    model = imported.model
    source = {**imported.source, "notes": imported.notes, "forced": forced}
    with atomic_path(out_dir, directory=True) as tmp:
        save_checkpoint(model, tmp / CHECKPOINT_FILE, extra={"source": source})
        (tmp / "labels.txt").write_text("".join(f"{label}\n" for label in model.spec.labels))
        (tmp / "parity.md").write_text(imported.parity.table() + "\n")
        (tmp / "parity.json").write_text(imported.parity.to_json() + "\n")
        (tmp / "source.json").write_text(json.dumps(source, indent=1) + "\n")
    return out_dir

