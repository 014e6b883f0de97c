"""``ssdkit verify MODEL_DIR``: every exported format against its SavedModel.

Exit code 0 when every float format matches the SavedModel, 1 when one
differs by more than the tolerance (or cannot be run), 2 for bad arguments.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

from ssdkit.runtime.limits import arg, span


def register(subparsers) -> None:
    from .evaluate import DEFAULT_THRESHOLD

    from .verify import DEFAULT_IMAGES, DEFAULT_MIN_AGREEMENT, DEFAULT_TOLERANCE

    command = subparsers.add_parser("verify", help="compare every exported format in a folder with its SavedModel",
                                    description=__doc__.splitlines()[0])
    command.add_argument("model_dir", help="an export folder (saved_model/ and .tflite/.onnx files, e.g. build/ssd_mnv2)")
    command.add_argument("--data", help="COCO JSON or Pascal VOC folder (default: the synthetic validation split)")
    command.add_argument("--images", type=arg("images"), default=DEFAULT_IMAGES,
                         help=f"images to compare on, {span('images')} (default {DEFAULT_IMAGES})")
    command.add_argument("--tolerance", type=arg("tolerance"), default=DEFAULT_TOLERANCE,
                         help="largest raw-output difference a float format may have, relative to the SavedModel's "
                              f"largest output value (at least 1), {span('tolerance')} (default {DEFAULT_TOLERANCE})")
    command.add_argument("--min-agreement", type=arg("agreement"), default=DEFAULT_MIN_AGREEMENT,
                         help="share of the SavedModel's detections a float file with embedded NMS and no _nonms "
                              f"twin must find, {span('agreement')} (default {DEFAULT_MIN_AGREEMENT})")
    command.add_argument("--threshold", type=arg("score_threshold"), default=DEFAULT_THRESHOLD,
                         help=f"minimum detection score for mAP, {span('score_threshold')} (default {DEFAULT_THRESHOLD})")
    command.set_defaults(handler=_verify)


def _verify(args) -> int:
    from .evaluate import load_dataset
    from ssdkit.tables import text_table

    from .verify import AGREEMENT_MIN_SCORE, PARITY_HEADER, failed, find_artifacts, parity_cells, verify

    artifacts = find_artifacts(args.model_dir)
    if not any(artifact.kind == "savedmodel" for artifact in artifacts):
        raise FileNotFoundError(f"{args.model_dir}: no saved_model/ to compare the other formats with")
    dataset = load_dataset(args.data)
    rows = verify(artifacts, dataset, args.images, args.threshold, args.tolerance, args.min_agreement)
    print(text_table(("format", "precision", "outputs", *PARITY_HEADER),
                     [(row.file, row.precision, row.outputs, *parity_cells(row)) for row in rows]))
    print(f"({min(args.images, len(dataset.records))} images of {dataset.source}; scores compared after activation; "
          f"agreement: share of the SavedModel's detections scoring >= {AGREEMENT_MIN_SCORE} also found)")
    for row in rows:
        if row.problem:
            log.warning(f"{row.file}: {row.problem}")
    return 1 if failed(rows) else 0
