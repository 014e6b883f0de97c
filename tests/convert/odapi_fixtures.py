"""TF OD API-style sources for the import tests, built here with the OD API's
exact variable scopes and node names (the OD API itself is not installable).

The TF1 sources are written the way the OD API's slim code builds them, with
raw TensorFlow ops in a ``tf.compat.v1`` graph (independently of ssdkit's
Keras networks): ``image_tensor`` -> ``Preprocessor/sub`` ((2/255) x - 1) ->
``FeatureExtractor/MobilenetV*/...`` -> ``BoxPredictor_N/...`` or
``WeightSharedConvolutionalBoxPredictor/...`` -> ``concat`` (box encodings
[N, A, 1, 4]) / ``concat_1`` (logits [N, A, C + 1]) -> ``Postprocessor`` ->
``detection_*``; anchors in ``Concatenate/concat``. Weights are random and
every batch norm has non-identity statistics. The folder holds what a zoo
archive holds: ``frozen_inference_graph.pb``, ``model.ckpt.*`` (with
``.meta``), ``pipeline.config`` and a label map.

Architectures: ssd_mobilenet_v1, ssd_mobilenet_v2, ssdlite_mobilenet_v2,
ssdlite_mobilenet_v3_small/large (slim's detection conv defs, hard-swish,
squeeze-excite), ssd_mobilenet_v1_fpn (slim FPN, RetinaNet-style weight-shared
predictor with separate box and class towers), and any of them
quantization-aware (``quantized``: batch norms folded into the weights and
``FakeQuantWithMinMaxVars`` on weights and activations, as
``tf.contrib.quantize`` rewrites the graph, with activation ranges measured on
the photos as the moving averages of training would set them).

Names and semantics follow research/object_detection (models/ssd_mobilenet_v1/
v2/v3_feature_extractor.py, ssd_mobilenet_v1_fpn_feature_extractor.py,
feature_map_generators.py, predictors/convolutional_box_predictor.py,
predictors/heads/box_head.py and class_head.py, exporter.py) and research/slim
(nets/mobilenet_v1.py, nets/mobilenet/mobilenet_v2.py, mobilenet_v3.py,
conv_blocks.py, mobilenet.py).
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

V1_BLOCKS = ((1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
             (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024))
V2_BLOCKS = ((1, 16), (2, 24), (1, 24), (2, 32), (1, 32), (1, 32), (2, 64), (1, 64), (1, 64), (1, 64),
             (1, 96), (1, 96), (1, 96), (2, 160), (1, 160), (1, 160), (1, 320))
EXTRA_DEPTHS = (512, 256, 256, 128)
# slim mobilenet_v3 conv defs, one row per expanded_conv: (expansion factor, outputs, kernel, stride,
# squeeze-excite, activation); then the final 1x1 conv's outputs and the rows (0-based, in the whole
# spec counting the first conv as 0) that V3_*_DETECTION halves.
V3_LARGE = ((1, 16, 3, 1, False, "relu"), (4, 24, 3, 2, False, "relu"), (3, 24, 3, 1, False, "relu"),
            (3, 40, 5, 2, True, "relu"), (3, 40, 5, 1, True, "relu"), (3, 40, 5, 1, True, "relu"),
            (6, 80, 3, 2, False, "hswish"), (2.5, 80, 3, 1, False, "hswish"), (184 / 80., 80, 3, 1, False, "hswish"),
            (184 / 80., 80, 3, 1, False, "hswish"), (6, 112, 3, 1, True, "hswish"), (6, 112, 3, 1, True, "hswish"),
            (6, 160, 5, 2, True, "hswish"), (6, 160, 5, 1, True, "hswish"), (6, 160, 5, 1, True, "hswish"))
V3_SMALL = ((1, 16, 3, 2, True, "relu"), (72. / 16, 24, 3, 2, False, "relu"), (88. / 24, 24, 3, 1, False, "relu"),
            (4, 40, 5, 2, True, "hswish"), (6, 40, 5, 1, True, "hswish"), (6, 40, 5, 1, True, "hswish"),
            (3, 48, 5, 1, True, "hswish"), (3, 48, 5, 1, True, "hswish"), (6, 96, 5, 2, True, "hswish"),
            (6, 96, 5, 1, True, "hswish"), (6, 96, 5, 1, True, "hswish"))
V3 = {  # blocks, final 1x1 conv, halved spec rows, from_layer (stride 16 expansion, last layer)
    "large": (V3_LARGE, 960, range(13, 17), ("layer_14", "layer_17")),
    "small": (V3_SMALL, 576, range(9, 13), ("layer_10", "layer_13")),
}
EXTRACTOR_TYPES = {"ssd_mobilenet_v1": "ssd_mobilenet_v1", "ssd_mobilenet_v2": "ssd_mobilenet_v2",
                   "ssdlite_mobilenet_v2": "ssd_mobilenet_v2", "ssdlite_mobilenet_v3_small": "ssd_mobilenet_v3_small",
                   "ssdlite_mobilenet_v3_large": "ssd_mobilenet_v3_large", "ssd_mobilenet_v1_fpn": "ssd_mobilenet_v1_fpn"}


@dataclass
class Tf1Spec:
    """What to build. ``kind``: one of ``EXTRACTOR_TYPES``."""

    kind: str = "ssd_mobilenet_v2"
    depth_multiplier: float = 0.25
    input_size: int = 96
    num_classes: int = 3
    min_depth: int = 16
    seed: int = 0
    bn_scale: bool = True  # False: no gamma variables (slim's scale=False)
    fused_bn: bool = True  # False: the unfused batch norm ops (ssd_mobilenet_v1 builds fused=False)
    labels: tuple[str, ...] = ()
    score_threshold: float = 1e-8
    iou_threshold: float = 0.6
    quantized: bool = False  # quantization-aware: folded batch norms, FakeQuant on weights and activations
    fpn_depth: int | None = None  # FPN additional_layer_depth; None: no fpn { } section (the default, 256)
    tower_depth: int = 256  # weight-shared predictor depth
    tower_layers: int = 4
    extra: dict = field(default_factory=dict)
    # OD API variable name -> value replacing the random draw (trained weights: ``odapi_weights``);
    # every variable must be given.
    weights: dict | None = field(default=None, repr=False, compare=False)
    # Added to every ClassPredictor bias but the background slot's (``with_realistic_scores``).
    class_bias_shift: float = 0.0

    @property
    def separable(self) -> bool:
        return self.kind.startswith("ssdlite")


def _make_divisible(v, divisor=8, min_value=None):
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class _Builder:
    """slim-style layers in raw TF ops. With a quantized spec, ``ranges`` None
    records every activation-quantization point (first pass) and a dict of
    {point: (min, max)} inserts the FakeQuant nodes (second pass)."""

    def __init__(self, tf, rng, spec: Tf1Spec, ranges: dict | None = None):
        self.tf, self.rng, self.spec, self.ranges = tf, rng, spec, ranges
        self.observed = {}
        self.given = set()  # names of spec.weights used

    def var(self, name, value):
        """A variable initialised to ``value`` (drawn at random), or to
        ``spec.weights``'s value of that name (the random draw is still made,
        so the other variables do not change)."""
        tf = self.tf
        if self.spec.weights is not None:
            full = f"{tf.compat.v1.get_variable_scope().name}/{name}"
            if full not in self.spec.weights:
                raise KeyError(f"Tf1Spec.weights has no {full} {list(value.shape)}")
            given = np.asarray(self.spec.weights[full])
            if given.shape != value.shape:
                raise ValueError(f"Tf1Spec.weights[{full!r}] has shape {list(given.shape)}, the graph needs "
                                 f"{list(value.shape)}")
            value = given
            self.given.add(full)
        return tf.compat.v1.get_variable(name, initializer=tf.constant(value.astype(np.float32)))

    def kernel(self, shape, fan_in):
        return self.rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)

    def act(self, x, kind):
        tf = self.tf
        if kind in (True, "relu6"):
            return tf.nn.relu6(x)
        if kind == "relu":
            return tf.nn.relu(x)
        if kind == "hswish":  # slim mobilenet_v3.hard_swish
            with tf.name_scope("hard_swish"):
                return x * tf.nn.relu6(x + np.float32(3)) * np.float32(1. / 6.)
        return x

    def quant(self, x):
        """``act_quant``: FakeQuant of an activation (quantized specs only)."""
        tf = self.tf
        if not self.spec.quantized:
            return x
        with tf.name_scope("act_quant") as point:
            if self.ranges is None:
                self.observed[point] = x
                return x
            low, high = self.ranges[point]
            return tf.quantization.fake_quant_with_min_max_vars(
                x, tf.constant(low, name="min"), tf.constant(high, name="max"), num_bits=8,
                name="FakeQuantWithMinMaxVars")

    def weights_quant(self, w):
        tf = self.tf
        with tf.name_scope("weights_quant"):
            return tf.quantization.fake_quant_with_min_max_vars(
                w, tf.reduce_min(w, name="min"), tf.reduce_max(w, name="max"), num_bits=8, narrow_range=True,
                name="FakeQuantWithMinMaxVars")

    def bn_params(self, depth, scope="BatchNorm"):
        tf = self.tf
        with tf.compat.v1.variable_scope(scope):
            gamma = self.var("gamma", self.rng.uniform(0.5, 1.5, depth)) if self.spec.bn_scale else None
            beta = self.var("beta", self.rng.normal(0, 0.2, depth))
            mean = self.var("moving_mean", self.rng.normal(0, 0.2, depth))
            variance = self.var("moving_variance", self.rng.uniform(0.5, 2.0, depth))
        return gamma, beta, mean, variance

    def batch_norm(self, x):
        tf = self.tf
        depth = int(x.shape[-1])
        gamma, beta, mean, variance = self.bn_params(depth)
        with tf.compat.v1.variable_scope("BatchNorm"):
            if self.spec.fused_bn:
                scale = gamma if gamma is not None else tf.ones([depth])
                y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, scale, beta, mean, variance, epsilon=0.001,
                                                           is_training=False, name="FusedBatchNorm")
                return y
            with tf.name_scope("batchnorm"):  # slim's unfused formula, as OD API SSD-MobileNetV1 builds it
                inv = tf.math.rsqrt(tf.add(variance, tf.constant(0.001, name="add/y"), name="add"))
                if gamma is not None:
                    inv = tf.multiply(inv, gamma, name="mul")
                return tf.add(x * inv, beta - mean * inv, name="add_1")

    def _conv_op(self, x, w, stride, depthwise):
        tf = self.tf
        if depthwise:
            return tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], "SAME")
        return tf.nn.conv2d(x, w, [1, stride, stride, 1], "SAME")

    def _layer(self, x, w, stride, depthwise, activation, bias, bn):
        """conv [+ bias] [+ BN] [+ activation]; quantized: BN folded into the weights
        (``mul_fold``, ``BatchNorm_Fold/bias``), FakeQuant on weights and output."""
        tf = self.tf
        depth = int(w.shape[-2] if depthwise else w.shape[-1])
        if not self.spec.quantized:
            y = self._conv_op(x, w, stride, depthwise)
            if bias is not None:
                y = tf.nn.bias_add(y, bias)
            if bn:
                y = self.batch_norm(y)
            return self.act(y, activation)
        if bn:
            gamma, beta, mean, variance = self.bn_params(depth)
            scale = tf.math.rsqrt(variance + 0.001) * (gamma if gamma is not None else 1.0)
            folded = tf.multiply(w, tf.reshape(scale, [1, 1, depth, 1]) if depthwise else scale, name="mul_fold")
            y = self._conv_op(x, self.weights_quant(folded), stride, depthwise)
            with tf.name_scope("BatchNorm_Fold"):
                y = tf.add(y, beta - mean * scale, name="bias")
        else:
            y = self._conv_op(x, self.weights_quant(w), stride, depthwise)
            if bias is not None:
                y = tf.nn.bias_add(y, bias)
        return self.quant(self.act(y, activation))

    def conv(self, x, name, filters, kernel=1, stride=1, activation=True, bias=False, bn=True):
        tf = self.tf
        with tf.compat.v1.variable_scope(name):
            cin = int(x.shape[-1])
            w = self.var("weights", self.kernel((kernel, kernel, cin, filters), kernel * kernel * cin))
            b = None
            if bias:
                value = self.rng.normal(0, 0.5, filters)
                if name == "ClassPredictor" and self.spec.class_bias_shift:
                    slots = self.spec.num_classes + 1
                    value = value + self.spec.class_bias_shift * (np.arange(filters) % slots != 0)
                b = self.var("biases", value)
            return self._layer(x, w, stride, False, activation, b, bn)

    def depthwise(self, x, name, stride=1, kernel=3, activation=True):
        tf = self.tf
        with tf.compat.v1.variable_scope(name):
            cin = int(x.shape[-1])
            w = self.var("depthwise_weights", self.kernel((kernel, kernel, cin, 1), kernel * kernel))
            return self._layer(x, w, stride, True, activation, None, True)

    def add(self, a, b):
        return self.quant(a + b)


def _mobilenet_v1(b: _Builder, x):
    dm, md = b.spec.depth_multiplier, b.spec.min_depth

    def depth(d):
        return max(int(d * dm), md)

    with b.tf.compat.v1.variable_scope("MobilenetV1"):
        x = b.conv(x, "Conv2d_0", depth(32), 3, 2)
        ends = {}
        for i, (stride, filters) in enumerate(V1_BLOCKS, start=1):
            x = b.depthwise(x, f"Conv2d_{i}_depthwise", stride)
            x = b.conv(x, f"Conv2d_{i}_pointwise", depth(filters))
            ends[f"Conv2d_{i}_pointwise"] = x
    return ends


def _mobilenet_v2(b: _Builder, x):
    tf = b.tf
    dm, md = b.spec.depth_multiplier, b.spec.min_depth

    def depth(d):
        return _make_divisible(d * dm, 8, md)

    with tf.compat.v1.variable_scope("MobilenetV2"):
        x = b.conv(x, "Conv", depth(32), 3, 2)
        expansion = None
        for index, (stride, filters) in enumerate(V2_BLOCKS):
            scope = "expanded_conv" + (f"_{index}" if index else "")
            with tf.compat.v1.variable_scope(scope):
                cin = int(x.shape[-1])
                inner = cin if index == 0 else _make_divisible(cin * 6, 8)
                y = x
                if inner > cin:
                    y = b.conv(y, "expand", inner)
                    if index == 13:
                        expansion = y  # layer_15/expansion_output
                y = b.depthwise(y, "depthwise", stride)
                y = b.conv(y, "project", depth(filters), activation=False)
                if stride == 1 and int(y.shape[-1]) == cin:
                    y = b.add(y, x)
                x = y
        x = b.conv(x, "Conv_1", depth(1280))
    return [expansion, x], "layer_19"


def _squeeze_excite(b: _Builder, x):
    """conv_blocks.squeeze_excite with mobilenet_v3's settings (factor 4, ReLU, hard-sigmoid gate)."""
    tf = b.tf
    with tf.compat.v1.variable_scope("squeeze_excite"):
        height, width, channels = (int(d) for d in x.shape[1:])
        pooled = tf.nn.avg_pool(x, (1, height, width, 1), strides=(1, 1, 1, 1), padding="VALID")
        squeeze = b.conv(pooled, "Conv", _make_divisible(channels / 4, 8), activation="relu", bias=True, bn=False)
        excite = b.conv(squeeze, "Conv_1", channels, activation=None, bias=True, bn=False)
        return x * (tf.nn.relu6(excite + 3) * 0.16667)


