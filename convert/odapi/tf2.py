"""TF2 OD API models: ``checkpoint/ckpt-0`` and ``saved_model/`` (Keras feature
extractors, ``*_keras`` in ``pipeline.config``).

A TF2 checkpoint is object-based: keys are attribute paths, but its object
graph also records each variable's name (``full_name``), which is the Keras
layer name the OD API gives every layer (MobileNetV2's application names
``block_3_expand``, ``Conv_1_bn``; ``FeatureMaps``' ``layer_19_2_Conv2d_2_3x3_s2_512_conv``;
``ConvolutionalBoxHead_0/BoxEncodingPredictor``; the FPN's ``projection_3``,
``smoothing_2_depthwise_conv``; ``PredictionTower/conv2d_0/BatchNorm/feature_1``),
under whatever name scopes enclosed it. ``TF2_RULES`` rewrites those, matched
at the end of the name, into the TF1 scopes the ``*_odapi`` networks use
(research/object_detection models/ssd_mobilenet_v2_keras_feature_extractor.py,
ssd_mobilenet_v2_fpn_keras_feature_extractor.py, models/keras_models/mobilenet_v2.py,
feature_map_generators.py, predictors/convolutional_keras_box_predictor.py,
predictors/heads/keras_*_head.py).

The SavedModel's serving function runs with its variables frozen and its
calls inlined, fed at the first convolution's input (the normalized image).
"""
from __future__ import annotations

import logging

import re
from pathlib import Path

import numpy as np

from .config import OdapiConfig

_S = "FeatureExtractor/MobilenetV2"
_W = "WeightSharedConvolutionalBoxPredictor"
_BN = r"(gamma|beta|moving_mean|moving_variance)"
# (pattern matched at the end of a TF2 variable name, TF1-style name); first match wins.
TF2_RULES = [
    (r"(?:^|/)Conv1/kernel", f"{_S}/Conv/weights"),
    (rf"(?:^|/)bn_Conv1/{_BN}", rf"{_S}/Conv/BatchNorm/\1"),
    (r"(?:^|/)expanded_conv_depthwise/depthwise_kernel", f"{_S}/expanded_conv/depthwise/depthwise_weights"),
    (rf"(?:^|/)expanded_conv_depthwise_BN/{_BN}", rf"{_S}/expanded_conv/depthwise/BatchNorm/\1"),
    (r"(?:^|/)expanded_conv_project/kernel", f"{_S}/expanded_conv/project/weights"),
    (rf"(?:^|/)expanded_conv_project_BN/{_BN}", rf"{_S}/expanded_conv/project/BatchNorm/\1"),
    (r"(?:^|/)block_(\d+)_(expand|project)/kernel", rf"{_S}/expanded_conv_\1/\2/weights"),
    (r"(?:^|/)block_(\d+)_depthwise/depthwise_kernel", rf"{_S}/expanded_conv_\1/depthwise/depthwise_weights"),
    (rf"(?:^|/)block_(\d+)_(expand|depthwise|project)_BN/{_BN}", rf"{_S}/expanded_conv_\1/\2/BatchNorm/\3"),
    (r"(?:^|/)Conv_1/kernel", f"{_S}/Conv_1/weights"),
    (rf"(?:^|/)Conv_1_bn/{_BN}", rf"{_S}/Conv_1/BatchNorm/\1"),
    # KerasMultiResolutionFeatureMaps
    (r"(?:^|/)(layer_\d+_\d_Conv2d_\d+_\w+?)_depthwise_conv/depthwise_kernel", rf"{_S}/\1_depthwise/depthwise_weights"),
    (rf"(?:^|/)(layer_\d+_\d_Conv2d_\d+_\w+?)_depthwise_batchnorm/{_BN}", rf"{_S}/\1_depthwise/BatchNorm/\2"),
    (r"(?:^|/)(layer_\d+_\d_Conv2d_\d+_\w+?)_conv/kernel", rf"{_S}/\1/weights"),
    (rf"(?:^|/)(layer_\d+_\d_Conv2d_\d+_\w+?)_batchnorm/{_BN}", rf"{_S}/\1/BatchNorm/\2"),
    # ConvolutionalBoxPredictor heads
    (r"Convolutional(?:Box|Class)Head_(\d+)/(BoxEncodingPredictor|ClassPredictor)_depthwise/depthwise_kernel",
     r"BoxPredictor_\1/\2_depthwise/depthwise_weights"),
    (rf"Convolutional(?:Box|Class)Head_(\d+)/(BoxEncodingPredictor|ClassPredictor)_depthwise_batchnorm/{_BN}",
     r"BoxPredictor_\1/\2_depthwise/BatchNorm/\3"),
    (r"Convolutional(?:Box|Class)Head_(\d+)/(BoxEncodingPredictor|ClassPredictor)/kernel", r"BoxPredictor_\1/\2/weights"),
    (r"Convolutional(?:Box|Class)Head_(\d+)/(BoxEncodingPredictor|ClassPredictor)/bias", r"BoxPredictor_\1/\2/biases"),
    # KerasFpnTopDownFeatureMaps and the coarse levels
    (r"(?:^|/)projection_(\d+)/kernel", rf"{_S}/fpn/projection_\1/weights"),
    (r"(?:^|/)projection_(\d+)/bias", rf"{_S}/fpn/projection_\1/biases"),
    (r"(?:^|/)((?:smoothing|bottom_up_Conv2d)_\d+)_depthwise_conv/(depthwise|pointwise)_kernel",
     rf"{_S}/fpn/\1/\2_weights"),
    (rf"(?:^|/)((?:smoothing|bottom_up_Conv2d)_\d+)_batchnorm/{_BN}", rf"{_S}/fpn/\1/BatchNorm/\2"),
    # WeightSharedConvolutionalBoxPredictor
    (r"PredictionTower/conv2d_(\d+)/(depthwise|pointwise)_kernel", rf"{_W}/PredictionTower/conv2d_\1/\2_weights"),
    (r"PredictionTower/conv2d_(\d+)/kernel", rf"{_W}/PredictionTower/conv2d_\1/weights"),
    (rf"PredictionTower/conv2d_(\d+)/BatchNorm/feature_(\d+)/{_BN}", rf"{_W}/PredictionTower/conv2d_\1/BatchNorm/feature_\2/\3"),
    (r"(?:^|/)(BoxPredictor|ClassPredictor)/(depthwise|pointwise)_kernel", rf"{_W}/\1/\2_weights"),
    (r"(?:^|/)(BoxPredictor|ClassPredictor)/kernel", rf"{_W}/\1/weights"),
    (r"(?:^|/)(BoxPredictor|ClassPredictor)/bias", rf"{_W}/\1/biases"),
]
_COMPILED = [(re.compile(pattern + "$"), replacement) for pattern, replacement in TF2_RULES]


