"""TF1 OD API models: frozen graphs (``frozen_inference_graph.pb``,
``tflite_graph.pb``) and slim checkpoints (``model.ckpt`` + ``.meta``).

A frozen graph keeps every variable as a ``Const`` node of the same name
(``FeatureExtractor/MobilenetV2/Conv/weights``), so weights read alike from
both. Besides the weights, the graph itself answers what a lone ``.pb`` has no
config for (``GraphFacts``): the normalized input the feature extractor reads
(``Preprocessor/sub``, the output of ``(2 / 255) * x - 1``), the raw outputs
(``concat``: box encodings [N, A, 1, 4], ``concat_1``: class logits with
background [N, A, C + 1], as ``SSDMetaArch.predict`` concatenates them), the
anchors (``Concatenate/concat``, ``box_list_ops.concatenate`` of the anchor
generator's boxes), the resize size, the score converter
(``Postprocessor/convert_scores``), the NMS thresholds, the batch-norm
epsilons and any ``FakeQuant`` nodes (quantization-aware models).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FAKE_QUANT_OPS = ("FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxVarsPerChannel", "FakeQuantWithMinMaxArgs")
_NMS = ("NonMaxSuppressionV2", "NonMaxSuppressionV3", "NonMaxSuppressionV4", "NonMaxSuppressionV5")
# Variables that are training state, not model weights.
_TRAINING_STATE = re.compile(r"(^|/)(global_step|Momentum|RMSProp(_1)?|Adam(_1)?|ExponentialMovingAverage|"
                             r"beta1_power|beta2_power)($|/)|/(min|max)$|_quant/|_fold|biased$|local_step$")


def load_graph_def(path: str | Path):
    """The GraphDef in ``path``; a truncated or foreign file is a one-line ValueError."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    path = Path(path)
    data = path.read_bytes()
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise ValueError(f"{path}: not a TensorFlow GraphDef, or truncated ({len(data)} bytes): {exc}") from None
    if not graph_def.node:
        raise ValueError(f"{path}: the GraphDef has no nodes (an empty or truncated file, {len(data)} bytes)")
    return graph_def


def graph_constants(graph_def) -> dict[str, np.ndarray]:
    """Every float ``Const`` node by name (the frozen variables among them)."""
    from tensorflow.python.framework import tensor_util

    found = {}
    for node in graph_def.node:
        if node.op == "Const" and node.attr["dtype"].type == 1:  # DT_FLOAT
            found[node.name] = tensor_util.MakeNdarray(node.attr["value"].tensor)
    return found