def _mobilenet_v3(b: _Builder, x, size: str):
    """slim mobilenet_v3.mobilenet_base(conv_defs=V3_*_DETECTION, final_endpoint=...)."""
    tf = b.tf
    blocks, last, halved, (expansion_layer, _) = V3[size]
    dm, md = b.spec.depth_multiplier, b.spec.min_depth

    def depth(d, row):  # _reduce_consecutive_layers, then mobilenet.depth_multiplier
        d = int(np.round(d * 0.5)) if row in halved else d
        return _make_divisible(d * dm, 8, md)

    ends = {}
    with tf.compat.v1.variable_scope("MobilenetV3"):
        x = b.conv(x, "Conv", depth(16, 0), 3, 2, activation="hswish")
        for index, (factor, outputs, kernel, stride, se, act) in enumerate(blocks):
            row = index + 1
            with tf.compat.v1.variable_scope("expanded_conv" + (f"_{index}" if index else "")):
                cin = int(x.shape[-1])
                inner = _make_divisible(cin * factor, 8)
                y = x
                if inner > cin:
                    y = b.conv(y, "expand", inner, activation=act)
                    ends[f"layer_{row + 1}/expansion_output"] = y
                y = b.depthwise(y, "depthwise", stride, kernel, activation=act)
                if se:
                    y = _squeeze_excite(b, y)
                y = b.conv(y, "project", depth(outputs, row), activation=None)
                if stride == 1 and int(y.shape[-1]) == cin:
                    y = b.add(y, x)
                x = y
        x = b.conv(x, "Conv_1", depth(last, len(blocks) + 1), activation="hswish")
    return [ends[f"{expansion_layer}/expansion_output"], x]


