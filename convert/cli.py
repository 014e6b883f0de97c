"""``ssdkit models`` and ``ssdkit export``."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ssdkit.runtime import limits
from ssdkit.runtime.limits import arg, span

from .zoo import DEFAULT_MODEL, labels_arg


from .onnx.options import DEFAULT_OPSET


_labels = labels_arg  # the argparse type of every --labels (convert/odapi/cli.py imports it from here)


def _keep_float(text: str) -> str | tuple[str, ...]:
    """``--keep-float``: "none", "auto", or layer names separated by commas."""
    if text in ("none", "auto"):
        return text
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"--keep-float {text!r}: expected none, auto or layer names "
                                         "separated by commas")
    return names


def register(subparsers) -> None:
    from .zoo import ZOO

    models = subparsers.add_parser("models", help="list the model zoo with input size, anchors, parameters and FLOPs")
    models.set_defaults(handler=_models)

    export = subparsers.add_parser("export", help="export a zoo model or a checkpoint (SavedModel, TFLite, ONNX)")
    export.add_argument("--model", help=f"zoo name: {', '.join(ZOO)} (default: the checkpoint's model, "
                                        f"else {DEFAULT_MODEL})")
    export.add_argument("--format", default="savedmodel", help="savedmodel, tflite or onnx (default savedmodel)")
    export.add_argument("--out", help="output folder (default build/MODEL/)")
    export.add_argument("--force", action="store_true",
                        help="replace files of another model (or not written by ssdkit) in --out; without it "
                             "the export refuses to start and names them")
    export.add_argument("--weights", default="auto",
                        help="ssdkit checkpoint (.npz, or an `ssdkit import` folder) to export (it knows its model: no --model needed), none "
                             "(untrained), or auto (default): the shipped demo weights where the zoo has them "
                             "(ssd_mnv2) and the network is not customised")
    export.add_argument("--backbone-weights", default="auto",
                        help="ImageNet backbone weights for an untrained model: auto (the Keras cache, if present), none, or an .h5 path")
    export.add_argument("--width", type=arg("width"), help=f"width multiplier, {span('width')} (default 1.0)")
    export.add_argument("--input-size", type=limits.InputSizeArg(),
                        help=f"input size N or HxW, each side {span('input_side')} and one the model accepts "
                             "(FPN: a multiple of 32) (default: the model's)")
    export.add_argument("--labels", type=_labels,
                        help=f"labels file, one class per line, at most {limits.MAX_CLASSES} (default: the 90 COCO slots)")
    export.add_argument("--num-classes", type=arg("num_classes"),
                        help=f"number of classes, {span('num_classes')}, named class_1..class_N (instead of --labels)")
    tflite = export.add_argument_group("TFLite")
    tflite.add_argument("--quant", help="fp32, fp16, dynamic or int8 (full-integer, calibrated; the TFLite default); "
                                        "ONNX: fp32 (default) or int8 (static QDQ, calibrated)")
    tflite.add_argument("--io", default="uint8", help="int8 model input/output type: uint8 (default), int8 or float")
    tflite.add_argument("--no-nms", action="store_true", help="leave out the postprocess op: raw box encodings and scores")
    tflite.add_argument("--regular-nms", action="store_true", help="per-class NMS in the op (default: fast NMS)")
    tflite.add_argument("--max-detections", type=arg("max_detections"),
                        help=f"detections per image, {span('max_detections')} (default: the model's, 100)")
    tflite.add_argument("--score-threshold", type=arg("score_threshold"),
                        help=f"NMS score threshold, {span('score_threshold')} (default: the model's)")
    tflite.add_argument("--iou-threshold", type=arg("iou_threshold"),
                        help=f"NMS IoU threshold, {span('iou_threshold')} (default: the model's, 0.6)")
    tflite.add_argument("--detections-per-class", type=arg("detections_per_class"),
                        help=f"regular NMS: detections per class, {span('detections_per_class')} (default 100)")
    tflite.add_argument("--edgetpu", action="store_true",
                        help="int8 for the Edge TPU: compatibility report, and edgetpu_compiler if installed")
    tflite.add_argument("--calib-data", help="calibration images: a folder, a video, a COCO JSON, a VOC folder (default: synthetic)")
    tflite.add_argument("--calib-samples", type=arg("calib_samples"), default=100,
                        help=f"calibration images to use, {span('calib_samples')} (default 100)")
    tflite.add_argument("--eval-data", help="int8: the quantization report's data: a COCO JSON or VOC folder (mAP, the "
                        "model's labels matched to its categories by name), or a folder of images (agreement of int8 "
                        "with fp32 only). Default: the synthetic validation split for models trained on the "
                        "synthetic shapes, else images held out from --calib-data")
    tflite.add_argument("--class-map", help="with --eval-data: MODEL_LABEL=DATASET_LABEL pairs separated by commas "
                                            "(or a .json file of them) for labels whose names differ")
    tflite.add_argument("--no-report", action="store_true", help="int8: skip the fp32 comparison (report.json/.md)")
    tflite.add_argument("--layer-errors", action="store_true",
                        help="int8: also run the quantization debugger (each layer's int8 error against float) and "
                             "write it as MODEL_int8.node_data.json for ssdkit explore (adds about a fifth to the "
                             "export's time)")
    tflite.add_argument("--max-map-drop", type=arg("max_map_drop"), default=1.0,
                        help=f"int8: mAP@0.5 points the report accepts, {span('max_map_drop')} (default 1)")
    tflite.add_argument("--keep-float", type=_keep_float, default="none",
                        help="int8: layers left in float: none (default); auto: when the report's mAP@0.5 drop exceeds "
                             "--max-map-drop, the quantization debugger's worst 3 to 10 layers, until within it; or "
                             "NAME,NAME (output tensor names, as report.md lists them). Not with --edgetpu")
    onnx = export.add_argument_group("ONNX")
    onnx.add_argument("--opset", type=arg("opset"), default=DEFAULT_OPSET,
                      help=f"ONNX opset, {span('opset')} (default {DEFAULT_OPSET})")
    onnx.add_argument("--dynamic-batch", action="store_true", help="any batch size instead of 1")
    onnx.add_argument("--onnx-nms", action="store_true",
                      help="also MODEL_nms.onnx: box decoding and NonMaxSuppression in the graph, the OD API's four outputs")
    export.add_argument("--seed", type=arg("seed"), default=0, help=f"seed for the random initialisation, {span('seed')} (default 0)")
    export.set_defaults(handler=_export)

    from .train.cli import register as register_train

    register_train(subparsers)


def _models(args) -> int:
    """The zoo from its specs and the stored costs (``zoo_costs()``): no network is built."""
    from ssdkit.tables import text_table

    from .zoo import ZOO, ModelConfig, model_spec, zoo_costs

    costs = zoo_costs()
    rows = []
    for name, entry in ZOO.items():
        spec = model_spec(ModelConfig(name))
        height, width = spec.input_size
        params = f"{costs[name]['params'] / 1e6:.2f}M" if name in costs else "-"
        gflops = f"{2 * costs[name]['macs'] / 1e9:.2f}" if name in costs else "-"
        rows.append((name, f"{height}x{width}", str(spec.num_anchors), params, gflops, entry.description))
    print(text_table(("model", "input", "anchors", "params", "GFLOPs", "description"), rows))
    print("(90 COCO classes; GFLOPs = 2 x multiply-adds of one image)")
    return 0


def _check_eval_labels(eval_data: str | None, labels, class_map: dict) -> None:
    """A labelled ``--eval-data`` must match the model's labels: checked
    before the network is built, as the exporter checks it again."""
    from ssdkit.datasets.reader import is_voc, read_dataset
    from ssdkit.evaluation.evaluate import strict_class_mapping

    if eval_data is None:
        return
    path = Path(eval_data)
    if not path.exists():
        raise FileNotFoundError(f"{path}: --eval-data not found")
    if path.is_dir() and not is_voc(path):
        return  # plain images: no labels to match
    strict_class_mapping(labels, read_dataset(path).labels, class_map, path)


def _export(args) -> int:
    """Every option is checked (TensorFlow-free modules only) before the
    converter is imported and the network built."""
    from ssdkit.fileio import check_writable_folder

    from .checkpoint import read_checkpoint, resolve_model, resolve_weights
    from .export import ExportOptions, check_format
    from .export_folder import ExportFolder
    from .tflite.options import TFLiteOptions
    from .zoo import ModelConfig, get_entry, model_spec
    from ssdkit.evaluation.evaluate import parse_class_map

    class_map = parse_class_map(args.class_map)
    quant = args.quant or ("fp32" if args.format == "onnx" else "int8")
    if args.layer_errors and (args.format != "tflite" or quant != "int8" or args.no_report):
        raise ValueError(f"--layer-errors is the TFLite int8 quantization report's per-layer error; this export writes "
                         f"no such report (--format {args.format}"
                         f"{'' if args.format == 'savedmodel' else f' --quant {quant}'}"
                         f"{' --no-report' if args.no_report else ''})")
    if args.eval_data and (args.format == "savedmodel" or quant != "int8" or args.no_report):
        raise ValueError(f"--eval-data is the int8 quantization report's data; this export writes no report "
                         f"(--format {args.format}{'' if args.format == 'savedmodel' else f' --quant {quant}'}"
                         f"{' --no-report' if args.no_report else ''})")
    if args.labels and args.num_classes:
        raise ValueError("give --labels or --num-classes, not both")
    labels = args.labels or (tuple(f"class_{i}" for i in range(1, args.num_classes + 1)) if args.num_classes else None)
    check_format(args.format)
    model_name = resolve_model(args.model, args.weights)
    if model_name is not None:
        get_entry(model_name)
    customised = any(v is not None for v in (args.width, args.input_size, labels))
    weights = resolve_weights(model_name, args.weights, customised=customised)
    spec = None
    if weights is None or customised:  # the options the network is built with, checked against the architecture
        if model_name is not None:
            spec = model_spec(ModelConfig(model_name, width=args.width or 1.0, input_size=args.input_size, labels=labels))
    if weights is not None:  # read before the slow build: a bad file fails now, and the checkpoint names the model
        weights = read_checkpoint(weights)
        if not customised:
            spec = weights.definition.spec
    onnx = args.format == "onnx"
    tflite = TFLiteOptions(
        quant=args.quant or "int8", io=args.io, nms=not args.no_nms,
        regular_nms=args.regular_nms, max_detections=args.max_detections, score_threshold=args.score_threshold,
        iou_threshold=args.iou_threshold, detections_per_class=args.detections_per_class, edgetpu=args.edgetpu,
        keep_float=args.keep_float if isinstance(args.keep_float, tuple) else (),
    )
    options = ExportOptions(tflite=tflite, calib_data=args.calib_data, calib_samples=args.calib_samples,
                            report=not args.no_report, max_map_drop=args.max_map_drop,
                            keep_float_auto=args.keep_float == "auto", opset=args.opset,
                            dynamic_batch=args.dynamic_batch, onnx_nms=args.onnx_nms,
                            onnx_quant=(args.quant or "fp32") if onnx else "fp32",
                            eval_data=args.eval_data, class_map=tuple(class_map.items()),
                            layer_errors=args.layer_errors)
    out = Path(args.out or f"build/{weights.definition.name if weights else model_name}")
    check_writable_folder(out)
    if spec is not None:  # the spec is known without TensorFlow: refuse a folder of another model before building
        ExportFolder(out, spec, args.force).check()
        _check_eval_labels(args.eval_data, spec.labels, class_map)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .checkpoint import prepare_model
    from .export import export

    model = prepare_model(
        model_name, weights, width=args.width, input_size=args.input_size, labels=labels,
        backbone_weights=args.backbone_weights, seed=args.seed,
    )
    for path in export(model, args.format, out, options, force=args.force):
        print(path)
    return 0
