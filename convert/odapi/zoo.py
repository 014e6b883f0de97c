"""The TF OD API model zoos' SSD-MobileNet archives by name: download, check, cache.

``ssdkit import ssd_mobilenet_v2_coco_2018_03_29`` fetches the archive the
zoo page links (TF1: models/object_detection/NAME.tar.gz; TF2:
models/object_detection/tf2/20200711/NAME.tar.gz on download.tensorflow.org)
into ``$SSDKIT_CACHE/odapi/`` (default ``~/.cache/ssdkit/odapi/``) under a
temporary name, checks that it is a complete gzip tar holding what an import
needs, and only then renames it into place. ``SSDKIT_ODAPI_ZOO_URL`` replaces
the download host (tests serve archives from 127.0.0.1). Without network the
error says where to put the archive by hand.
"""
from __future__ import annotations

import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from ssdkit.fileio import atomic_path
from ssdkit.log import bar as log_bar

_TF1 = "http://download.tensorflow.org/models/object_detection/"
_TF2 = "http://download.tensorflow.org/models/object_detection/tf2/20200711/"

# zoo name -> (base URL, files the archive must hold for an import)
ZOO_ARCHIVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ssd_mobilenet_v1_coco_2018_01_28": (_TF1, ("frozen_inference_graph.pb", "pipeline.config")),
    "ssd_mobilenet_v2_coco_2018_03_29": (_TF1, ("frozen_inference_graph.pb", "pipeline.config")),
    "ssdlite_mobilenet_v2_coco_2018_05_09": (_TF1, ("frozen_inference_graph.pb", "pipeline.config")),
    "ssd_mobilenet_v1_0.75_depth_300x300_coco14_sync_2018_07_03": (_TF1, ("frozen_inference_graph.pb", "pipeline.config")),
    "ssd_mobilenet_v1_quantized_300x300_coco14_sync_2018_07_18": (_TF1, ("frozen_inference_graph.pb", "pipeline.config")),
    "ssd_mobilenet_v2_quantized_300x300_coco_2019_01_03": (_TF1, ("frozen_inference_graph.pb", "pipeline.config")),
    "ssd_mobilenet_v3_small_coco_2020_01_14": (_TF1, ("frozen_inference_graph.pb", "pipeline.config")),
    "ssd_mobilenet_v3_large_coco_2020_01_14": (_TF1, ("frozen_inference_graph.pb", "pipeline.config")),
    "ssd_mobilenet_v1_fpn_shared_box_predictor_640x640_coco14_sync_2018_07_03": (
        _TF1, ("frozen_inference_graph.pb", "pipeline.config")),
    "ssd_mobilenet_v2_320x320_coco17_tpu-8": (_TF2, ("pipeline.config", "saved_model.pb")),
    "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8": (_TF2, ("pipeline.config", "saved_model.pb")),
    "ssd_mobilenet_v2_fpnlite_640x640_coco17_tpu-8": (_TF2, ("pipeline.config", "saved_model.pb")),
    "ssd_mobilenet_v1_fpn_640x640_coco17_tpu-8": (_TF2, ("pipeline.config", "saved_model.pb")),
}


def cache_folder() -> Path:
    return Path(os.environ.get("SSDKIT_CACHE", Path.home() / ".cache" / "ssdkit")) / "odapi"


def archive_url(name: str) -> str:
    base, _ = ZOO_ARCHIVES[name]
    override = os.environ.get("SSDKIT_ODAPI_ZOO_URL")
    if override:
        base = override.rstrip("/") + "/" + ("tf2/" if base == _TF2 else "")
    return f"{base}{name}.tar.gz"


def check_archive(path: Path, name: str) -> None:
    """Raises ValueError unless ``path`` is a complete gzip tar with the files
    an import of ``name`` needs (reading every member detects truncation)."""
    needed = set(ZOO_ARCHIVES[name][1]) if name in ZOO_ARCHIVES else set()
    try:
        with tarfile.open(path, "r:gz") as archive:
            names = set()
            for member in archive:
                names.add(Path(member.name).name)
                if member.isfile():
                    stream = archive.extractfile(member)
                    while stream.read(1 << 20):
                        pass
    except (tarfile.TarError, EOFError, OSError, Exception) as exc:  # zlib.error is not an OSError
        raise ValueError(f"{path}: not a complete .tar.gz archive ({exc})") from None
    missing = sorted(needed - names)
    if missing:
        raise ValueError(f"{path}: the archive lacks {', '.join(missing)}: not the {name} zoo archive")


def fetch_if_zoo_name(spec: str, progress: bool = True) -> str:
    """``spec`` unchanged when it is a path; for a zoo name, the cached archive
    (downloaded first if needed)."""
    if Path(spec).exists() or Path(spec + ".index").exists():
        return spec
    if spec not in ZOO_ARCHIVES:
        if "/" not in spec and "." not in Path(spec).name.replace("0.75", ""):
            raise FileNotFoundError(f"{spec}: no such file or folder, and not a zoo name ssdkit knows: "
                                    f"{', '.join(ZOO_ARCHIVES)}")
        return spec
    target = cache_folder() / f"{spec}.tar.gz"
    if target.is_file():
        check_archive(target, spec)
        return str(target)
    url = archive_url(spec)
    try:
        with atomic_path(target) as tmp:
            _download(url, tmp, progress)
            check_archive(tmp, spec)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OSError(f"cannot download {url} ({reason}); on a machine without network, put the archive at "
                      f"{target} and run the import again") from None
    return str(target)


def _download(url: str, path: Path, progress: bool) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "ssdkit"})
    with urllib.request.urlopen(request, timeout=60) as response, open(path, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        bar = log_bar(url.rsplit("/", 1)[-1], total) if progress else None
        received = 0
        while chunk := response.read(1 << 16):
            out.write(chunk)
            received += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
    if total is not None and received != total:
        raise OSError(f"the download stopped at {received} of {total} bytes")