def _extra_layers(b: _Builder, maps, base, separable):
    dm, md = b.spec.depth_multiplier, b.spec.min_depth

    def depth(d):
        return max(int(d * dm), md)

    x = maps[-1]
    for index, layer_depth in enumerate(EXTRA_DEPTHS, start=2):
        x = b.conv(x, f"{base}_1_Conv2d_{index}_1x1_{depth(layer_depth // 2)}", depth(layer_depth // 2))
        name = f"{base}_2_Conv2d_{index}_3x3_s2_{depth(layer_depth)}"
        if separable:
            x = b.depthwise(x, name + "_depthwise", 2)
            x = b.conv(x, name, depth(layer_depth))
        else:
            x = b.conv(x, name, depth(layer_depth), 3, 2)
        maps.append(x)
    return maps


def _upsample(tf, x):
    """ops.nearest_neighbor_upsampling(x, 2): reshape and broadcast."""
    with tf.name_scope("nearest_neighbor_upsampling"):
        height, width, channels = (int(d) for d in x.shape[1:])
        batch = tf.shape(x)[0]
        y = tf.reshape(x, tf.stack([batch, height, 1, width, 1, channels])) * tf.ones([1, 1, 2, 1, 2, 1])
        return tf.reshape(y, tf.stack([batch, height * 2, width * 2, channels]))


def _fpn(b: _Builder, ends, depth):
    """ssd_mobilenet_v1_fpn: slim fpn_top_down_feature_maps on Conv2d_5/11/13_pointwise (levels
    3-5; the next finer level upsamples the bare sum), then bottom_up_Conv2d_14/15 (levels 6-7)."""
    tf = b.tf
    levels = [ends[f"Conv2d_{i}_pointwise"] for i in (5, 11, 13)]
    with tf.compat.v1.variable_scope("fpn"):
        top_down = b.conv(levels[-1], f"projection_{len(levels)}", depth, activation=None, bias=True, bn=False)
        outputs = [top_down]
        for level in reversed(range(len(levels) - 1)):
            top_down = _upsample(tf, top_down)
            residual = b.conv(levels[level], f"projection_{level + 1}", depth, activation=None, bias=True, bn=False)
            top_down = b.add(top_down, residual)
            outputs.insert(0, b.conv(top_down, f"smoothing_{level + 1}", depth, 3))
        x = outputs[-1]
        for level in (6, 7):
            x = b.conv(x, f"bottom_up_Conv2d_{level - 5 + 13}", depth, 3, 2)
            outputs.append(x)
    return outputs


def _weight_shared_predictor(b: _Builder, maps, k, num_class_slots):
    """WeightSharedConvolutionalBoxPredictor (apply_batch_norm, share_prediction_tower false):
    a BoxPredictionTower and a ClassPredictionTower of 3x3 convs shared across levels, one batch
    norm per level, then the shared BoxPredictor / ClassPredictor convs with biases."""
    tf = b.tf
    spec = b.spec
    boxes, classes = [], []
    for index, fmap in enumerate(maps):
        with tf.compat.v1.variable_scope("WeightSharedConvolutionalBoxPredictor", reuse=tf.compat.v1.AUTO_REUSE):
            outputs = []
            for tower, head, size in (("BoxPredictionTower", "BoxPredictor", 4),
                                      ("ClassPredictionTower", "ClassPredictor", num_class_slots)):
                x = fmap
                for j in range(spec.tower_layers):
                    with tf.compat.v1.variable_scope(f"{tower}/conv2d_{j}"):
                        cin = int(x.shape[-1])
                        w = b.var("weights", b.kernel((3, 3, cin, spec.tower_depth), 9 * cin))
                        if spec.quantized:
                            gamma, beta, mean, variance = b.bn_params(spec.tower_depth, f"BatchNorm/feature_{index}")
                            scale = tf.math.rsqrt(variance + 0.001) * (gamma if gamma is not None else 1.0)
                            y = b._conv_op(x, b.weights_quant(w * scale), 1, False) + (beta - mean * scale)
                            x = b.quant(tf.nn.relu6(y))
                        else:
                            y = b._conv_op(x, w, 1, False)
                            gamma, beta, mean, variance = b.bn_params(spec.tower_depth, f"BatchNorm/feature_{index}")
                            gamma = gamma if gamma is not None else tf.ones([spec.tower_depth])
                            y = tf.compat.v1.nn.fused_batch_norm(y, gamma, beta, mean, variance, epsilon=0.001,
                                                                 is_training=False)[0]
                            x = tf.nn.relu6(y)
                outputs.append(b.conv(x, head, k * size, 3, activation=None, bias=True, bn=False))
            batch = tf.shape(fmap)[0]
            boxes.append(tf.reshape(outputs[0], tf.stack([batch, -1, 1, 4])))
            classes.append(tf.reshape(outputs[1], tf.stack([batch, -1, num_class_slots])))
    return boxes, classes


def _conv_predictor(b: _Builder, maps, per_location, num_class_slots):
    tf = b.tf
    separable = b.spec.separable
    boxes, classes = [], []
    for i, (fmap, k) in enumerate(zip(maps, per_location)):
        with tf.compat.v1.variable_scope(f"BoxPredictor_{i}"):
            outputs = []
            for head, size in (("BoxEncodingPredictor", 4), ("ClassPredictor", num_class_slots)):
                x = fmap
                if separable:
                    x = b.depthwise(x, f"{head}_depthwise", 1, 3)
                x = b.conv(x, head, k * size, 1, activation=False, bias=True, bn=False)
                outputs.append(x)
            batch = tf.shape(fmap)[0]
            boxes.append(tf.reshape(outputs[0], tf.stack([batch, -1, 1, 4])))
            classes.append(tf.reshape(outputs[1], tf.stack([batch, -1, num_class_slots])))
    return boxes, classes


def _anchor_generator(spec: Tf1Spec):
    from ssdkit.runtime.spec import MultipleGridAnchors, MultiscaleGridAnchors

    return MultiscaleGridAnchors() if spec.kind.endswith("_fpn") else MultipleGridAnchors()


OUTPUTS = ["detection_boxes", "detection_scores", "detection_classes", "num_detections", "concat", "concat_1"]


def _build_graph(tf, spec: Tf1Spec, ranges: dict | None = None):
    """The inference graph (variables not yet initialised) and its builder."""
    rng = np.random.default_rng(spec.seed)
    graph = tf.Graph()
    with graph.as_default():
        b = _Builder(tf, rng, spec, ranges)
        images = tf.compat.v1.placeholder(tf.uint8, [None, None, None, 3], name="image_tensor")
        with tf.name_scope("Preprocessor"):
            resized = tf.compat.v1.image.resize_bilinear(tf.cast(images, tf.float32),
                                                         [spec.input_size, spec.input_size])
            normalized = tf.subtract(tf.multiply(2.0 / 255.0, resized, name="mul"), 1.0, name="sub")
        with tf.compat.v1.variable_scope("FeatureExtractor"):
            if spec.kind == "ssd_mobilenet_v1_fpn":
                ends = _mobilenet_v1(b, normalized)
                with tf.compat.v1.variable_scope("MobilenetV1"):
                    fpn_depth = max(int((spec.fpn_depth or 256) * spec.depth_multiplier), spec.min_depth)
                    maps = _fpn(b, ends, fpn_depth)
            elif spec.kind == "ssd_mobilenet_v1":
                ends = _mobilenet_v1(b, normalized)
                with tf.compat.v1.variable_scope("MobilenetV1"):
                    maps = _extra_layers(b, [ends["Conv2d_11_pointwise"], ends["Conv2d_13_pointwise"]],
                                         "Conv2d_13_pointwise", False)
            elif spec.kind.startswith("ssdlite_mobilenet_v3"):
                size = spec.kind.rsplit("_", 1)[1]
                maps = _mobilenet_v3(b, normalized, size)
                with tf.compat.v1.variable_scope("MobilenetV3"):
                    maps = _extra_layers(b, maps, V3[size][3][1], True)
            else:
                maps, base = _mobilenet_v2(b, normalized)
                with tf.compat.v1.variable_scope("MobilenetV2"):
                    maps = _extra_layers(b, maps, base, spec.separable)
        shapes = [tuple(int(d) for d in m.shape[1:3]) for m in maps]
        generator = _anchor_generator(spec)
        anchors = generator.generate(shapes, spec.input_size, spec.input_size).astype(np.float32)
        per_location = generator.per_location()
        if spec.kind.endswith("_fpn"):
            boxes, classes = _weight_shared_predictor(b, maps, per_location[0], spec.num_classes + 1)
        else:
            boxes, classes = _conv_predictor(b, maps, per_location, spec.num_classes + 1)
        box_encodings = tf.concat(boxes, 1, name="concat")
        class_predictions = tf.concat(classes, 1, name="concat_1")
        squeezed = tf.squeeze(box_encodings, 2, name="Squeeze")
        anchor_t = tf.constant(anchors, name="Concatenate/concat")
        with tf.name_scope("Postprocessor"):
            scores = tf.sigmoid(class_predictions, name="convert_scores")
            ycenter_a = (anchor_t[:, 0] + anchor_t[:, 2]) / 2
            xcenter_a = (anchor_t[:, 1] + anchor_t[:, 3]) / 2
            ha, wa = anchor_t[:, 2] - anchor_t[:, 0], anchor_t[:, 3] - anchor_t[:, 1]
            with tf.name_scope("Decode"):
                ty = tf.divide(squeezed[..., 0], 10.0, name="div")
                tx = tf.divide(squeezed[..., 1], 10.0, name="div_1")
                th = tf.divide(squeezed[..., 2], 5.0, name="div_2")
                tw = tf.divide(squeezed[..., 3], 5.0, name="div_3")
            w, h = tf.exp(tw) * wa, tf.exp(th) * ha
            yc, xc = ty * ha + ycenter_a, tx * wa + xcenter_a
            decoded = tf.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1)
            nmsed = tf.image.combined_non_max_suppression(
                decoded[:, :, None, :], scores[:, :, 1:], 100, 100, spec.iou_threshold, spec.score_threshold,
                clip_boxes=False)
        tf.identity(nmsed.nmsed_boxes, name="detection_boxes")
        tf.identity(nmsed.nmsed_scores, name="detection_scores")
        tf.identity(nmsed.nmsed_classes + 1, name="detection_classes")
        tf.identity(tf.cast(nmsed.valid_detections, tf.float32), name="num_detections")
    if spec.weights is not None and set(spec.weights) - b.given:
        unused = sorted(set(spec.weights) - b.given)
        raise ValueError(f"Tf1Spec.weights has {len(unused)} variables the graph does not have: {unused[:3]}")
    return graph, b


def _activation_ranges(tf, spec: Tf1Spec) -> dict:
    """The float graph's activation ranges at every quantization point over the
    photos: what quantization-aware training's moving averages converge to."""
    from ssdkit.convert.odapi.parity import load_photos

    graph, b = _build_graph(tf, spec)
    ranges = {}
    with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        for _, photo in load_photos(None):
            values = sess.run(b.observed, {"image_tensor:0": photo[None]})
            for point, value in values.items():
                low, high = ranges.get(point, (0.0, 0.0))
                ranges[point] = (min(low, float(value.min())), max(high, float(value.max())))
    return ranges


def build_tf1_source(folder: str | Path, spec: Tf1Spec = Tf1Spec()) -> Path:
    """Writes a TF1 zoo-style model folder; returns it."""
    import tensorflow as tf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    graph, _ = _build_graph(tf, spec, _activation_ranges(tf, spec) if spec.quantized else None)
    with graph.as_default():
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver = tf.compat.v1.train.Saver()
            saver.save(sess, str(folder / "model.ckpt"))
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), OUTPUTS)
    (folder / "frozen_inference_graph.pb").write_bytes(frozen.SerializeToString())
    labels = spec.labels or tuple(f"thing{i}" for i in range(1, spec.num_classes + 1))
    (folder / "label_map.pbtxt").write_text("".join(
        f'item {{\n  name: "/m/{i:04d}"\n  id: {i}\n  display_name: "{name}"\n}}\n' for i, name in enumerate(labels, 1)))
    (folder / "pipeline.config").write_text(pipeline_config(spec))
    return folder