def tf1_style(name: str) -> str | None:
    """The TF1-style name of a TF2 OD API variable name, or None (not a model weight)."""
    name = name.split(":")[0]
    for pattern, replacement in _COMPILED:
        match = pattern.search(name)
        if match:
            return match.expand(replacement)
    return None


def object_checkpoint_weights(prefix: str | Path) -> dict[str, np.ndarray]:
    """{variable name: value} of a TF2 object-based checkpoint (its object graph's ``full_name``s)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    except (tf.errors.OpError, ValueError) as exc:
        raise ValueError(f"{prefix}: cannot read the TF2 checkpoint ({str(exc).strip().splitlines()[0]}); "
                         "expected its .index and .data-* files (truncated?)") from None
    weights = {}
    for node in graph.nodes:
        for attribute in node.attributes:
            if attribute.name == "VARIABLE_VALUE" and attribute.full_name:
                try:
                    value = reader.get_tensor(attribute.checkpoint_key)
                except tf.errors.OpError as exc:
                    raise ValueError(f"{prefix}: cannot read {attribute.full_name} ({exc.message}): truncated?") from None
                if isinstance(value, np.ndarray) and value.dtype == np.float32:
                    weights[attribute.full_name] = value
    return weights


def tf1_style_weights(weights: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    mapped = {}
    for name, value in weights.items():
        target = tf1_style(name)
        if target is None:
            continue
        if target in mapped:
            raise ValueError(f"{source}: two TF2 variables map to {target} (one is {name}): unexpected layout")
        mapped[target] = value
    return mapped


def saved_model_runner(source):
    """A Runner for ``source.saved_model``'s serving function, or None."""
    from .parity import Runner

    if source.saved_model is None:
        return None
    import tensorflow as tf

    logging.getLogger(__name__).info(f"loading {source.saved_model} and freezing its serving function")
    try:
        graph_def = _frozen_serving_graph(tf, source.saved_model)
    except (KeyError, OSError, ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise ValueError(f"{source.saved_model}: cannot load the SavedModel's serving_default ({exc})") from None
    graph_def = _inline(graph_def)
    feed, boxes, classes = _raw_tensors(graph_def)
    if feed is None or boxes is None:
        return None
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    session = tf.compat.v1.Session(graph=graph)
    fetches = [graph.get_tensor_by_name(boxes), graph.get_tensor_by_name(classes)]

    def call(x):
        return session.run(fetches, {feed: x})

    return Runner("the TF2 SavedModel", source.saved_model.name, 0, call, session.close)


def _frozen_serving_graph(tf, saved_model: Path):
    """The ``serving_default`` signature's graph with its variables as constants.

    Read with the graph loader (``tf.compat.v1.saved_model.loader``: the
    MetaGraphDef and the variables), not ``tf.saved_model.load``, which also
    rebuilds the Python object graph, a concrete function for every Keras
    layer's saved call (some 500 in an SSD), that parity never calls: the same
    graph and bit-identical outputs for about 2.6 s less CPU time on a
    320x320 SSD-MobileNetV2 (README, "Importing TF Object Detection API models")."""
    from tensorflow.python.util import deprecation

    graph = tf.Graph()
    with deprecation.silence(), tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], str(saved_model))
        signature = meta.signature_def["serving_default"]
        outputs = sorted({tensor.name.split(":")[0] for tensor in signature.outputs.values()})
        return tf.compat.v1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), outputs)


