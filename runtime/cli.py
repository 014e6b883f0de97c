"""``ssdkit detect MODEL IMAGE_OR_DIR``: detections as JSON and annotated images.

Exit code: 0 when every image was processed, 1 when some could not be read
(each is reported), 2 for a bad model or arguments.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def register(subparsers) -> None:
    detect = subparsers.add_parser("detect", help="run a detector on images (TFLite, Edge TPU, ONNX)")
    detect.add_argument("model", help="a .tflite or .onnx file exported by ssdkit (or any SSD model with --spec)")
    detect.add_argument("images", help="an image file or a folder of images")
    detect.add_argument("--out", help="folder for annotated images and detections.jsonl")
    detect.add_argument("--json", action="store_true", help="print one JSON record per image on stdout")
    detect.add_argument("--spec", help="spec JSON for a model without an embedded one")
    detect.add_argument("--backend", help="tflite, edgetpu or onnx (default: from the file name)")
    detect.add_argument("--threads", type=int, help="interpreter threads")
    detect.add_argument("--device", help="device profile (see `ssdkit devices`): threads and delegate")
    detect.add_argument("--threshold", type=float, default=0.5, help="minimum score (default 0.5)")
    detect.set_defaults(handler=_detect)


def _images(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image or folder")
    return [path]


def _read(path: Path):
    import numpy as np

    try:
        import cv2
    except ImportError:
        from PIL import Image

        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError("not an image OpenCV can read")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _annotate(image, detections, target: Path) -> None:
    from PIL import Image, ImageDraw

    img = Image.fromarray(image)
    draw = ImageDraw.Draw(img)
    for d in detections:
        ymin, xmin, ymax, xmax = d.box
        draw.rectangle([xmin, ymin, xmax, ymax], outline=(255, 40, 40), width=2)
        draw.text((xmin + 2, ymin + 1), f"{d.label} {d.score:.2f}", fill=(255, 255, 255))
    img.save(target, format="PNG")


def _detect(args) -> int:
    from ssdkit.fileio import atomic_path

    from .detector import Detector

    detector = Detector(args.model, spec=args.spec, threads=args.threads, score_threshold=args.threshold,
                        backend=args.backend, device=args.device)
    paths = _images(Path(args.images))
    out = Path(args.out) if args.out else None
    records, failed = [], 0
    for path in paths:
        try:
            image = _read(path)
        except OSError as exc:
            print(f"ssdkit detect: {path}: skipped, cannot read image ({exc})", file=sys.stderr)
            failed += 1
            continue
        detections = detector.detect(image)
        record = {
            "image": str(path),
            "detections": [{"box": [round(v, 2) for v in d.box], "label": d.label, "class_id": d.class_id,
                            "score": round(d.score, 4)} for d in detections],
            "timings_ms": {k: round(v * 1000, 2) for k, v in vars(detector.timings).items()},
        }
        records.append(record)
        if args.json:
            print(json.dumps(record))
        if out:
            out.mkdir(parents=True, exist_ok=True)
            with atomic_path(out / f"{path.stem}.png") as tmp:
                _annotate(image, detections, tmp)
    if out:
        with atomic_path(out / "detections.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    if not args.json:
        print(f"ssdkit detect: {len(records)} images, {sum(len(r['detections']) for r in records)} detections"
              + (f", {failed} unreadable" if failed else ""), file=sys.stderr)
    if not paths:
        raise ValueError(f"{args.images}: no images found")
    return 1 if failed else 0