def _top_logit(logits: np.ndarray, per_photo: int) -> float:
    """The mean over photos of each photo's ``per_photo``-th largest
    non-background logit: the bias shift that leaves about ``per_photo``
    (anchor, class) scores per photo above 0.5."""
    tops = [np.sort(photo[..., 1:].ravel())[-per_photo] for photo in logits]
    return float(np.mean(tops))


def with_realistic_scores(spec: Tf1Spec, per_photo: int = 20) -> Tf1Spec:
    """``spec`` with a class bias shift that gives random weights a trained
    detector's score spread on the photos: about ``per_photo`` (anchor, class)
    pairs scoring over 0.5 per photo (a handful of detections after NMS), the
    rest near 0. Without it a random network scores about half of all pairs
    over 0.5, and an int8-vs-fp32 agreement measured at score 0.5 means little."""
    import tensorflow as tf

    from ssdkit.convert.odapi.parity import load_photos

    graph, _ = _build_graph(tf, spec)
    with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        logits = [sess.run("concat_1:0", {"image_tensor:0": photo[None]})[0] for _, photo in load_photos(None)]
    import dataclasses

    return dataclasses.replace(spec, class_bias_shift=spec.class_bias_shift - _top_logit(np.stack(logits), per_photo))


def odapi_weights(checkpoint, zoo_name: str, input_size: int | None = None) -> dict[str, np.ndarray]:
    """OD API (TF1) variable name -> value of a trained ssdkit checkpoint whose
    network computes what the OD API's ``zoo_name`` network computes: the
    inverse of the importer's name mapping (``architectures.tf1_name``).

    A checkpoint of ssdkit's own zoo entry (e.g. the shipped ``ssd_mnv2``
    demo weights: the Keras MobileNetV2 application's layer names) is copied
    onto the OD API-exact network in layer order, each weight's kind and
    shape checked, and the two networks are run on the photos: their raw
    outputs must agree to float rounding, which is what shows the two
    networks are the same function with these weights. Returns the weights
    with the labels, anchors and box coder of the checkpoint (which
    ``Tf1Spec`` then has to match)."""
    from ssdkit.convert.odapi.architectures import tf1_name

    return {tf1_name(w.name): w.numpy() for w in _odapi_model(checkpoint, zoo_name, input_size).keras_model.weights}


