"""Times the shared numpy postprocess against TFLite's TFLite_Detection_PostProcess
kernel (ai-edge-litert, one thread) on the same inputs: 1917 anchors (SSD
MobileNet 300x300), 91 classes + background, score threshold 0.3, IoU 0.6,
100 detections, fast and regular NMS. Checks both agree, prints median times
and the ratio. Needs TensorFlow to build the op model (once, ~2 s).

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/nms_vs_tflite.py [--repeats 200]
"""
from __future__ import annotations

import argparse

import numpy as np

from ssdkit.evaluation.measure import time_calls
from ssdkit.runtime.tflite_postprocess import detection_postprocess

A, C = 1917, 91
OPTIONS = dict(max_detections=100, nms_score_threshold=0.3, nms_iou_threshold=0.6)


def build_op(anchors: np.ndarray, use_regular_nms: bool):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from ssdkit.convert.tflite.postprocess_op import DetectionPostProcessOptions, detection_postprocess as op_node

    options = DetectionPostProcessOptions(num_classes=C, use_regular_nms=use_regular_nms, **OPTIONS)
    module = tf.Module()
    module.fn = tf.function(lambda b, s: op_node(b, s, tf.constant(anchors), options),
                            input_signature=[tf.TensorSpec([1, A, 4], tf.float32), tf.TensorSpec([1, A, C + 1], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.fn.get_concrete_function()], module)
    converter.allow_custom_ops = True
    interpreter = Interpreter(model_content=converter.convert(), num_threads=1)
    interpreter.allocate_tensors()
    inputs = sorted(interpreter.get_input_details(), key=lambda d: d["shape"][-1])
    outputs = sorted(interpreter.get_output_details(), key=lambda d: d["name"])

    def run(boxes, scores):
        interpreter.set_tensor(inputs[0]["index"], boxes[None])
        interpreter.set_tensor(inputs[1]["index"], scores[None])
        interpreter.invoke()
        return [interpreter.get_tensor(d["index"])[0] for d in outputs]

    return run


def median_ms(fn, repeats: int) -> float:
    return 1000 * float(np.median(time_calls(lambda _: fn(), repeats, warmup=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    anchors = np.concatenate([rng.uniform(0.05, 0.95, (A, 2)), rng.uniform(0.05, 0.6, (A, 2))], 1).astype(np.float32)
    boxes = rng.normal(0, 1, (A, 4)).astype(np.float32)
    inputs = {
        # a trained detector: a few dozen (anchor, class) pairs above 0.3
        "sparse": 1 / (1 + np.exp(-rng.normal(-6.0, 1.5, (A, C + 1)))),
        # worst case: uniform scores, ~70% of all pairs above 0.3
        "dense": rng.uniform(0, 1, (A, C + 1)),
    }
    print(f"{A} anchors x {C} classes, {OPTIONS}, median of {args.repeats}")
    for regular in (False, True):
        run = build_op(anchors, regular)
        for name, scores in inputs.items():
            scores = scores.astype(np.float32)
            ours = lambda: detection_postprocess(boxes, scores, anchors, use_regular_nms=regular, **OPTIONS)  # noqa: E731
            result, expected = ours(), run(boxes, scores)
            n = int(expected[3])
            assert result[3] == n and np.array_equal(result[2][:n], expected[2][:n]), "results differ"
            t_ours, t_op = median_ms(ours, args.repeats), median_ms(lambda: run(boxes, scores), args.repeats)
            mode = "regular" if regular else "fast"
            print(f"{mode:8s} {name:6s} detections={n:3d}  numpy {t_ours:7.3f} ms  tflite {t_op:7.3f} ms  "
                  f"numpy/tflite {t_ours / t_op:5.2f}")


if __name__ == "__main__":
    main()
