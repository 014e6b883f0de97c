"""``ssdkit detect MODEL IMAGE_OR_DIR``: detections as JSON and annotated images.

Exit code: 0 when every image was processed, 1 when some could not be read
(each is reported on stderr and skipped), 2 for a bad model, spec or arguments.
Images are decoded and annotated with OpenCV, or Pillow when OpenCV is not
installed; with neither the command stops with an error saying what to install.

``--out`` never replaces a file it did not write: not the input images (an
``--out`` that is their folder is refused), and not a file of the same name
there unless the ``detections.jsonl`` of an earlier run into that folder
lists it. Subfolders of an image folder are not searched, and said so.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .images import IMAGE_SUFFIXES, image_files
from .limits import arg, span

log = logging.getLogger(__name__)

RECORDS_NAME = "detections.jsonl"


def register(subparsers) -> None:
    detect = subparsers.add_parser("detect", help="run a detector on images (TFLite, Edge TPU, ONNX)",
                                   description=__doc__.splitlines()[0])
    detect.add_argument("model", help="a .tflite or .onnx file exported by ssdkit (or any SSD model with --spec)")
    detect.add_argument("images", help="an image file or a folder of images")
    detect.add_argument("--out", help="folder for annotated images (same names as the inputs) and detections.jsonl; "
                                      "not the folder of the input images")
    detect.add_argument("--json", action="store_true", help="print one JSON record per image on stdout")
    detect.add_argument("--spec", help="spec JSON (or a shipped spec's name) for a model without an embedded one")
    detect.add_argument("--backend", help="tflite, litert, tflite_runtime, tensorflow, edgetpu or onnx "
                                          "(default: from the file name)")
    detect.add_argument("--threads", type=arg("threads"),
                        help=f"interpreter threads, {span('threads')} (default: the device profile's)")
    detect.add_argument("--device", help="device profile (see `ssdkit devices`): threads and delegate")
    detect.add_argument("--threshold", type=arg("score_threshold"), default=0.5,
                        help=f"minimum score, {span('score_threshold')} (default 0.5)")
    detect.set_defaults(handler=_detect)


def _images(path: Path) -> tuple[list[Path], list[Path]]:
    """(the images to run on, the subfolders not searched)."""
    if path.is_dir():
        subfolders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        return image_files(path), subfolders
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image or folder")
    return [path], []


def _check_out(out: Path, images: list[Path]) -> None:
    """Refuses (one line, before the model is loaded) an ``--out`` where an
    output would replace an input image or a file no earlier run wrote."""
    from ssdkit.fileio import check_writable_folder

    check_writable_folder(out)
    if not out.is_dir():
        return
    inputs = {os.path.realpath(p) for p in images}
    if any(os.path.realpath(out / p.name) in inputs for p in images):
        raise FileExistsError(f"--out {out} is the folder of the input images: the annotated copies would replace "
                              "them; choose another folder")
    earlier = _earlier_outputs(out)
    for name in [RECORDS_NAME, *(p.name for p in images)]:
        target = out / name
        if target.exists() and name not in earlier:
            raise FileExistsError(f"--out {out}: {name} is there and was not written by ssdkit detect (it is not in "
                                  f"{out / RECORDS_NAME}); remove it or choose another folder")


def _earlier_outputs(out: Path) -> set[str]:
    """Names an earlier ``ssdkit detect --out`` wrote into ``out``: its
    records file and the images it lists; empty unless that file is ssdkit's."""
    try:
        lines = (out / RECORDS_NAME).read_text().splitlines()
        names = {Path(json.loads(line)["image"]).name for line in lines if line.strip()}
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return names | {RECORDS_NAME}


def _imaging():
    """("cv2", module) or ("pil", module) for whichever is installed, else None."""
    try:
        import cv2

        return "cv2", cv2
    except ImportError:
        pass
    try:
        from PIL import Image

        return "pil", Image
    except ImportError:
        return None


def _read(path: Path, imaging):
    import numpy as np

    kind, module = imaging
    if kind == "cv2":
        image = module.imread(str(path), module.IMREAD_COLOR)
        if image is None:
            raise OSError("not an image OpenCV can decode")
        return module.cvtColor(image, module.COLOR_BGR2RGB)
    try:
        with module.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as exc:  # Pillow raises several types for broken files
        raise OSError(f"not an image Pillow can decode ({exc})") from exc


def _annotated(image, detections, suffix: str, imaging) -> bytes:
    """The image with boxes and labels drawn (``draw.annotate``), encoded in the format ``suffix`` names."""
    from .draw import annotate

    kind, module = imaging
    if kind == "cv2":
        canvas = annotate(image[..., ::-1], detections, channels="bgr", engine="cv2")
        ok, data = module.imencode(suffix, canvas)
        if not ok:
            raise OSError(f"OpenCV cannot encode {suffix} images")
        return data.tobytes()
    import io

    img = module.fromarray(annotate(image, detections, engine="pil"))
    buffer = io.BytesIO()
    img.save(buffer, format=module.registered_extensions().get(suffix, "PNG"))
    return buffer.getvalue()


def _record(path: Path, detections, timings) -> dict:
    return {"image": str(path), "detections": [d.to_dict() for d in detections], "timings_ms": timings.to_ms()}


def _detect(args) -> int:
    from ssdkit.fileio import atomic_path

    from .detector import Detector

    paths, subfolders = _images(Path(args.images))
    if subfolders:
        shown = ", ".join(p.name for p in subfolders[:5]) + (", ..." if len(subfolders) > 5 else "")
        log.warning(f"{args.images}: {len(subfolders)} subfolder{'s' if len(subfolders) > 1 else ''} "
                    f"not searched ({shown}): ssdkit detect reads the images directly in the folder")
    if not paths:
        raise ValueError(f"{args.images}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    imaging = _imaging()
    if imaging is None:
        raise RuntimeError("reading images needs OpenCV or Pillow; install one: "
                           "pip install opencv-python-headless (or pillow)")
    out = Path(args.out) if args.out else None
    if out is not None:
        _check_out(out, paths)
    records, failed = [], 0
    with Detector(args.model, device=args.device, spec=args.spec, threads=args.threads,
                  score_threshold=args.threshold, backend=args.backend) as detector:
        for path in paths:
            try:
                image = _read(path, imaging)
            except OSError as exc:
                log.warning(f"{path}: skipped, cannot read image ({exc})")
                failed += 1
                continue
            detections = detector.detect(image)
            record = _record(path, detections, detector.timings)
            records.append(record)
            if args.json:
                print(json.dumps(record), flush=True)
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                with atomic_path(out / path.name) as tmp:
                    tmp.write_bytes(_annotated(image, detections, path.suffix.lower(), imaging))
    if out is not None:
        with atomic_path(out / RECORDS_NAME) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    if not args.json:
        for record in records:
            found = ", ".join(f"{d['label']} {d['score']:.2f}" for d in record["detections"]) or "nothing"
            print(f"{record['image']}: {found}")
    log.info(f"{len(records)} images, {sum(len(r['detections']) for r in records)} detections"
             + (f", {failed} unreadable" if failed else ""))
    return 1 if failed else 0