def _odapi_model(checkpoint, zoo_name: str, input_size: int | None = None):
    """``odapi_weights``' network (an ssdkit ``SSDModel``) with the weights in it."""
    from ssdkit.convert.checkpoint import apply_weights, read_checkpoint
    from ssdkit.convert.models.ssd import build_model
    from ssdkit.convert.odapi.parity import load_photos, normalized_inputs
    from ssdkit.convert.zoo import define

    stored = read_checkpoint(checkpoint)
    spec = stored.definition.spec
    size = input_size or tuple(spec.input_size)
    size = (size, size) if isinstance(size, int) else tuple(size)
    source = build_model(stored.definition if size == tuple(spec.input_size)
                         else define(stored.definition.name, width=stored.definition.width, input_size=size,
                                     labels=tuple(spec.labels)))
    apply_weights(source, stored.weights, checkpoint)
    target = build_model(define(zoo_name, width=stored.definition.width, input_size=size, labels=tuple(spec.labels)))
    have, want = source.keras_model.weights, target.keras_model.weights
    if len(have) != len(want):
        raise ValueError(f"{checkpoint}: {len(have)} weights, {zoo_name} has {len(want)}")
    for a, b in zip(have, want):
        kind_a, kind_b = a.name.split(":")[0].rsplit("/", 1)[-1], b.name.split(":")[0].rsplit("/", 1)[-1]
        if kind_a != kind_b or tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"{checkpoint}: {a.name} {list(a.shape)} does not fit {zoo_name}'s {b.name} "
                             f"{list(b.shape)}")
        b.assign(a.numpy())
    for x in normalized_inputs(load_photos(None), target.spec):
        got, expected = target.keras_model(x), source.keras_model(x)
        for key in ("box_encodings", "class_predictions"):
            d = float(np.abs(got[key].numpy() - expected[key].numpy()).max())
            scale = float(np.abs(expected[key].numpy()).max())
            if d > 1e-5 * max(scale, 1.0):
                raise ValueError(f"{checkpoint}: on {zoo_name} the weights give {key} differing by {d:.3g} "
                                 f"(largest value {scale:.3g}): the networks are not the same function")
    return target


_HYPER = """conv_hyperparams {
          activation: RELU_6,
          regularizer { l2_regularizer { weight: 0.00004 } }
          initializer { truncated_normal_initializer { stddev: 0.03 mean: 0.0 } }
          batch_norm { train: true, scale: true, center: true, decay: 0.9997, epsilon: 0.001, }
        }"""


def pipeline_config(spec: Tf1Spec) -> str:
    """A pipeline.config as the OD API's samples/configs write them."""
    fpn = spec.kind.endswith("_fpn")
    if fpn:
        anchors = """multiscale_anchor_generator {
        min_level: 3
        max_level: 7
        anchor_scale: 4.0
        aspect_ratios: [1.0, 2.0, 0.5]
        scales_per_octave: 2
      }"""
        predictor = f"""weight_shared_convolutional_box_predictor {{
        depth: {spec.tower_depth}
        class_prediction_bias_init: -4.6
        {_HYPER}
        num_layers_before_predictor: {spec.tower_layers}
        kernel_size: 3
      }}"""
    else:
        anchors = """ssd_anchor_generator {
        num_layers: 6
        min_scale: 0.2
        max_scale: 0.95
        aspect_ratios: 1.0
        aspect_ratios: 2.0
        aspect_ratios: 0.5
        aspect_ratios: 3.0
        aspect_ratios: 0.3333
      }"""
        predictor = f"""convolutional_box_predictor {{
        min_depth: 0
        max_depth: 0
        num_layers_before_predictor: 0
        use_dropout: false
        dropout_keep_probability: 0.8
        kernel_size: {3 if spec.separable else 1}
        use_depthwise: {str(spec.separable).lower()}
        box_code_size: 4
        apply_sigmoid_to_scores: false
        {_HYPER}
      }}"""
    fpn_section = (f"fpn {{ min_level: 3 max_level: 7 additional_layer_depth: {spec.fpn_depth} }}"
                   if fpn and spec.fpn_depth else "")
    override = "override_base_feature_extractor_hyperparams: true" if fpn or "v3" in spec.kind else ""
    rewriter = ("graph_rewriter { quantization { delay: 48000 weight_bits: 8 activation_bits: 8 } }"
                if spec.quantized else "")
    return f"""# {spec.kind} test model (ssdkit tests/convert/odapi_fixtures.py)
model {{
  ssd {{
    num_classes: {spec.num_classes}
    box_coder {{ faster_rcnn_box_coder {{ y_scale: 10.0 x_scale: 10.0 height_scale: 5.0 width_scale: 5.0 }} }}
    matcher {{ argmax_matcher {{ matched_threshold: 0.5 unmatched_threshold: 0.5 }} }}
    similarity_calculator {{ iou_similarity {{ }} }}
    anchor_generator {{
      {anchors}
    }}
    image_resizer {{ fixed_shape_resizer {{ height: {spec.input_size} width: {spec.input_size} }} }}
    box_predictor {{
      {predictor}
    }}
    feature_extractor {{
      type: '{EXTRACTOR_TYPES[spec.kind]}'
      min_depth: {spec.min_depth}
      depth_multiplier: {spec.depth_multiplier}
      use_depthwise: {str(spec.separable).lower()}
      {fpn_section}
      {_HYPER}
      {override}
    }}
    loss {{ classification_loss {{ weighted_sigmoid {{ }} }} localization_loss {{ weighted_smooth_l1 {{ }} }} }}
    normalize_loss_by_num_matches: true
    post_processing {{
      batch_non_max_suppression {{
        score_threshold: {spec.score_threshold}
        iou_threshold: {spec.iou_threshold}
        max_detections_per_class: 100
        max_total_detections: 100
      }}
      score_converter: SIGMOID
    }}
  }}
}}
train_config: {{
  batch_size: 24
  fine_tune_checkpoint: "PATH_TO_BE_CONFIGURED/model.ckpt"
}}
{rewriter}
train_input_reader: {{
  tf_record_input_reader {{ input_path: "PATH_TO_BE_CONFIGURED/train.record" }}
  label_map_path: "PATH_TO_BE_CONFIGURED/label_map.pbtxt"
}}
eval_input_reader: {{
  tf_record_input_reader {{ input_path: "PATH_TO_BE_CONFIGURED/val.record" }}
  label_map_path: "PATH_TO_BE_CONFIGURED/label_map.pbtxt"
  shuffle: false
}}
"""


