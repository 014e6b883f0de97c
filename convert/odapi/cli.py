"""``ssdkit import SOURCE --out DIR``: a TF OD API model in, an ssdkit checkpoint out."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ssdkit.runtime.limits import arg, span


def register(subparsers) -> None:
    from ..cli import _labels
    from .parity import DEFAULT_TOLERANCE

    command = subparsers.add_parser(
        "import", help="import a TF Object Detection API SSD model (TF1/TF2 folder, .tar.gz, frozen graph, "
                       "checkpoint or zoo name) with a parity check",
        description=__doc__.splitlines()[0])
    command.add_argument("source", help="model folder or .tar.gz, frozen_inference_graph.pb, checkpoint prefix "
                                        "(with pipeline.config beside it), or a zoo name such as "
                                        "ssd_mobilenet_v2_coco_2018_03_29")
    command.add_argument("--out", help="output folder (default build/import/NAME)")
    command.add_argument("--labels", type=_labels, help="labels file, one class per line, used when pipeline.config names no label "
                                          "map (that one wins; then --labels, another label map in the source, COCO's "
                                          "90 for a 90-class model, else class_1..N)")
    command.add_argument("--photos", help="folder of photos for the parity check (default: scikit-image's astronaut, "
                                          "coffee and chelsea)")
    command.add_argument("--tolerance", type=arg("parity_tolerance"), default=DEFAULT_TOLERANCE,
                         help=f"largest raw-output difference, relative to the source's largest value, "
                              f"{span('parity_tolerance')} (default {DEFAULT_TOLERANCE:g})")
    command.add_argument("--force", action="store_true", help="keep the import even when parity fails (the table is "
                                                              "saved beside it)")
    command.add_argument("--no-progress", action="store_true", help="no progress bars (they are drawn on a terminal unless -q)")
    command.set_defaults(handler=_import)


def default_out(source: str) -> Path:
    name = Path(source.rstrip("/")).name
    name = re.sub(r"(\.tar\.gz|\.tgz|\.tar|\.zip|\.pb|\.index)$", "", name) or "model"
    if name in ("frozen_inference_graph", "tflite_graph", "model.ckpt", "saved_model"):
        name = Path(source).resolve().parent.name or name
    return Path("build/import") / name


def _import(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # `import tensorflow` eagerly imports a Keras for its optimizer registry: Keras 3 (and scikit-learn,
    # which Keras 3's wrappers import) unless TF_USE_LEGACY_KERAS names tf_keras, the Keras ssdkit builds
    # with and imports anyway. Nothing in an import uses Keras 3; loading it cost about 1.5 s of CPU time
    # (README, "Importing TF Object Detection API models").
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from ssdkit.fileio import check_writable_folder

    from .importer import ParityFailed, import_model, write_import

    labels = args.labels
    out = Path(args.out) if args.out else default_out(args.source)
    check_writable_folder(out)
    try:
        imported = import_model(args.source, labels, args.photos, args.tolerance,
                                progress=not args.no_progress)
    except ParityFailed as failed:
        print(failed.report.table())
        if not args.force:
            raise
        imported = failed.imported
        logging.getLogger(__name__).warning("parity failed; kept because of --force")
    else:
        print(imported.parity.table())
    for note in imported.notes:
        print(f"  {note}")
    write_import(imported, out, forced=args.force and not imported.parity.passed)
    print(out)
    return 0