def _inline(graph_def):
    """Inlines function calls (grappler's function optimizer) so inner tensors can be fed."""
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, rewriter_config_pb2
    from tensorflow.python.grappler import tf_optimizer

    if not any(node.op in ("PartitionedCall", "StatefulPartitionedCall") for node in graph_def.node):
        return graph_def
    meta = meta_graph_pb2.MetaGraphDef()
    meta.graph_def.CopyFrom(graph_def)
    fetch = meta.collection_def["train_op"]
    for node in graph_def.node:
        if not any(node.name in i.split(":")[0] for other in graph_def.node for i in other.input):
            fetch.node_list.value.append(node.name)
    config = config_pb2.ConfigProto()
    rewriter = config.graph_options.rewrite_options
    rewriter.optimizers[:] = ["function"]
    rewriter.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    del tf
    return tf_optimizer.OptimizeGraph(config, meta)


def _raw_tensors(graph_def):
    """(normalized input, box encodings, class logits) tensor names by structure:
    the first convolution's input; the ConcatV2 outputs that feed box decoding
    and score conversion, recognised by shape after a trial run."""
    import tensorflow as tf

    nodes = {node.name: node for node in graph_def.node}
    feed = None
    for node in graph_def.node:
        if node.op in ("Conv2D", "DepthwiseConv2dNative"):
            name = node.input[0].split(":")[0]
            while nodes.get(name) is not None and nodes[name].op == "Identity":
                name = nodes[name].input[0].split(":")[0]
            feed = name + ":0"
            break
    if feed is None:
        return None, None, None
    concats = [node.name + ":0" for node in graph_def.node if node.op == "ConcatV2"]
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    shape = graph.get_tensor_by_name(feed).shape
    height, width = (int(shape[1]) if shape[1] else 64), (int(shape[2]) if shape[2] else 64)
    with tf.compat.v1.Session(graph=graph) as session:
        values = {}
        for name in concats:
            try:
                values[name] = session.run(name, {feed: np.zeros((1, height, width, 3), np.float32)})
            except (tf.errors.OpError, ValueError):
                continue
    boxes = next((n for n, v in values.items() if v.ndim in (3, 4) and v.shape[0] == 1 and v.shape[-1] == 4
                  and (v.ndim == 3 or v.shape[2] == 1) and v.shape[1] > 16), None)
    if boxes is None:
        return feed, None, None
    anchors = values[boxes].shape[1]
    classes = next((n for n, v in values.items() if n != boxes and v.ndim == 3 and v.shape[:2] == (1, anchors)
                    and v.shape[-1] >= 2), None)
    return feed, boxes, classes


def import_tf2(source, origin: str, config: OdapiConfig | None, labels_file, photos_dir, tolerance, started, notes):
    import tf_keras as keras

    from ..checkpoint import apply_weights
    from ..models.ssd import build_model
    from . import architectures as arch_mod
    from .importer import Imported, _parity, _provenance, building_message, finish, log, resolve_labels

    if config is None:
        raise ValueError(f"{source.origin}: a TF2 model needs its pipeline.config (none found beside it)")
    log.info(f"reading {source.tf2_checkpoint or source.saved_model} (TF2 object checkpoint)")
    if source.tf2_checkpoint is not None:
        where = str(source.tf2_checkpoint)
        raw = object_checkpoint_weights(source.tf2_checkpoint)
    else:
        where = str(source.saved_model / "variables" / "variables")
        raw = object_checkpoint_weights(where)
    notes.append(f"weights: {Path(where).name} (TF2 object checkpoint, by variable name)")
    weights = tf1_style_weights(raw, where)
    network = arch_mod.fit_to_weights(arch_mod.network_from_config(config, 2), weights)
    notes.append(f"architecture: {config.source} (feature_extractor {config.feature_extractor})")
    if config.input_size is None:
        raise ValueError(f"{config.source}: no image_resizer.fixed_shape_resizer: the input size is unknown")
    labels = resolve_labels(config, source, config.num_classes, labels_file, notes)
    log.info(building_message(network, config.input_size, labels))
    keras.backend.clear_session()
    try:
        model = build_model(network.definition(config.input_size, labels, config.anchors, config.box_coder,
                                               config.postprocessing))
    except ValueError as exc:
        raise ValueError(f"{config.source}: {exc}") from None
    apply_weights(model, arch_mod.map_tf1_weights(model, weights, where), where)
    runner = saved_model_runner(source)
    why = "a TF2 checkpoint without its saved_model/ has nothing to run" if source.saved_model is None else \
        "the SavedModel's raw outputs were not found"
    parity = _parity(runner, model, photos_dir, tolerance, why)
    return finish(Imported(model, parity, _provenance(source, origin, network, started), notes))