def archive(folder: Path, target: Path, top: str | None = None) -> Path:
    """``folder`` as a zoo-style ``.tar.gz`` with one top-level folder."""
    with tarfile.open(target, "w:gz") as tar:
        tar.add(folder, arcname=top or folder.name)
    return target




def build_tf2_source(folder: str | Path, input_size: int = 64, num_classes: int = 3, seed: int = 0,
                     trained: str | Path | None = None, per_photo: int = 0) -> Path:
    """A TF2 zoo-style ``ssd_mobilenet_v2_keras`` folder (``checkpoint/ckpt-0``,
    ``saved_model/``, ``pipeline.config``) as the OD API's Keras classes
    build it: the Keras MobileNetV2 application (its layer names) as
    ``_feature_extractor.classification_backbone``, ``FeatureMaps`` with
    ``convolutions``, a ``BoxPredictor`` of ``ConvolutionalBoxHead_N`` /
    ``ConvolutionalClassHead_N`` layers; width 1.0 (where Keras's and slim's
    depth rules agree), random weights and batch-norm statistics.

    ``trained``: an ssdkit checkpoint of the same network (the shipped
    ``ssd_mnv2`` demo weights) whose weights the model gets instead, its
    labels replacing ``num_classes`` (``_write_tf2``); ``per_photo``: random
    weights with a realistic score spread (``with_realistic_scores``)."""
    import tensorflow as tf
    import tf_keras as keras

    from ssdkit.runtime.spec import MultipleGridAnchors

    reference = labels = None
    if trained is not None:
        reference = _odapi_model(trained, "ssd_mnv2_odapi", input_size)
        labels = tuple(reference.spec.labels)
        num_classes = len(labels)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    keras.backend.clear_session()
    relu6 = tf.nn.relu6

    class FeatureMaps(keras.Model):
        def __init__(self):
            super().__init__(name="FeatureMaps")
            self.convolutions = [[], []]
            for index, layer_depth in enumerate(EXTRA_DEPTHS, start=2):
                net = []
                for stage, depth, kernel, stride in ((1, layer_depth // 2, 1, 1), (2, layer_depth, 3, 2)):
                    name = (f"layer_19_1_Conv2d_{index}_1x1_{depth}" if stage == 1
                            else f"layer_19_2_Conv2d_{index}_3x3_s2_{depth}")
                    net += [keras.layers.Conv2D(depth, kernel, strides=stride, padding="same", use_bias=False,
                                                name=name + "_conv"),
                            keras.layers.BatchNormalization(epsilon=1e-3, name=name + "_batchnorm"),
                            keras.layers.Lambda(relu6, name=name)]
                self.convolutions.append(net)

        def call(self, features):
            maps = list(features)
            x = maps[-1]
            for net in self.convolutions[2:]:
                for layer in net:
                    x = layer(x)
                maps.append(x)
            return maps

    class FeatureExtractor(keras.Model):
        def __init__(self):
            super().__init__(name="ssd_mobile_net_v2_keras_feature_extractor")
            full = keras.applications.MobileNetV2(alpha=1.0, include_top=False, weights=None,
                                                  input_shape=(input_size, input_size, 3))
            self.classification_backbone = keras.Model(
                full.inputs, [full.get_layer("block_13_expand_relu").output, full.get_layer("out_relu").output])
            self.feature_map_generator = FeatureMaps()

        def call(self, x):
            return self.feature_map_generator(self.classification_backbone(x))

    per_location = MultipleGridAnchors().per_location()

    class Head(keras.layers.Layer):
        def __init__(self, kind, index, filters):
            super().__init__(name=f"Convolutional{kind}Head_{index}")
            layer = "BoxEncodingPredictor" if kind == "Box" else "ClassPredictor"
            self._layers = [keras.layers.Conv2D(filters, 1, padding="same", name=layer)]
            self.size = 4 if kind == "Box" else num_classes + 1

        def call(self, x):
            for layer in self._layers:
                x = layer(x)
            return tf.reshape(x, [tf.shape(x)[0], -1, self.size])

    class BoxPredictor(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="BoxPredictor")
            self._prediction_heads = {
                "box_encodings": [Head("Box", i, k * 4) for i, k in enumerate(per_location)],
                "class_predictions_with_background": [Head("Class", i, k * (num_classes + 1))
                                                      for i, k in enumerate(per_location)]}

        def call(self, maps):
            return {key: [head(m) for head, m in zip(heads, maps)] for key, heads in self._prediction_heads.items()}

    class SSDMetaArch(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="ssd_meta_arch")
            self._feature_extractor = FeatureExtractor()
            self._box_predictor = BoxPredictor()

        def call(self, x):
            maps = self._feature_extractor(x)
            out = self._box_predictor(maps)
            return (tf.concat(out["box_encodings"], 1), tf.concat(out["class_predictions_with_background"], 1),
                    [tuple(int(d) for d in m.shape[1:3]) for m in maps])

    model = SSDMetaArch()
    _write_tf2(folder, model, MultipleGridAnchors(), input_size, num_classes, rng, reference, per_photo)
    spec = Tf1Spec("ssd_mobilenet_v2", depth_multiplier=1.0, input_size=input_size, num_classes=num_classes)
    (folder / "pipeline.config").write_text(
        pipeline_config(spec).replace("type: 'ssd_mobilenet_v2'", "type: 'ssd_mobilenet_v2_keras'"))
    labels = labels or tuple(f"thing{i}" for i in range(1, num_classes + 1))
    (folder / "label_map.pbtxt").write_text("".join(
        f'item {{\n  id: {i}\n  name: "{name}"\n}}\n' for i, name in enumerate(labels, 1)))
    return folder


def _write_tf2(folder: Path, model, generator, input_size: int, num_classes: int, rng, reference=None,
               per_photo: int = 0) -> None:
    """Random weights and batch norms into ``model``; then ``checkpoint/ckpt-0`` and a
    ``saved_model/`` whose serving function resizes, normalizes, runs the model and
    decodes and suppresses as the OD API's exported ``DetectionInferenceModule``.

    ``reference``: an ssdkit OD API-exact model whose weights ``model`` gets
    instead, placed by TF1 scope (``tf2.tf1_style``), then checked by running
    both on the photos. ``per_photo``: the class biases shifted as
    ``with_realistic_scores`` does."""
    import tensorflow as tf

    _, _, shapes = model(tf.zeros([1, input_size, input_size, 3]))
    if reference is not None:
        _assign_reference(model, reference, input_size)
    else:
        _random_weights(model, input_size, rng)
        if per_photo:
            _shift_class_biases(model, input_size, num_classes, per_photo)
    anchors = generator.generate(shapes, input_size, input_size).astype(np.float32)
    _save_tf2(folder, model, anchors, input_size)


def _photo_batch(input_size: int):
    import tensorflow as tf

    from ssdkit.convert.odapi.parity import load_photos

    return tf.stack([tf.image.resize(tf.cast(photo, tf.float32), [input_size, input_size])
                     for _, photo in load_photos(None)]) * (2.0 / 255.0) - 1.0


def _assign_reference(model, reference, input_size: int) -> None:
    from ssdkit.convert.odapi.architectures import tf1_name
    from ssdkit.convert.odapi.tf2 import tf1_style

    values = {tf1_name(w.name): w.numpy() for w in reference.keras_model.weights}
    for variable in model.weights:
        variable.assign(values.pop(tf1_style(variable.name)))
    if values:
        raise ValueError(f"{len(values)} weights of the reference have no TF2 variable: {sorted(values)[:3]}")
    batch = _photo_batch(input_size)
    boxes, logits, _ = model(batch)
    out = reference.keras_model(batch)
    for got, expected in ((boxes, out["box_encodings"]), (logits, out["class_predictions"])):
        d = float(np.abs(got.numpy().reshape(expected.shape) - expected.numpy()).max())
        if d > 1e-5 * max(float(np.abs(expected.numpy()).max()), 1.0):
            raise ValueError(f"the TF2 model with the reference's weights differs from it by {d:.3g}")


def _shift_class_biases(model, input_size: int, num_classes: int, per_photo: int) -> None:
    _, logits, _ = model(_photo_batch(input_size))
    shift = -_top_logit(logits.numpy(), per_photo)
    for variable in model.weights:
        if "ClassPredictor" in variable.name and "bias" in variable.name:
            slots = np.arange(variable.shape[0]) % (num_classes + 1) != 0
            variable.assign(variable.numpy() + shift * slots.astype(np.float32))


def _random_weights(model, input_size: int, rng) -> None:
    for variable in model.weights:
        name, shape = variable.name, tuple(variable.shape)
        if "gamma" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif "beta" in name or "moving_mean" in name:
            value = rng.normal(0, 0.2, shape)
        elif "moving_variance" in name:
            value = rng.uniform(0.5, 2.0, shape)
        elif "bias" in name:
            value = rng.normal(0, 0.5, shape)
        else:
            fan_in = int(np.prod(shape[:-1])) if "depthwise" not in name else int(np.prod(shape[:2]))
            value = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
        variable.assign(value.astype(np.float32))
    _calibrate_batch_norms(model, input_size, rng)


def _save_tf2(folder: Path, model, anchors: np.ndarray, input_size: int) -> None:
    import tensorflow as tf

    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(folder / "checkpoint"), max_to_keep=1)
    manager.save(checkpoint_number=0)

    class DetectionInferenceModule(tf.Module):
        def __init__(self):
            super().__init__()
            self._model = model

        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")])
        def __call__(self, input_tensor):
            images = tf.image.resize(tf.cast(input_tensor, tf.float32), [input_size, input_size])
            normalized = (2.0 / 255.0) * images - 1.0
            boxes, logits, _ = self._model(normalized)
            scores = tf.sigmoid(logits)
            a = tf.constant(anchors)
            ha, wa = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
            yc = boxes[..., 0] / 10.0 * ha + (a[:, 0] + a[:, 2]) / 2
            xc = boxes[..., 1] / 10.0 * wa + (a[:, 1] + a[:, 3]) / 2
            h, w = tf.exp(boxes[..., 2] / 5.0) * ha, tf.exp(boxes[..., 3] / 5.0) * wa
            decoded = tf.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], -1)
            nms = tf.image.combined_non_max_suppression(decoded[:, :, None], scores[:, :, 1:], 100, 100, 0.6, 1e-8,
                                                        clip_boxes=False)
            return {"detection_boxes": nms.nmsed_boxes, "detection_scores": nms.nmsed_scores,
                    "detection_classes": nms.nmsed_classes + 1.0,
                    "num_detections": tf.cast(nms.valid_detections, tf.float32),
                    "raw_detection_boxes": decoded, "raw_detection_scores": scores}

    module = DetectionInferenceModule()
    tf.saved_model.save(module, str(folder / "saved_model"), signatures={"serving_default": module.__call__})