def checkpoint_weights(prefix: str | Path) -> dict[str, np.ndarray]:
    """A TF1 checkpoint's model variables by name (optimizer slots, moving
    averages and quantization ranges left out)."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        names = reader.get_variable_to_dtype_map()
    except (tf.errors.OpError, ValueError) as exc:
        raise ValueError(f"{prefix}: cannot read the checkpoint ({_first_line(exc)}); "
                         "expected its .index and .data-* files (truncated?)") from None
    weights = {}
    for name, dtype in names.items():
        if dtype != tf.float32 or _TRAINING_STATE.search(name):
            continue
        try:
            weights[name] = reader.get_tensor(name)
        except tf.errors.OpError as exc:
            raise ValueError(f"{prefix}: cannot read {name} ({_first_line(exc)}): truncated checkpoint?") from None
    return weights


def is_object_checkpoint(prefix: str | Path) -> bool:
    """True for a TF2 (object-based) checkpoint, False for a TF1 (name-based) one."""
    import tensorflow as tf

    try:
        return "_CHECKPOINTABLE_OBJECT_GRAPH" in tf.train.load_checkpoint(str(prefix)).get_variable_to_dtype_map()
    except (tf.errors.OpError, ValueError) as exc:
        raise ValueError(f"{prefix}: cannot read the checkpoint ({_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@dataclass
class GraphFacts:
    """What a TF1 inference graph says about its model (None: not found)."""

    input_tensor: str | None = None  # the normalized image the network reads
    box_encodings: str | None = None
    class_predictions: str | None = None
    anchors: str | None = None  # a tensor of [A, 4] anchor corners
    input_size: tuple[int, int] | None = None
    score_converter: str | None = None  # sigmoid / softmax
    iou_threshold: float | None = None
    score_threshold: float | None = None
    box_coder_scales: tuple[float, float, float, float] | None = None
    bn_epsilons: set[float] = field(default_factory=set)
    fake_quant: int = 0  # FakeQuant nodes in the graph
    explicit_padding: int = 0  # Pad nodes in the feature extractor (use_explicit_padding)


def graph_facts(graph_def) -> GraphFacts:
    """Reads ``GraphFacts`` from node names, op types and constants."""
    nodes = {node.name: node for node in graph_def.node}
    constants = {}

    def const(name):
        if name not in constants:
            node = nodes.get(name.split(":")[0])
            if node is None or node.op != "Const":
                constants[name] = None
            else:
                from tensorflow.python.framework import tensor_util

                constants[name] = tensor_util.MakeNdarray(node.attr["value"].tensor)
        return constants[name]

    facts = GraphFacts()
    facts.fake_quant = sum(node.op in FAKE_QUANT_OPS for node in graph_def.node)
    facts.explicit_padding = sum(node.op in ("Pad", "PadV2", "MirrorPad") and node.name.startswith("FeatureExtractor/")
                                 for node in graph_def.node)
    for candidate in ("Preprocessor/sub", "normalized_input_image_tensor"):
        if candidate in nodes:
            facts.input_tensor = candidate + ":0"
            break
    else:
        facts.input_tensor = _first_conv_input(graph_def, nodes)
    for boxes, classes in (("concat", "concat_1"), ("raw_outputs/box_encodings", "raw_outputs/class_predictions")):
        if boxes in nodes and classes in nodes:
            facts.box_encodings, facts.class_predictions = boxes + ":0", classes + ":0"
            break
    for candidate in ("Concatenate/concat", "anchors"):
        if candidate in nodes:
            facts.anchors = candidate + ":0"
            break
    for node in graph_def.node:
        if node.op in ("ResizeBilinear", "ResizeNearestNeighbor", "ResizeBicubic") and node.name.startswith("Preprocessor"):
            size = const(node.input[1])
            if size is not None and size.size == 2:
                facts.input_size = (int(size[0]), int(size[1]))
        elif node.op.startswith("FusedBatchNorm"):
            facts.bn_epsilons.add(round(float(node.attr["epsilon"].f), 9))
        elif node.name.endswith("BatchNorm/batchnorm/add/y") or node.name.endswith("BatchNorm/batchnorm_1/add/y"):
            value = const(node.name)
            if value is not None:
                facts.bn_epsilons.add(round(float(value), 9))
        elif node.op in _NMS and facts.iou_threshold is None:
            iou = const(node.input[3])
            facts.iou_threshold = float(iou) if iou is not None else None
            if len(node.input) > 4:
                score = const(node.input[4])
                facts.score_threshold = float(score) if score is not None else None
    convert = nodes.get("Postprocessor/convert_scores")
    if convert is not None:
        facts.score_converter = {"Sigmoid": "sigmoid", "Softmax": "softmax", "Identity": "identity"}.get(convert.op, convert.op)
    scales = [const(f"Postprocessor/Decode/{name}/y") for name in ("div", "div_1", "div_2", "div_3")]
    if all(s is not None and s.size == 1 for s in scales):
        facts.box_coder_scales = tuple(float(s) for s in scales)
    return facts


def _first_conv_input(graph_def, nodes) -> str | None:
    """The tensor the first feature-extractor conv reads, through Identity nodes."""
    for node in graph_def.node:
        if node.op in ("Conv2D", "DepthwiseConv2dNative") and node.name.startswith("FeatureExtractor/"):
            name = node.input[0]
            while nodes.get(name.split(":")[0]) is not None and nodes[name.split(":")[0]].op == "Identity":
                name = nodes[name.split(":")[0]].input[0]
            return name if ":" in name else name + ":0"
    return None


def scope_summary(names) -> dict[str, object]:
    """Architecture evidence in variable names: backbone scope, FPN, heads,
    depthwise extra layers, extra-layer depths, MobileNetV3 block count."""
    names = list(names)
    joined = "\n".join(names)
    backbone = None
    for scope, kind in (("MobilenetV1", "mobilenet_v1"), ("MobilenetV2", "mobilenet_v2"), ("MobilenetV3", "mobilenet_v3")):
        if f"FeatureExtractor/{scope}/" in joined:
            backbone = kind
    if backbone == "mobilenet_v3":
        blocks = {int(m.group(1) or 0) for m in re.finditer(r"MobilenetV3/expanded_conv(?:_(\d+))?/", joined)}
        backbone = "mobilenet_v3_large" if max(blocks, default=0) >= 14 else "mobilenet_v3_small"
    other = re.search(r"FeatureExtractor/(\w+?)/", joined)
    extra = sorted({(int(m.group(1)), int(m.group(2))) for m in re.finditer(r"_2_Conv2d_(\d+)_3x3_s2_(\d+)", joined)})
    return {
        "backbone": backbone,
        "other_backbone": other.group(1) if other and backbone is None else None,
        "fpn": "/fpn/" in joined,
        "weight_shared": "WeightSharedConvolutionalBoxPredictor/" in joined,
        "separable_head": "BoxPredictor_0/BoxEncodingPredictor_depthwise/" in joined,
        "separable_extra_layers": bool(re.search(r"_2_Conv2d_\d+_3x3_s2_\d+_depthwise/", joined)),
        "extra_depths": tuple(depth for _, depth in extra),
        "extra_indices": tuple(index for index, _ in extra),
        "num_box_predictors": len({m.group(1) for m in re.finditer(r"(?:^|/)BoxPredictor_(\d+)/", joined, re.M)}),
    }
