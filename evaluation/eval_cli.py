"""``ssdkit eval MODEL``: COCO mAP of any artifact on a COCO JSON or VOC dataset."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ssdkit.runtime.limits import arg, span


def register(subparsers) -> None:
    from .evaluate import DEFAULT_THRESHOLD

    command = subparsers.add_parser("eval", help="COCO mAP of a model (.tflite, .onnx, SavedModel) on a dataset",
                                    description=__doc__.splitlines()[0])
    command.add_argument("model", help="a .tflite or .onnx file, or a SavedModel folder (needs TensorFlow)")
    command.add_argument("--data", help="COCO JSON or Pascal VOC folder (default: the synthetic validation split)")
    command.add_argument("--json", dest="json_out", metavar="OUT", help="also write the results, per-class AP included, as JSON")
    command.add_argument("--threshold", type=arg("score_threshold"), default=DEFAULT_THRESHOLD,
                         help=f"minimum detection score, {span('score_threshold')} (default {DEFAULT_THRESHOLD})")
    command.add_argument("--device", help="device profile (see `ssdkit devices`): threads and delegate")
    command.add_argument("--class-map", help="MODEL_LABEL=DATASET_LABEL pairs separated by commas (or a .json file of "
                                             "them) for labels whose names differ; then every dataset category must "
                                             "match a model label (as export's --eval-data)")
    command.add_argument("--max-images", type=arg("images"), help=f"evaluate the first N images only ({span('images')})")
    command.set_defaults(handler=_eval)


def _eval(args) -> int:
    from ssdkit.fileio import check_writable_folder, write_text_atomic
    from ssdkit.tables import text_table

    from ssdkit.runtime.detector import BATCH_SIZE

    from .evaluate import class_mapping, evaluate, load_dataset, open_detector, parse_class_map, predict_dataset, \
        strict_class_mapping

    class_map = parse_class_map(args.class_map)

    if args.json_out:
        check_writable_folder(Path(args.json_out).parent)
    dataset = load_dataset(args.data)
    records = dataset.records[:args.max_images]
    if not records:
        raise ValueError(f"{dataset.source}: no images to evaluate on")
    with open_detector(args.model, args.device, args.threshold) as detector:
        # Before the long run: fails on foreign labels (with --class-map, on any category no model label matches).
        mapping = (strict_class_mapping(detector.spec.labels, dataset.labels, class_map, dataset.source) if class_map
                   else class_mapping(detector.spec.labels, dataset.labels))
        start = time.perf_counter()
        predictions = predict_dataset(detector, dataset, len(records))
        seconds = time.perf_counter() - start
        batched = detector.batches
    results = {"model": str(args.model), "data": str(dataset.source), "images": len(records),
               "threshold": args.threshold, "images_per_second": round(len(records) / seconds, 2),
               **evaluate(records, dataset.labels, predictions, mapping)}
    print(text_table(("metric", "value"), [(name, f"{value:.4f}") for name, value in results["metrics"].items()]))
    print()
    print(text_table(("class", "AP"), [(label, f"{ap:.4f}") for label, ap in results["per_class_AP"].items()]))
    print(f"({len(records)} images of {dataset.source}, detections scoring at least {args.threshold}; "
          f"{results['images_per_second']:.1f} images/s including decoding the files"
          f"{f', batches of {BATCH_SIZE}' if batched else ''})")
    if args.json_out:
        write_text_atomic(args.json_out, json.dumps(results, indent=1) + "\n")
    return 0