def _calibrate_batch_norms(model, input_size: int, rng) -> None:
    """Moving statistics from the photos, as training leaves them: one
    training-mode pass with momentum 0 sets every batch norm's moving mean and
    variance to the statistics of what it sees (upstream layers already
    normalized); the variance then gets 0.5-1.0 added, so that channels the
    three photos barely move (1x1 maps, units ReLU6 clips) are not divided by
    sqrt(epsilon). Random statistics instead let pre-activations grow far past
    ReLU6's range in a deep network, which inflates float rounding relative to
    the clipped outputs and is nothing a trained model does."""
    import tf_keras as keras

    batch = _photo_batch(input_size)
    norms = [layer for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(batch, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
        variance = layer.moving_variance
        variance.assign(variance + rng.uniform(0.5, 1.0, variance.shape).astype(np.float32))


def build_tf2_fpnlite_source(folder: str | Path, input_size: int = 128, num_classes: int = 3, seed: int = 0,
                             fpn_depth: int = 128, tower_layers: int = 4, per_photo: int = 0) -> Path:
    """A TF2 zoo-style ``ssd_mobilenet_v2_fpnlite_320x320`` folder as the OD API's
    Keras classes build it (``SSDMobileNetV2FpnKerasFeatureExtractor`` with
    ``use_depthwise``, ``KerasFpnTopDownFeatureMaps`` named ``FeatureMaps``,
    ``WeightSharedConvolutionalBoxPredictor`` with a shared separable tower):
    the Keras MobileNetV2 application with its last 1x1 conv ``Conv_1`` at 256
    channels (the OD API's modified conv defs), projections ``projection_1..3``
    with bias, separable ``smoothing_1/2`` and ``bottom_up_Conv2d_20/21`` each
    with ``_depthwise_conv`` / ``_batchnorm`` layers, a ``PredictionTower`` of
    ``conv2d_j`` separable convs with ``BatchNorm/feature_i`` per level, and
    separable ``BoxPredictor`` / ``ClassPredictor`` heads. Width 1.0; the
    input side must be a multiple of 32 (even at every stride, where the
    Keras application's explicit padding equals the OD API's SAME)."""
    import tensorflow as tf
    import tf_keras as keras

    from ssdkit.runtime.spec import MultiscaleGridAnchors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    keras.backend.clear_session()
    relu6 = tf.nn.relu6

    def upsample(x):  # ops.nearest_neighbor_upsampling(x, scale=2)
        _, height, width, channels = x.shape
        y = tf.reshape(x, [-1, height, 1, width, 1, channels]) * tf.ones([1, 1, 2, 1, 2, 1])
        return tf.reshape(y, [-1, height * 2, width * 2, channels])

    def conv_block(name, stride):  # feature_map_generators.create_conv_block(use_depthwise=True)
        return [keras.layers.SeparableConv2D(fpn_depth, 3, strides=stride, padding="same", use_bias=False,
                                             name=name + "_depthwise_conv"),
                keras.layers.BatchNormalization(epsilon=1e-3, name=name + "_batchnorm"),
                keras.layers.Lambda(relu6, name=name)]

    class FeatureMaps(keras.Model):  # KerasFpnTopDownFeatureMaps(num_levels=3)
        def __init__(self):
            super().__init__(name="FeatureMaps")
            self.top_layers = [keras.layers.Conv2D(fpn_depth, 1, name="projection_3")]
            self.residual_blocks, self.top_down_blocks, self.conv_layers = [], [], []
            for level in reversed(range(2)):
                self.residual_blocks.append([keras.layers.Conv2D(fpn_depth, 1, name=f"projection_{level + 1}")])
                self.top_down_blocks.append([keras.layers.Lambda(upsample, name="nearest_neighbor_upsampling")])
                self.conv_layers.append(conv_block(f"smoothing_{level + 1}", 1))

        def call(self, features):
            top_down = features[-1]
            for layer in self.top_layers:
                top_down = layer(top_down)
            outputs = [top_down]
            for index, level in enumerate(reversed(range(2))):
                residual = features[level]
                for layer in self.residual_blocks[index]:
                    residual = layer(residual)
                top_down = outputs[-1]
                for layer in self.top_down_blocks[index]:
                    top_down = layer(top_down)
                top_down = top_down + residual
                for layer in self.conv_layers[index]:
                    top_down = layer(top_down)
                outputs.append(top_down)
            return outputs[::-1]

    class FeatureExtractor(keras.Model):
        def __init__(self):
            super().__init__(name="ssd_mobile_net_v2_fpn_keras_feature_extractor")
            full = keras.applications.MobileNetV2(alpha=1.0, include_top=False, weights=None,
                                                  input_shape=(input_size, input_size, 3))
            x = keras.layers.Conv2D(256, 1, use_bias=False, name="Conv_1")(full.get_layer("block_16_project_BN").output)
            x = keras.layers.BatchNormalization(epsilon=1e-3, name="Conv_1_bn")(x)
            x = keras.layers.ReLU(6.0, name="out_relu")(x)
            self._mobilenet_v2 = keras.Model(full.inputs, [full.get_layer("block_5_add").output,
                                                           full.get_layer("block_12_add").output, x])
            self._fpn_features_generator = FeatureMaps()
            self._coarse_feature_layers = [conv_block(f"bottom_up_Conv2d_{level - 5 + 19}", 2) for level in (6, 7)]

        def call(self, x):
            maps = self._fpn_features_generator(self._mobilenet_v2(x))
            last = maps[-1]
            for block in self._coarse_feature_layers:
                for layer in block:
                    last = layer(last)
                maps.append(last)
            return maps

    generator = MultiscaleGridAnchors()
    k = generator.per_location()[0]

    class Head(keras.layers.Layer):  # WeightSharedConvolutional{Box,Class}Head with use_depthwise
        def __init__(self, kind, filters, size):
            super().__init__(name=f"WeightSharedConvolutional{kind}Head")
            self._conv = keras.layers.SeparableConv2D(filters, 3, padding="same",
                                                      name="BoxPredictor" if kind == "Box" else "ClassPredictor")
            self.size = size

        def call(self, x):
            return tf.reshape(self._conv(x), [tf.shape(x)[0], -1, self.size])

    class BoxPredictor(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="WeightSharedConvolutionalBoxPredictor")
            self._tower = [keras.layers.SeparableConv2D(fpn_depth, 3, padding="same", use_bias=False,
                                                        name=f"PredictionTower/conv2d_{j}") for j in range(tower_layers)]
            self._norms = [[keras.layers.BatchNormalization(epsilon=1e-3,
                                                            name=f"PredictionTower/conv2d_{j}/BatchNorm/feature_{i}")
                            for j in range(tower_layers)] for i in range(5)]
            self._box_head = Head("Box", k * 4, 4)
            self._class_head = Head("Class", k * (num_classes + 1), num_classes + 1)

        def call(self, maps):
            boxes, classes = [], []
            for i, x in enumerate(maps):
                for conv, norm in zip(self._tower, self._norms[i]):
                    x = relu6(norm(conv(x)))
                boxes.append(self._box_head(x))
                classes.append(self._class_head(x))
            return boxes, classes

    class SSDMetaArch(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="ssd_meta_arch")
            self._feature_extractor = FeatureExtractor()
            self._box_predictor = BoxPredictor()

        def call(self, x):
            maps = self._feature_extractor(x)
            boxes, classes = self._box_predictor(maps)
            return tf.concat(boxes, 1), tf.concat(classes, 1), [tuple(int(d) for d in m.shape[1:3]) for m in maps]

    _write_tf2(folder, SSDMetaArch(), generator, input_size, num_classes, rng, per_photo=per_photo)
    (folder / "pipeline.config").write_text(f"""# ssd_mobilenet_v2_fpnlite test model (ssdkit tests/convert/odapi_fixtures.py)
model {{
  ssd {{
    num_classes: {num_classes}
    image_resizer {{ fixed_shape_resizer {{ height: {input_size} width: {input_size} }} }}
    feature_extractor {{
      type: "ssd_mobilenet_v2_fpn_keras"
      depth_multiplier: 1.0
      min_depth: 16
      conv_hyperparams {{
        regularizer {{ l2_regularizer {{ weight: 4e-05 }} }}
        initializer {{ random_normal_initializer {{ mean: 0.0 stddev: 0.01 }} }}
        activation: RELU_6
        batch_norm {{ decay: 0.997 scale: true epsilon: 0.001 }}
      }}
      use_depthwise: true
      override_base_feature_extractor_hyperparams: true
      fpn {{ min_level: 3 max_level: 7 additional_layer_depth: {fpn_depth} }}
    }}
    box_coder {{ faster_rcnn_box_coder {{ y_scale: 10.0 x_scale: 10.0 height_scale: 5.0 width_scale: 5.0 }} }}
    matcher {{ argmax_matcher {{ matched_threshold: 0.5 unmatched_threshold: 0.5 }} }}
    similarity_calculator {{ iou_similarity {{ }} }}
    box_predictor {{
      weight_shared_convolutional_box_predictor {{
        conv_hyperparams {{
          regularizer {{ l2_regularizer {{ weight: 4e-05 }} }}
          initializer {{ random_normal_initializer {{ mean: 0.0 stddev: 0.01 }} }}
          activation: RELU_6
          batch_norm {{ decay: 0.997 scale: true epsilon: 0.001 }}
        }}
        depth: {fpn_depth}
        num_layers_before_predictor: {tower_layers}
        kernel_size: 3
        class_prediction_bias_init: -4.6
        share_prediction_tower: true
        use_depthwise: true
      }}
    }}
    anchor_generator {{
      multiscale_anchor_generator {{
        min_level: 3
        max_level: 7
        anchor_scale: 4.0
        aspect_ratios: 1.0
        aspect_ratios: 2.0
        aspect_ratios: 0.5
        scales_per_octave: 2
      }}
    }}
    post_processing {{
      batch_non_max_suppression {{
        score_threshold: 1e-08
        iou_threshold: 0.6
        max_detections_per_class: 100
        max_total_detections: 100
        use_static_shapes: false
      }}
      score_converter: SIGMOID
    }}
    loss {{ classification_loss {{ weighted_sigmoid_focal {{ gamma: 2.0 alpha: 0.25 }} }} }}
    encode_background_as_zeros: true
  }}
}}
train_input_reader {{
  label_map_path: "PATH_TO_BE_CONFIGURED/label_map.txt"
}}
""")
    labels = tuple(f"thing{i}" for i in range(1, num_classes + 1))
    (folder / "label_map.txt").write_text("".join(
        f'item {{\n  id: {i}\n  name: "{name}"\n}}\n' for i, name in enumerate(labels, 1)))
    return folder
